"""The token inspector: the verdict of the one verification pipeline (authsvc.verifier) on a pasted token, and
why, in words. Pure: nothing is stored (a verifier without a cache) and nothing is logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authsvc import tokens
from authsvc.clock import Micros, to_datetime
from authsvc.tokens import App, Outcome
from authsvc.verifier import RevocationLookup, Verifier

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
    Outcome.REVOKED: "The token was issued before a revocation of its user or of the app: the client logs out.",
}
"""What each outcome means, as the inspector says it."""


def _iso(micros: Micros | None) -> str | None:
    return None if micros is None else to_datetime(micros).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Inspection:
    """The inspector's answer: the verdict, why, and what the token says (never the token or its signature)."""

    outcome: str
    why: list[str]
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)


def inspect(token: str, app: App, *, now: Micros, leeway: Micros, revoked_before: RevocationLookup) -> Inspection:
    """The verdict on `token` for `app` at `now`, as VerifyToken would answer it, with the reasons."""
    verdict = Verifier(cache_size=0).verify(token.strip(), app, now=now, leeway=leeway, revoked_before=revoked_before)
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
        user_revoked = (
            revoked_before(app.id, verdict.user_id, verdict.issued_at)
            if verdict.user_id and verdict.issued_at is not None
            else None
        )
        issued = _iso(verdict.issued_at) or "without iat"
        if app.revoked_before is not None and (verdict.issued_at is None or verdict.issued_at < app.revoked_before):
            why.append(f"Issued {issued}; the app's tokens issued before {_iso(app.revoked_before)} are revoked.")
        if user_revoked is not None:
            why.append(f"Issued {issued}; {verdict.user_id}'s tokens issued before {_iso(user_revoked)} are revoked.")
        if app.require_iat and verdict.issued_at is None:
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
