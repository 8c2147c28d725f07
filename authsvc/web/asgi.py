"""authsvc in a plain ASGI app (Starlette, FastAPI, Quart, Django's ASGI, ...), with no extra package.

    # verifier: a started LocalVerifier or an AuthClient, or a function answering one (for one made at start-up)
    app = BearerAuthMiddleware(app, verifier=verifier, exclude={"/healthz", "/auth/token"})
    # a handler finds the VALID Verification in scope["state"]["authsvc"] (Starlette: request.state.authsvc)
    # allow_anonymous=True: no bearer credentials -> role ANONYMOUS when the app admits anonymous users

    provider = TokenProvider(client, identify=session_user)  # POST -> {"token": ..., "expires_at": ...}

The answers (statuses, WWW-Authenticate, JSON bodies) are authsvc.web.contract's; docs/web.md describes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from datetime import timedelta
from http.cookies import CookieError, SimpleCookie
from typing import Any

from authsvc.web import contract
from authsvc.web.contract import Answer, ClaimsHook, Identify, IssuerRef, VerifierRef

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "authsvc"
"""The key of the VALID Verification in scope["state"] (request.state.authsvc in Starlette and FastAPI)."""


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of one request header (name in lower case), decoded as ASGI says: latin-1."""
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of one request header, or None."""
    values = header_values(scope, name)
    return values[0] if values else None


async def send_answer(send: Send, answer: Answer) -> None:
    """Sends one of the contract's answers as an HTTP response."""
    body = answer.json()
    headers = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in answer.all_headers()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse_websocket(scope: Scope, send: Send, answer: Answer) -> None:
    """Refuses a WebSocket handshake: with the contract's HTTP answer when the server can send one (the ASGI
    "websocket.http.response" extension), else by closing before accepting (the server answers 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = answer.json()
        headers = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in answer.all_headers()]
        await send({"type": "websocket.http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})  # policy violation


class BearerAuthMiddleware:
    """ASGI middleware: every HTTP request and WebSocket handshake needs `Authorization: Bearer <token>` with a
    VALID verdict of `verifier` (a LocalVerifier or an AuthClient), except the paths in `exclude` (exact paths,
    e.g. a health check and the token provider). A VALID verdict goes on in scope["state"]["authsvc"]; anything
    else is answered here, as docs/web.md says: 401 (refresh on EXPIRED, log out otherwise), 400, or 503 with
    Retry-After (`retry_after` seconds) when the verifier cannot vouch. The token is never logged nor echoed.

    With `allow_anonymous` (default off), a request without bearer credentials is verified as the empty token: for
    an app with anonymous_access on, it goes on with a VALID Verification of role ANONYMOUS (user_id None) in the
    same place; else it gets the same 401 missing_token as without the option.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: VerifierRef,
        realm: str = contract.DEFAULT_REALM,
        exclude: Collection[str] = (),
        retry_after: int = contract.DEFAULT_RETRY_AFTER,
        allow_anonymous: bool = False,
    ) -> None:
        self.app = app
        self.verifier = contract.check_verifier(verifier)
        self.realm = contract.check_realm(realm)
        self.exclude = frozenset(exclude)
        self.retry_after = retry_after
        self.allow_anonymous = allow_anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exclude:
            await self.app(scope, receive, send)
            return
        verdict = await contract.authenticate(
            self.verifier,
            header_values(scope, b"authorization"),
            realm=self.realm,
            retry_after=self.retry_after,
            allow_anonymous=self.allow_anonymous,
        )
        if isinstance(verdict, Answer):
            if scope["type"] == "websocket":
                await refuse_websocket(scope, send, verdict)
            else:
                await send_answer(send, verdict)
            return
        scope.setdefault("state", {})[STATE_KEY] = verdict
        await self.app(scope, receive, send)


class Request:
    """What `identify` gets from the plain TokenProvider: the request's method, path, headers and cookies."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: Mapping[str, str] = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in reversed(scope.get("headers", ()))
        }
        """Header names in lower case; for a repeated header, its first value."""

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies (empty when the Cookie header does not parse)."""
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


class TokenProvider:
    """ASGI app: the token provider a chat client fetches its token from (and a fresh one on EXPIRED).

    `POST` with `Content-Type: application/json` → `identify(request)` (sync or async; the backend's own "who is
    this session", answering the user id or None) → AuthClient.issue_token with `ttl` (None: the app's default
    lifetime) and the claims of `claims(request, user_id)` → 200 `{"token": ..., "expires_at": ...}`, not cached.
    Refuses other methods (405), other content types (415), browser requests from other origins than this host
    or `allowed_origins` (403: with a session cookie, a page elsewhere must not get a token for its user), no
    session (401), and authsvc failing (503 with Retry-After when unavailable, else 500, no internals).
    """

    def __init__(
        self,
        client: IssuerRef,
        identify: Identify,
        *,
        ttl: timedelta | None = None,
        claims: ClaimsHook | None = None,
        allowed_origins: Collection[str] = (),
        retry_after: int = contract.DEFAULT_RETRY_AFTER,
    ) -> None:
        self.client = contract.check_issuer(client)
        self.identify = identify
        self.ttl = ttl
        self.claims = claims
        self.allowed_origins = frozenset(allowed_origins)
        self.retry_after = retry_after

    def request(self, scope: Scope, receive: Receive) -> Any:
        """The object `identify` and `claims` get: here a small Request (authsvc.web.fastapi gives Starlette's)."""
        return Request(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("TokenProvider serves HTTP only")  # a mounting mistake, as for any ASGI app
        refused = contract.refuse_token_request(
            scope["method"],
            header(scope, b"content-type"),
            header(scope, b"origin"),
            header(scope, b"host"),
            self.allowed_origins,
        )
        if refused is not None:
            await send_answer(send, refused)
            return
        request = self.request(scope, receive)
        user_id = await contract.identify_user(self.identify, request)
        answer = await contract.issue(
            self.client, request, user_id, ttl=self.ttl, claims=self.claims, retry_after=self.retry_after
        )
        await send_answer(send, answer)
