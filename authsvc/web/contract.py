"""The HTTP contract of authsvc.web (docs/web.md), with no web framework: which status, headers and JSON body
answer which request. authsvc.web.asgi and authsvc.web.fastapi only carry these answers; clients/node/middleware.js
gives the same ones, word for word.

A refused request gets a JSON body with four fields: `error` (an RFC 6750 code where one applies), a readable
`error_description`, `outcome` (the VerifyOutcome name, or null when no token was verified) and `action`, what a
client should do: `refresh` (fetch a fresh token from the token provider, then retry), `logout`, `retry_later`
(the same token, later: it is not valid yet), `authenticate` (sign in to the backend first), `retry` (later, after
Retry-After when given) or `fix_request` (a client bug). A 401's action is the verdict's own `client_action`.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import grpc

from authsvc.client import AuthsvcClientError, ClientAction, IssuedToken, Role, Verification, VerifyOutcome

logger = logging.getLogger("authsvc.web")

DEFAULT_REALM: Final = "api"
DEFAULT_RETRY_AFTER: Final = 2
"""Seconds a client is asked to wait (Retry-After) when authsvc cannot vouch for a token or issue one."""

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BEARER = re.compile(r"bearer(?: +(.*))?", re.IGNORECASE | re.DOTALL)
# The codes under which authsvc could not answer in time: the request may succeed later.
_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

REFRESH: Final = "refresh"
LOGOUT: Final = "logout"
AUTHENTICATE: Final = "authenticate"
RETRY: Final = "retry"
RETRY_LATER: Final = "retry_later"
FIX_REQUEST: Final = "fix_request"

# A 401's action: the verdict's client_action (decided by authsvc.tokens); anything else logs out (fail closed).
_CLIENT_ACTIONS: Final[Mapping[ClientAction, str]] = {
    ClientAction.REFRESH: REFRESH,
    ClientAction.LOGOUT: LOGOUT,
    ClientAction.RETRY_LATER: RETRY_LATER,
}

# What each verdict other than VALID means for a client. Only EXPIRED is worth a refresh (docs/token-model.md).
DESCRIPTIONS: Final[Mapping[VerifyOutcome, str]] = {
    VerifyOutcome.EXPIRED: "the token has expired; fetch a fresh one from the token provider and retry",
    VerifyOutcome.REVOKED: "the token was revoked; log the user out",
    VerifyOutcome.INVALID_SIGNATURE: "the token signature does not verify; log the user out",
    VerifyOutcome.UNKNOWN_KEY: "the token names a key this app does not have; log the user out",
    VerifyOutcome.MALFORMED: "the token is not a well-formed token of this app; log the user out",
    VerifyOutcome.NOT_YET_VALID: "the token is not valid yet; retry later with the same token",
    VerifyOutcome.WRONG_AUDIENCE: "the token is for another app; log the user out",
}
_OTHER_DESCRIPTION: Final = "the token was not accepted; log the user out"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the contract: the status, the headers beyond the JSON ones, and the JSON body."""

    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    def all_headers(self) -> list[tuple[str, str]]:
        """Every header to send, Content-Type and Cache-Control: no-store included (never cache an answer about
        a token, nor a token)."""
        return [("content-type", "application/json"), ("cache-control", "no-store"), *self.headers]

    def json(self) -> bytes:
        """The body, encoded."""
        return json.dumps(self.body, separators=(",", ":")).encode()


def _error(error: str, description: str, action: str, outcome: VerifyOutcome | None = None) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": description,
        "outcome": None if outcome is None else outcome.name,
        "action": action,
    }


def _challenge(realm: str, error: str | None = None, description: str | None = None) -> tuple[str, str]:
    # RFC 6750 §3: realm, then error and error_description as quoted strings (printable ASCII, no " or \).
    parts = [f'realm="{realm}"']
    if error is not None:
        parts.append(f'error="{error}"')
    if description is not None:
        parts.append(f'error_description="{description}"')
    return ("www-authenticate", "Bearer " + ", ".join(parts))


def check_realm(realm: str) -> str:
    """`realm`, when it can go in a quoted string of WWW-Authenticate as it is; else ValueError."""
    if not realm or not all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in realm):
        raise ValueError("realm must be printable ASCII without quotes or backslashes")
    return realm


def missing_token(realm: str) -> Answer:
    """401 without an error code (RFC 6750 §3.1): the request carries no bearer token at all."""
    description = "this request needs an Authorization: Bearer token"
    return Answer(401, _error("missing_token", description, AUTHENTICATE), (_challenge(realm),))


def invalid_request(realm: str, description: str) -> Answer:
    """400 invalid_request: an Authorization header that is not one well-formed bearer token."""
    return Answer(
        400,
        _error("invalid_request", description, FIX_REQUEST),
        (_challenge(realm, "invalid_request", description),),
    )


def rejected(verification: Verification, realm: str) -> Answer:
    """401 invalid_token for a verdict other than VALID (and UNAVAILABLE): the verdict's client action (refresh on
    EXPIRED, retry_later on NOT_YET_VALID, else log out)."""
    outcome = verification.outcome
    description = f"{outcome.name}: {DESCRIPTIONS.get(outcome, _OTHER_DESCRIPTION)}"
    client_action = verification.client_action
    action = LOGOUT if client_action is None else _CLIENT_ACTIONS.get(client_action, LOGOUT)
    return Answer(
        401,
        _error("invalid_token", description, action, outcome),
        (_challenge(realm, "invalid_token", description),),
    )


def unavailable(retry_after: int, outcome: VerifyOutcome | None = None) -> Answer:
    """503 with Retry-After: authsvc cannot vouch for the token (or issue one) right now. Never a pass."""
    description = "authsvc cannot answer right now; retry later"
    return Answer(
        503, _error("temporarily_unavailable", description, RETRY, outcome), (("retry-after", str(retry_after)),)
    )


def server_error(description: str = "the backend could not verify the token") -> Answer:
    """500: something is wrong between this backend and authsvc (its configuration, say). No details leave."""
    return Answer(500, _error("server_error", description, RETRY))


def bearer_token(values: Sequence[str], realm: str) -> str | Answer:
    """The bearer token of a request whose Authorization header(s) are `values`, or the answer that refuses it."""
    token = _bearer_credentials(values, realm)
    return missing_token(realm) if token is None else token


def _bearer_credentials(values: Sequence[str], realm: str) -> str | Answer | None:
    """The bearer token of a request whose Authorization header(s) are `values`; None when the request carries no
    bearer credentials at all (no header, or another scheme); the 400 answer for a malformed header."""
    if not values:
        return None
    if len(values) > 1:
        return invalid_request(realm, "send one Authorization header, not several")
    match = _BEARER.fullmatch(values[0].strip(" \t"))
    if match is None:
        return None  # another scheme (Basic, ...): no bearer credentials at all
    token = match.group(1)
    if not token:
        return invalid_request(realm, "the Authorization header has no token after Bearer")
    if _B64TOKEN.fullmatch(token) is None:
        return invalid_request(realm, "the Authorization header must hold exactly one token after Bearer")
    return token


@runtime_checkable
class LocalTokenVerifier(Protocol):
    """A verifier in this process: LocalVerifier, or anything whose `verify(token)` answers a Verification
    (or an awaitable of one)."""

    def verify(self, token: str) -> Verification | Awaitable[Verification]: ...


@runtime_checkable
class RemoteTokenVerifier(Protocol):
    """A verifier over the network: AuthClient (its `verify_token`, the VerifyToken RPC)."""

    def verify_token(self, token: str) -> Awaitable[Verification]: ...


TokenVerifier = LocalTokenVerifier | RemoteTokenVerifier
"""What checks a token: a LocalVerifier or an AuthClient."""

VerifierRef = TokenVerifier | Callable[[], TokenVerifier]
"""A verifier, or a function answering it on each request (say `lambda: app.state.verifier`): gRPC channels belong
to the event loop they were made in, so a verifier made at start-up, in the server's loop, is handed over so."""


@runtime_checkable
class TokenIssuer(Protocol):
    """What mints a token: AuthClient (made with the app's credential)."""

    def issue_token(
        self, user_id: str, *, ttl: timedelta | None = None, claims: Mapping[str, Any] | None = None
    ) -> Awaitable[IssuedToken]: ...


IssuerRef = TokenIssuer | Callable[[], TokenIssuer]
"""An AuthClient, or a function answering it on each request (as for VerifierRef)."""


def _is_verifier(value: object) -> bool:
    return isinstance(value, LocalTokenVerifier | RemoteTokenVerifier)


def check_verifier(verifier: object) -> VerifierRef:
    """`verifier`, when it is one (or a function that will answer one); else TypeError, at set-up."""
    if _is_verifier(verifier) or callable(verifier):
        return verifier  # type: ignore[return-value]  # checked: a verifier, or a callable answering one
    raise TypeError("verifier must be a LocalVerifier or an AuthClient (an object with verify or verify_token)")


def resolve_verifier(verifier: VerifierRef) -> TokenVerifier:
    """The verifier itself, calling the function that answers it if that is what was given."""
    if isinstance(verifier, LocalTokenVerifier | RemoteTokenVerifier):
        return verifier
    found = verifier()
    if not _is_verifier(found):
        raise TypeError(f"the verifier function answered {type(found).__name__}, not a LocalVerifier or AuthClient")
    return found


def check_issuer(client: object) -> IssuerRef:
    """`client`, when it is an AuthClient (or a function that will answer one); else TypeError, at set-up."""
    if isinstance(client, TokenIssuer) or callable(client):
        return client
    raise TypeError("client must be an AuthClient (made with the app's credential)")


def resolve_issuer(client: IssuerRef) -> TokenIssuer:
    """The AuthClient itself, calling the function that answers it if that is what was given."""
    if isinstance(client, TokenIssuer):
        return client
    found = client()
    if not isinstance(found, TokenIssuer):
        raise TypeError(f"the client function answered {type(found).__name__}, not an AuthClient")
    return found


async def authenticate(
    verifier: VerifierRef,
    authorization: Sequence[str],
    *,
    realm: str,
    retry_after: int,
    allow_anonymous: bool = False,
) -> Verification | Answer:
    """The VALID verdict on the request's bearer token, or the answer that refuses the request. Fails closed: a
    verifier that cannot vouch (UNAVAILABLE, or the RPC failing) never lets the request through.

    A request without bearer credentials (no Authorization header, or another scheme) gets 401 missing_token, with
    no verifier call; with `allow_anonymous`, it is verified as the empty token instead: an app that admits
    anonymous users answers VALID with role ANONYMOUS (no user id), which passes; ANONYMOUS_DISABLED is the same
    401 missing_token. A malformed header (400) or a token that does not verify (401) is never anonymous.
    """
    token = _bearer_credentials(authorization, realm)
    if isinstance(token, Answer):
        return token
    if token is None and not allow_anonymous:
        return missing_token(realm)
    try:
        verification = await _verify(resolve_verifier(verifier), token or "")
    except AuthsvcClientError as error:
        return _failed_call("VerifyToken", error, retry_after, "the backend could not verify the token")
    if verification.outcome is VerifyOutcome.UNAVAILABLE:
        return unavailable(retry_after, VerifyOutcome.UNAVAILABLE)
    valid = verification.valid and verification.outcome is VerifyOutcome.VALID
    if token is None:
        # The empty token: only an anonymous user passes; ANONYMOUS_DISABLED (or anything else) asks to sign in.
        return verification if valid and verification.role is Role.ANONYMOUS else missing_token(realm)
    return verification if valid else rejected(verification, realm)


async def _verify(checker: TokenVerifier, token: str) -> Verification:
    if isinstance(checker, LocalTokenVerifier):
        verdict = checker.verify(token)
        return await verdict if inspect.isawaitable(verdict) else verdict
    return await checker.verify_token(token)


def _failed_call(rpc: str, error: AuthsvcClientError, retry_after: int, description: str) -> Answer:
    # For the backend's operators: the status and reason (authsvc's messages carry no secret, nor any token).
    logger.warning("%s failed: %s %s", rpc, error.code.name, error.reason or "(no reason)")
    if error.code in _UNAVAILABLE:
        return unavailable(retry_after)
    return server_error(description)


# The token provider.

Identify = Callable[[Any], str | None | Awaitable[str | None]]
"""The backend's own "who is this session": the request in, the user id out (None: no session)."""
ClaimsHook = Callable[[Any, str], Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]]
"""Extra claims for the token of a user: (request, user id) in, a JSON object (or None) out."""


def method_not_allowed() -> Answer:
    """405 with Allow: POST: the token provider mints a token, which a GET must not do."""
    description = "the token provider answers POST only"
    return Answer(405, _error("method_not_allowed", description, FIX_REQUEST), (("allow", "POST"),))


def unsupported_media_type() -> Answer:
    """415: the token provider takes `Content-Type: application/json` only, which a plain HTML form cannot send
    cross-site (so a page elsewhere cannot make a browser ask for a token with its cookies)."""
    description = "send the request with Content-Type: application/json"
    return Answer(415, _error("unsupported_media_type", description, FIX_REQUEST))


def forbidden_origin() -> Answer:
    """403: a browser request from a page of another origin than this backend's (or the allowed ones)."""
    description = "requests from this origin may not fetch tokens"
    return Answer(403, _error("forbidden_origin", description, FIX_REQUEST))


def no_session() -> Answer:
    """401: the backend's `identify` did not recognise the session: sign in first."""
    return Answer(401, _error("no_session", "sign in to get a token", AUTHENTICATE))


def issued(token: IssuedToken) -> Answer:
    """200 with `{"token": ..., "expires_at": RFC 3339 in UTC with milliseconds, or null}`; not to be cached."""
    return Answer(200, {"token": token.token, "expires_at": rfc3339(token.expires_at)})


def rfc3339(when: datetime | None) -> str | None:
    """`2026-01-02T03:04:05.678Z` (as JavaScript's Date.toISOString writes it), or None."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def refuse_token_request(
    method: str, content_type: str | None, origin: str | None, host: str | None, allowed_origins: Collection[str]
) -> Answer | None:
    """The answer refusing a request to the token provider before its session is looked at, or None to go on."""
    if method != "POST":
        return method_not_allowed()
    if content_type is None or content_type.split(";", 1)[0].strip().lower() != "application/json":
        return unsupported_media_type()
    if not origin_allowed(origin, host, allowed_origins):
        return forbidden_origin()
    return None


def origin_allowed(origin: str | None, host: str | None, allowed_origins: Collection[str]) -> bool:
    """True for a request without Origin (not from a browser page), from this host, or from an allowed origin."""
    if origin is None:
        return True
    if origin in allowed_origins:
        return True
    if origin == "null" or host is None:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return netloc.lower() == host.strip().lower()


async def issue(
    client: IssuerRef,
    request: Any,
    user_id: str | None,
    *,
    ttl: timedelta | None,
    claims: ClaimsHook | None,
    retry_after: int,
) -> Answer:
    """Issues a token for the user `identify` named (through AuthClient.issue_token), as the contract's answer."""
    if user_id is None:
        return no_session()
    extra: Mapping[str, Any] | None = None
    if claims is not None:
        given = claims(request, user_id)
        extra = await given if inspect.isawaitable(given) else given
    try:
        token = await resolve_issuer(client).issue_token(user_id, ttl=ttl, claims=extra)
    except AuthsvcClientError as error:
        return _failed_call("IssueToken", error, retry_after, "the backend could not issue a token")
    return issued(token)


async def identify_user(identify: Identify, request: Any) -> str | None:
    """Calls the backend's `identify` (sync or async); a user id that is not a string is its bug (TypeError)."""
    found = identify(request)
    user_id = await found if inspect.isawaitable(found) else found
    if user_id is not None and not isinstance(user_id, str):
        raise TypeError("identify must return the user id as a str, or None")
    return user_id or None
