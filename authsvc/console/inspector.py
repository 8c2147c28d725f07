"""The token inspector: the verdict of the one verification pipeline (authsvc.verifier) on a pasted token, and
why, in words. Pure: nothing is stored (a verifier without a cache) and nothing is logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authsvc import tokens
from authsvc.clock import Micros, iso
from authsvc.tokens import App, Outcome, RevocationScope
from authsvc.verifier import RevocationLookup, TokenRevocationLookup, Verifier

WHY = {
    Outcome.VALID: "The signature checks out, the token is within its lifetime and nothing revokes it.",
    Outcome.MALFORMED: "The text is not a well-formed compact JWS (three base64url parts, JSON header and payload),"
    " or a date claim is not a number of seconds.",
    Outcome.INVALID_SIGNATURE: "The signature does not check out with the app's keys, or the header's alg is not"
    " the app's algorithm.",
    Outcome.UNKNOWN_KEY: "The header's kid names no live key of this app (a retired key, or another app's).",
    Outcome.EXPIRED: "The token's exp has passed (beyond the clock leeway): the client fetches a fresh token.",
    Outcome.NOT_YET_VALID: "The token's nbf or iat lies in the future (beyond the clock leeway).",
    Outcome.WRONG_AUDIENCE: "The token is not for this app (its aud names another), or it has no user_id.",
    Outcome.REVOKED: "The token was revoked (by its user's, its own or the app's revocation): the client logs out.",
    Outcome.ANONYMOUS_DISABLED: "No token: an anonymous user, and the app admits none (its anonymous_access is off).",
}
"""What each outcome means, as the inspector says it."""


def _iso(micros: Micros | None) -> str | None:
    return iso(micros, "milliseconds")


@dataclass(frozen=True)
class Inspection:
    """The inspector's answer: the verdict, why, and what the token says (never the token or its signature)."""

    outcome: str
    why: list[str]
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)


def inspect(
    token: str,
    app: App,
    *,
    now: Micros,
    leeway: Micros,
    revoked_before: RevocationLookup,
    token_revoked_at: TokenRevocationLookup | None,
) -> Inspection:
    """The verdict on `token` for `app` at `now`, as VerifyToken would answer it, with the reasons."""
    verdict = Verifier(cache_size=0).verify(
        token.strip(), app, now=now, leeway=leeway, revoked_before=revoked_before, token_revoked_at=token_revoked_at
    )
    why = [WHY[verdict.outcome]]
    parsed = tokens.parse(token.strip())
    header: dict[str, Any] = {}
    claims: dict[str, Any] = {}
    if parsed is not None:
        header = {k: parsed.header[k] for k in ("alg", "kid", "typ") if k in parsed.header}
        claims = dict(parsed.payload)
        if tokens.is_dev_token(parsed):
            why.append(
                "It is a developer token (signature 'devtoken'): accepted only while the app's auth checks are "
                + ("disabled, as they are now." if app.auth_checks_disabled else "disabled, and they are on.")
            )
        elif parsed.header.get("alg") != app.algorithm:
            why.append(f"Its alg is {parsed.header.get('alg')!r}; the app signs with {app.algorithm}.")
    if verdict.outcome is Outcome.REVOKED:
        # What decided it is the verdict's own provenance (tokens.judge), not worked out again here.
        issued, before = _iso(verdict.issued_at) or "without iat", _iso(verdict.revoked_before)
        if verdict.revoked_by is RevocationScope.TOKEN:
            why.append(f"This very token (its jti) was revoked at {before}: one device logged out.")
        elif verdict.revoked_by is RevocationScope.USER:
            why.append(f"Issued {issued}; {verdict.user_id}'s tokens issued before {before} are revoked.")
        elif before is not None:
            why.append(f"Issued {issued}; the app's tokens issued before {before} are revoked.")
        else:
            why.append("The app requires iat, and the token has none.")
    if verdict.outcome is Outcome.EXPIRED:
        why.append(f"It expired at {_iso(verdict.expires_at) or _iso_claim(claims, 'exp')}; now is {_iso(now)}.")
    return Inspection(verdict.outcome.name, why, header, claims)


def _iso_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return _iso(round(value * 1_000_000)) or "?"
        except (OverflowError, ValueError):
            pass
    return "?"
