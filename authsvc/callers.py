"""The request edge: who is calling. A call's metadata is read once, then turned into a caller.

- `CallMetadata`: the three headers authsvc reads (`x-api-key`, `authorization`, `x-request-id`), the first of
  each, read by the interceptor (authsvc.interceptors) and handed to the handler through `current_call`.
- `bearer`: the credential of `authorization: Bearer <credential>`, for backends and operators alike.
- `Callers`: a call's app (`x-api-key`), its authenticated backend (app + actor), or its operator (actor), as
  the servicers need them. The credential rules themselves are authsvc.credentials and authsvc.operators.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from authsvc import credentials, operators
from authsvc.audit import Actor
from authsvc.clock import Clock, Micros
from authsvc.errors import NotFound, PermissionDenied, Unauthenticated
from authsvc.state import State
from authsvc.tokens import App

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
REQUEST_ID_HEADER = "x-request-id"

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(slots=True)  # not frozen: that costs on every call (hot path); treat it as read-only
class CallMetadata:
    """The headers of a call that authsvc reads: the first of each, None when absent (or not text)."""

    api_key: str | None = None
    authorization: str | None = None
    request_id: str | None = None


def read_metadata(pairs: Iterable[tuple[str, Any]] | None) -> CallMetadata:
    """The first `x-api-key`, `authorization` and `x-request-id` of a call's metadata."""
    found = CallMetadata()
    for key, value in pairs or ():
        if not isinstance(value, str):
            continue
        if key == API_KEY_HEADER:
            if found.api_key is None:
                found.api_key = value
        elif key == AUTHORIZATION_HEADER:
            if found.authorization is None:
                found.authorization = value
        elif key == REQUEST_ID_HEADER and found.request_id is None:
            found.request_id = value
    return found


current_call: ContextVar[CallMetadata | None] = ContextVar("authsvc_call", default=None)
"""The metadata of the call being handled, as the interceptor read it (context.invocation_metadata() builds the
metadata anew on every read: hot path)."""


def metadata_of(context: Context) -> CallMetadata:
    """The call's metadata: as the interceptor read it, or read from the context outside one."""
    return current_call.get() or read_metadata(context.invocation_metadata())


def bearer(authorization: str | None, wanted: str) -> str:
    """The credential of `authorization: Bearer <credential>`. Unauthenticated MISSING_CREDENTIAL when there is
    none, INVALID_CREDENTIAL for another scheme; `wanted` names the credential in the message."""
    if authorization is None:
        raise Unauthenticated(f"this call needs 'authorization: Bearer <{wanted}>' metadata", "MISSING_CREDENTIAL")
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(f"authorization must be 'Bearer <{wanted}>'", "INVALID_CREDENTIAL")
    if not (credential := credential.strip()):
        raise Unauthenticated(f"authorization carries no credential; send 'Bearer <{wanted}>'", "MISSING_CREDENTIAL")
    return credential


class Callers:
    """Resolves who a call comes from, against the process's state."""

    def __init__(self, state: State, clock: Clock, leeway: Micros, operator_hashes: operators.OperatorHashes) -> None:
        self._state = state
        self._clock = clock
        self._leeway = leeway
        self._operators = operator_hashes

    async def app(self, context: Context) -> App:
        """The app the call's `x-api-key` names: UNAUTHENTICATED MISSING_API_KEY without one, NOT_FOUND
        APP_NOT_FOUND for an unknown one."""
        api_key = metadata_of(context).api_key
        if not api_key:
            raise Unauthenticated(f"send the app's API key as '{API_KEY_HEADER}' metadata", "MISSING_API_KEY")
        app = self._state.app(api_key) or await self._state.find_app(api_key)  # the await only on a miss
        if app is None:
            raise NotFound("no app has this API key", "APP_NOT_FOUND")
        return app

    async def backend(self, context: Context) -> tuple[App, Actor]:
        """The app and the actor of a call from the app's backend (API secret or server token).

        Another app's credential is PERMISSION_DENIED (CREDENTIAL_OF_ANOTHER_APP), a user token
        PERMISSION_DENIED (USER_TOKEN_NOT_ALLOWED), anything else UNAUTHENTICATED.
        """
        app = await self.app(context)
        credential = bearer(metadata_of(context).authorization, "API secret or server token")
        try:
            kind = credentials.authenticate_backend(credential, app, now=self._clock(), leeway=self._leeway)
        except Unauthenticated as exc:
            if exc.reason == "INVALID_CREDENTIAL" and await self._belongs_to_another_app(credential, app):
                raise PermissionDenied(
                    "the credential belongs to another app than x-api-key names", "CREDENTIAL_OF_ANOTHER_APP"
                ) from None
            raise
        return app, Actor(f"{kind.value}:{app.api_key}", context.peer())

    def operator(self, context: Context) -> Actor:
        """The actor of an operator's call (AdminService): PERMISSION_DENIED ADMIN_DISABLED when no operator is
        configured, UNAUTHENTICATED when the call carries no operator token."""
        operators.require_configured(self._operators)
        token = bearer(metadata_of(context).authorization, "operator token")
        operator_id = operators.authenticate(token, self._operators)
        return Actor(f"operator:{operator_id}", context.peer())

    async def _belongs_to_another_app(self, credential: str, app: App) -> bool:
        await self._state.catch_up()  # the owner may be an app made a moment ago elsewhere (failure path only)
        now = self._clock()
        others = (other for other in self._state.apps() if other.id != app.id)
        return any(credentials.belongs_to(credential, other, now=now) for other in others)
