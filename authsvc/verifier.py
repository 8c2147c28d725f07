"""Verification on the hot path: each token parsed and signature-checked once, then remembered.

A bounded cache keyed by the whole token holds tokens whose signature checked out for an app's current key
at least twice (a token presented once is likely never presented again), with what their claims say for that
App object (tokens.ClaimFacts); a hit skips parsing, the signature and reading the claims, never the time and
revocation checks, which run on every call against the current state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from authsvc import tokens
from authsvc.clock import Micros
from authsvc.tokens import App, ClaimFacts, KeyPair, Outcome, Secret, Verification

RevocationLookup = Callable[[int, str, Micros], Micros | None]
"""(app id, user id, the token's iat) → the user's revocation time, or None: the user is not revoked, or not after
that iat (a look-up may skip the user for a token issued after every revocation it holds, RevocationSet.revoking)."""

TokenRevocationLookup = Callable[[int, str], Micros | None]
"""(app id, jti) → when the token was revoked, or None."""


class Verifier:
    """Verifies tokens for apps, remembering up to `cache_size` tokens whose signature checked out."""

    def __init__(self, cache_size: int = 10_000) -> None:
        self._cache_size = cache_size
        # token → [the app as it was when checked, the API secret that signed it (None: a key pair, or no key
        # for a developer token), the token's claim facts for that app (tokens.claim_facts), the caller's rendering
        # of a VALID verdict (keep_answer)].
        # Any change of an app (a key retired, say) replaces its App object, so an entry for an older one no
        # longer matches; only an API secret rotated out expires by itself (Secret.active, asked on every hit).
        # An OrderedDict: evicting the oldest entry of a plain dict rescans its deleted slots (quadratic).
        self._checked: OrderedDict[str, list[Any]] = OrderedDict()
        # A doorkeeper: the hashes of tokens that checked out once. A token enters the cache on its second good
        # check, so tokens presented once (most of a stream of fresh logins) cost a set entry, not a cache
        # entry that would push out a token in real use. A hash collision only admits a token early: the cache
        # itself is keyed by the whole token.
        self._seen_once: set[int] = set()

    def verify(
        self,
        token: str,
        app: App,
        *,
        now: Micros,
        leeway: Micros,
        revoked_before: RevocationLookup,
        token_revoked_at: TokenRevocationLookup | None = None,
    ) -> Verification:
        """The token model's verdict on `token` for `app` at `now`; `token_revoked_at` is None when no token
        revocation exists (no look-up at all, the usual case)."""
        hit = self._checked.get(token)
        if hit is not None and hit[0] is app and (hit[1] is None or hit[1].active(now)):
            facts: ClaimFacts = hit[2]
        else:
            parsed = tokens.parse(token)
            if parsed is None:
                # An empty token is an anonymous user (looked at only here, off the path of a token seen before).
                return Verification(Outcome.MALFORMED) if token else tokens.anonymous(app)
            failed, key = tokens.check_signature(parsed, app, now=now)
            if failed is not None:
                return Verification(failed)
            facts = tokens.claim_facts(parsed, app)
            self._remember(token, app, key, facts)
        # Only a token that nothing but a user revocation can fail needs the look-up (its user id is valid).
        iat = facts.iat  # set whenever `decided` is None (ClaimFacts); the test is for the type checker
        user_revoked_before = (
            revoked_before(app.id, facts.user_id, iat) if facts.decided is None and iat is not None else None
        )
        jti = facts.jti
        if token_revoked_at is None or jti is None:
            return tokens.judge(facts, now=now, leeway=leeway, user_revoked_before=user_revoked_before)
        return tokens.judge(
            facts,
            now=now,
            leeway=leeway,
            user_revoked_before=user_revoked_before,
            token_revoked_at=token_revoked_at(app.id, jti),
        )

    def _remember(self, token: str, app: App, key: Secret | KeyPair | None, facts: ClaimFacts) -> None:
        if self._cache_size <= 0:
            return
        seen_once, key_hash = self._seen_once, hash(token)
        if key_hash not in seen_once:
            if len(seen_once) >= self._cache_size:
                seen_once.clear()  # bounded; a token marked before this just takes one more check to get in
            seen_once.add(key_hash)
            return
        seen_once.discard(key_hash)
        checked = self._checked
        if len(checked) >= self._cache_size:
            checked.popitem(last=False)  # the oldest entry
        checked[token] = [app, key if isinstance(key, Secret) else None, facts, None]

    def answer(self, token: str) -> Any:
        """What `keep_answer` kept for a token still in the cache, or None."""
        entry = self._checked.get(token)
        return None if entry is None else entry[3]

    def keep_answer(self, token: str, answer: Any) -> None:
        """Keeps the caller's answer for a VALID verdict on a cached token (a token presented again), evicted with
        the token: a VALID answer depends on the token alone, while the verdict is reached again on every call."""
        entry = self._checked.get(token)
        if entry is not None:
            entry[3] = answer

    def __contains__(self, token: object) -> bool:
        return token in self._checked

    def __len__(self) -> int:
        return len(self._checked)
