"""Backend credentials: how an app's backend proves it speaks for the app (pure: no I/O, no gRPC).

A backend sends `authorization: Bearer <credential>`, where the credential is one of the app's API secrets
(every one still in its overlap window counts) or a server token: a JWT signed (HS256) with such a secret,
carrying `"server": true` and no user. A user token is never a credential, whoever signed it.
Operator tokens (AdminService) are authsvc.operators.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence

from authsvc import jws
from authsvc.clock import Micros
from authsvc.errors import PermissionDenied, Unauthenticated
from authsvc.tokens import HS256, App, Outcome, Secret, check_signature, is_dev_token, read_times, time_outcome


class CredentialKind(enum.Enum):
    """How a backend proved it speaks for an app."""

    API_SECRET = "api_secret"
    SERVER_TOKEN = "server_token"


def _is_one_of(text: str, secrets: Sequence[Secret]) -> bool:
    # Compared with every secret (no early exit), each in constant time.
    given = text.encode()
    return sum(hmac.compare_digest(given, secret.value.encode()) for secret in secrets) > 0


def _signed_with_one_of(token: jws.CompactJws, secrets: Sequence[Secret]) -> bool:
    return token.header["alg"] == HS256 and any(
        secret.signed(token.signing_input, token.signature) for secret in secrets
    )


def authenticate_backend(credential: str, app: App, *, now: Micros, leeway: Micros) -> CredentialKind:
    """Checks a backend credential (API secret or server token) for `app`.

    Raises Unauthenticated when it is not a credential of this app, and PermissionDenied when it is a genuine
    user token of this app (users may not act as the backend), whatever the app's algorithm.
    """
    if not credential:
        raise Unauthenticated(
            "authorization metadata is empty; send 'Bearer <API secret or server token>'",
            "MISSING_CREDENTIAL",
        )
    secrets = app.active_secrets(now)
    if _is_one_of(credential, secrets):
        return CredentialKind.API_SECRET
    try:
        token = jws.parse_compact(credential)
    except jws.MalformedToken:
        raise Unauthenticated("the credential is not this app's API secret nor a server token") from None
    if not _signed_with_one_of(token, secrets):
        # Server tokens are signed with the API secret, so one signed with the app's key pair is a user token.
        if app.key_pairs and not is_dev_token(token) and check_signature(token, app, now=now)[0] is None:
            raise _user_token_not_allowed()
        raise Unauthenticated("the credential is not signed with this app's API secret")
    try:
        iat, exp, nbf = read_times(token.payload)
    except jws.MalformedToken:
        raise Unauthenticated("the server token has a malformed time claim") from None
    if token.payload.get("server") is not True:
        raise _user_token_not_allowed()
    outcome = time_outcome(iat, exp, nbf, now=now, leeway=leeway)
    if outcome is Outcome.EXPIRED:
        raise Unauthenticated("the server token has expired", "CREDENTIAL_EXPIRED")
    if outcome is Outcome.NOT_YET_VALID:
        raise Unauthenticated("the server token is not valid yet", "CREDENTIAL_NOT_YET_VALID")
    return CredentialKind.SERVER_TOKEN


def _user_token_not_allowed() -> PermissionDenied:
    return PermissionDenied(
        "a user token cannot authorize this call; use the API secret or a server token", "USER_TOKEN_NOT_ALLOWED"
    )


def is_api_secret(text: str, app: App) -> bool:
    """True when `text` is one of `app`'s API secrets, current or rotated out."""
    return _is_one_of(text, app.secrets)


def belongs_to(credential: str, app: App, *, now: Micros) -> bool:
    """True when `credential` is one of `app`'s API secrets or is signed with one: used to tell a caller
    that presented another app's credential (PERMISSION_DENIED) from one presenting garbage (UNAUTHENTICATED)."""
    secrets = app.active_secrets(now)
    if _is_one_of(credential, secrets):
        return True
    try:
        token = jws.parse_compact(credential)
    except jws.MalformedToken:
        return False
    return _signed_with_one_of(token, secrets)
