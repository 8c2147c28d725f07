"""authsvc in FastAPI: a dependency for the routes that need a user, and the token provider's route.
Install with `pip install authsvc[fastapi]`.

    app = FastAPI()
    use_authsvc_errors(app)
    user = BearerAuth(verifier)  # a LocalVerifier or an AuthClient

    @app.get("/messages")
    async def messages(auth: Verification = Depends(user)) -> list[str]:
        return inbox(auth.user_id)

    mount_token_provider(app, "/auth/token", client=client, identify=session_user)

The answers are authsvc.web.contract's (docs/web.md). The dependency raises BearerAuthError, an HTTPException:
use_authsvc_errors(app) renders it with the contract's JSON body (without it, FastAPI wraps that body in
`{"detail": ...}`; the status and headers are the same).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from authsvc.client import Verification
from authsvc.web import asgi, contract
from authsvc.web.contract import Answer, ClaimsHook, Identify, IssuerRef, VerifierRef


class BearerAuthError(HTTPException):
    """A request the dependency refused: the contract's answer (`answer`), as an HTTPException."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status, dict(answer.body), dict(answer.all_headers()))
        self.answer = answer


async def _render(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BearerAuthError)
    answer = exc.answer
    return JSONResponse(dict(answer.body), answer.status, dict(answer.all_headers()))


def use_authsvc_errors(app: FastAPI) -> None:
    """Makes `app` answer a BearerAuthError with the contract's JSON body, as the middleware does."""
    app.add_exception_handler(BearerAuthError, _render)


class BearerAuth:
    """A FastAPI dependency: the VALID Verification of the request's bearer token, else BearerAuthError with the
    contract's answer (401, 400, 503 or 500). Behind authsvc.web.asgi.BearerAuthMiddleware it takes the verdict
    the middleware put on the request instead of verifying twice. With `allow_anonymous` (default off), a request
    without bearer credentials is verified as the empty token: VALID with role ANONYMOUS (user_id None) for an app
    that admits anonymous users, else the same 401 missing_token."""

    def __init__(
        self,
        verifier: VerifierRef,
        *,
        realm: str = contract.DEFAULT_REALM,
        retry_after: int = contract.DEFAULT_RETRY_AFTER,
        allow_anonymous: bool = False,
    ) -> None:
        self.verifier = contract.check_verifier(verifier)
        self.realm = contract.check_realm(realm)
        self.retry_after = retry_after
        self.allow_anonymous = allow_anonymous

    async def __call__(self, request: Request) -> Verification:
        verified = request.scope.get("state", {}).get(asgi.STATE_KEY)
        if isinstance(verified, Verification):
            return verified
        verdict = await contract.authenticate(
            self.verifier,
            asgi.header_values(request.scope, b"authorization"),
            realm=self.realm,
            retry_after=self.retry_after,
            allow_anonymous=self.allow_anonymous,
        )
        if isinstance(verdict, Answer):
            raise BearerAuthError(verdict)
        request.state.authsvc = verdict
        return verdict


class TokenProvider(asgi.TokenProvider):
    """authsvc.web.asgi.TokenProvider whose `identify` and `claims` get a Starlette Request (cookies, headers,
    request.session with SessionMiddleware, ...)."""

    def request(self, scope: asgi.Scope, receive: asgi.Receive) -> Any:
        return Request(scope, receive)


def mount_token_provider(
    app: FastAPI,
    path: str,
    *,
    client: IssuerRef,
    identify: Identify,
    ttl: timedelta | None = None,
    claims: ClaimsHook | None = None,
    allowed_origins: Collection[str] = (),
    retry_after: int = contract.DEFAULT_RETRY_AFTER,
) -> TokenProvider:
    """Serves the token provider at `path` of `app` (every method reaches it: others than POST get 405 with
    Allow). `identify(request)` gets the Starlette Request; see authsvc.web.asgi.TokenProvider for the rest."""
    provider = TokenProvider(
        client, identify, ttl=ttl, claims=claims, allowed_origins=allowed_origins, retry_after=retry_after
    )
    app.router.routes.append(Route(path, provider, include_in_schema=False))
    return provider
