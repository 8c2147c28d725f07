"""A small typed asyncio client for authsvc, over the generated grpc.aio stubs.

    async with AuthClient("localhost:50051", api_key, api_secret) as client:
        issued = await client.issue_token("alice", ttl=timedelta(hours=1))
        result = await client.verify_token(issued.token)   # result.outcome is VerifyOutcome.VALID

Every call sends `x-api-key`; the calls that need the app's credential (issue, revoke, clear) also send
`authorization: Bearer <credential>`, and raise ValueError before any network traffic when the client was made
without one. Every call has a deadline (`timeout`, covering its retries too). Failures raise AuthsvcClientError,
decoded from the google.rpc.ErrorInfo authsvc puts in each error status.

Retries: only calls that are safe to repeat are retried, and only on UNAVAILABLE (the server or the network is
down, or authsvc answered DATABASE_UNAVAILABLE: nothing acknowledged), with a small bounded exponential backoff.
VerifyToken and VerifyTokens read only; RevokeUser, RevokeApp, RevokeToken and ClearRevocation are idempotent
(revoking again never moves a revocation backwards; clearing twice clears nothing more). IssueToken is never
retried: a lost answer may hide a minted token, and a retry would mint a second one.

`LocalVerifier` verifies tokens in the caller's own process, with no round trip: it follows the app's state over
the WatchState stream and runs authsvc's own token rules (authsvc.verifier) on it.

    async with LocalVerifier("localhost:50051", api_key, api_secret, hs256_secret=api_secret) as verifier:
        result = verifier.verify(token)   # synchronous, no I/O; VerifyOutcome.UNAVAILABLE past max_lag

Nothing here logs; AuthClient's repr and IssuedToken's repr leave out the credential and the token.
"""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import grpc
from google.protobuf import duration_pb2, message, timestamp_pb2

from authsvc import status_details, wire
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from authsvc.local_verifier import LocalVerifier, Revoked
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub


def __getattr__(name: str) -> Any:
    # LocalVerifier and Revoked live in authsvc.local_verifier, which uses this module's types; imported on first
    # use, so that `from authsvc.client import LocalVerifier` works without an import cycle.
    if name in ("LocalVerifier", "Revoked"):
        from authsvc import local_verifier

        return getattr(local_verifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ROUND_ROBIN",
    "AuthClient",
    "AuthsvcClientError",
    "ClientAction",
    "IssuedToken",
    "GuestToken",
    "LocalVerifier",
    "RevocationScope",
    "Revoked",
    "RevokedToken",
    "Role",
    "SyncAuthClient",
    "Verification",
    "VerifyOutcome",
]

API_KEY_HEADER: Final = "x-api-key"
AUTHORIZATION_HEADER: Final = "authorization"
ERROR_DOMAIN: Final = "authsvc"

ROUND_ROBIN: Final[tuple[tuple[str, str], ...]] = (
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
)
"""Channel options for client-side round robin over every address the target resolves to, e.g. with
`dns:///authsvc-headless.<namespace>.svc.cluster.local:50051` (a headless Kubernetes Service)."""

_Request = TypeVar("_Request", bound=message.Message)
_Response = TypeVar("_Response", bound=message.Message)
_T = TypeVar("_T")


class VerifyOutcome(enum.Enum):
    """The verdict of a verification: authsvc.v1.VerifyOutcome without the `VERIFY_OUTCOME_` prefix.

    An outcome is an answer, not an error. On EXPIRED fetch a fresh token; on REVOKED or INVALID_SIGNATURE log
    the user out. UNSPECIFIED is never sent by authsvc; this client also uses it for an outcome added to the
    proto after it was built. UNAVAILABLE is a LocalVerifier's answer past its max_lag: not verified, retry later.
    """

    UNSPECIFIED = pb.VERIFY_OUTCOME_UNSPECIFIED
    VALID = pb.VERIFY_OUTCOME_VALID
    MALFORMED = pb.VERIFY_OUTCOME_MALFORMED
    INVALID_SIGNATURE = pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    UNKNOWN_KEY = pb.VERIFY_OUTCOME_UNKNOWN_KEY
    EXPIRED = pb.VERIFY_OUTCOME_EXPIRED
    NOT_YET_VALID = pb.VERIFY_OUTCOME_NOT_YET_VALID
    WRONG_AUDIENCE = pb.VERIFY_OUTCOME_WRONG_AUDIENCE
    REVOKED = pb.VERIFY_OUTCOME_REVOKED
    UNAVAILABLE = pb.VERIFY_OUTCOME_UNAVAILABLE
    ANONYMOUS_DISABLED = pb.VERIFY_OUTCOME_ANONYMOUS_DISABLED

    @classmethod
    def from_proto(cls, value: int) -> VerifyOutcome:
        """The outcome for a proto enum number; UNSPECIFIED for a number this client does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


class Role(enum.Enum):
    """Who a verified token speaks for: authsvc.v1.Role without the `ROLE_` prefix. UNSPECIFIED when no user id
    could be read (or for a role added to the proto after this client was built)."""

    UNSPECIFIED = pb.ROLE_UNSPECIFIED
    USER = pb.ROLE_USER
    GUEST = pb.ROLE_GUEST
    ANONYMOUS = pb.ROLE_ANONYMOUS

    @classmethod
    def from_proto(cls, value: int) -> Role:
        """The role for a proto enum number; UNSPECIFIED for a number this client does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class IssuedToken:
    """A minted user token. Its repr leaves the token out, so logging the object does not leak it."""

    token: str = field(repr=False)
    issued_at: datetime
    expires_at: datetime | None
    key_id: str


class RevocationScope(enum.Enum):
    """Which revocation rejected a REVOKED token: authsvc.v1.RevocationScope without its prefix."""

    UNSPECIFIED = pb.REVOCATION_SCOPE_UNSPECIFIED
    APP = pb.REVOCATION_SCOPE_APP
    USER = pb.REVOCATION_SCOPE_USER
    TOKEN = pb.REVOCATION_SCOPE_TOKEN


class ClientAction(enum.Enum):
    """What a chat client should do with a refused token: authsvc.v1.ClientAction without its prefix. REFRESH:
    fetch a new token and retry; LOGOUT: log the user out; RETRY_LATER: try the same token again later."""

    UNSPECIFIED = pb.CLIENT_ACTION_UNSPECIFIED
    REFRESH = pb.CLIENT_ACTION_REFRESH
    LOGOUT = pb.CLIENT_ACTION_LOGOUT
    RETRY_LATER = pb.CLIENT_ACTION_RETRY_LATER


@dataclass(frozen=True)
class GuestToken:
    """A minted guest token and its user id. Its repr leaves the token out."""

    token: str = field(repr=False)
    user_id: str
    issued_at: datetime
    expires_at: datetime | None
    key_id: str


@dataclass(frozen=True)
class Verification:
    """authsvc's verdict on one token.

    `user_id`, the times and `claims` are filled in once the signature checked out (so an EXPIRED answer still
    says whose token it was), else they are None / empty. Claim numbers that are whole come back as int.
    Every outcome but VALID says what decided it: `revoked_by` and `revoked_before` for REVOKED, `expires_at` for
    EXPIRED, `valid_from` for NOT_YET_VALID; and `client_action`, what the chat client should do (None for VALID).
    """

    outcome: VerifyOutcome
    valid: bool
    user_id: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    claims: dict[str, Any]
    dev_token: bool
    revoked_by: RevocationScope | None = None
    revoked_before: datetime | None = None
    valid_from: datetime | None = None
    client_action: ClientAction | None = None
    role: Role = Role.UNSPECIFIED
    """USER, GUEST (a `guest-` user id) or ANONYMOUS (an empty token, for an app that allows anonymous users)."""


@dataclass(frozen=True)
class RevokedToken:
    """A token revocation in force (RevokeToken): its jti, when it was revoked, and until when it is kept (None:
    until cleared)."""

    jti: str
    revoked_before: datetime
    expires_at: datetime | None


class AuthsvcClientError(Exception):
    """A failed call: the gRPC status code, the ErrorInfo reason (e.g. INVALID_USER_ID) and the message.

    `reason` is empty when the status carried no authsvc ErrorInfo, as for a deadline or a connection failure
    that never reached authsvc. `retry_after` is the seconds to wait before trying again when the server said so
    (a google.rpc.RetryInfo: a rate limit, RESOURCE_EXHAUSTED GUEST_RATE_LIMITED), else None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name} {reason or '(no reason)'}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> AuthsvcClientError:
        """Decodes the google.rpc.Status (and its ErrorInfo) from a failed call's trailers."""
        code = error.code()
        message = error.details() or ""
        details = status_details.decode(error.trailing_metadata(), code.value[0], message)
        if details is None:  # no rich status, or one that disagrees with the call's code or message: trust the call
            return cls(code, "", message)
        return cls(
            code,
            details.reason,
            details.message,
            domain=details.domain,
            metadata=details.metadata,
            retry_after=details.retry_after,
        )


class AuthClient:
    """An authsvc client for one app: `api_key` names the app, `credential` (the API secret or a server token)
    authenticates the backend calls. Use it as `async with AuthClient(...) as client:`, or call `close()`.

    `timeout` (seconds) bounds each method call, retries included. `channel_options` go to the gRPC channel
    (for instance ROUND_ROBIN). `secure=True` uses TLS with the system roots, or pass `credentials`.
    Retried calls make up to `retry_attempts` attempts, waiting `retry_backoff`, then twice that, and so on up
    to `retry_max_backoff` between them, while the deadline allows.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        credential: str | None = None,
        *,
        timeout: float = 5.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        retry_attempts: int = 3,
        retry_backoff: float = 0.1,
        retry_max_backoff: float = 1.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty; pass the app's API key")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        if retry_backoff < 0 or retry_max_backoff < 0:
            raise ValueError("retry backoffs must not be negative")
        self.target = target
        self._api_key = api_key
        self._credential = credential or None
        self._timeout = timeout
        self._retry_attempts = retry_attempts
        self._retry_backoff = retry_backoff
        self._retry_max_backoff = retry_max_backoff
        self._channel_args = (target, list(channel_options), secure, credentials)
        self._channel: grpc.aio.Channel | None = None
        self._opened: AuthServiceAsyncStub | None = None

    @property
    def _stub(self) -> AuthServiceAsyncStub:
        """The stub, its channel opened on first use: a grpc.aio channel belongs to the event loop it is made in,
        so a client made at import time, before the web server's loop runs, is used in that loop."""
        if self._opened is None:
            target, options, secure, credentials = self._channel_args
            if credentials is not None or secure:
                self._channel = grpc.aio.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options)
            else:
                self._channel = grpc.aio.insecure_channel(target, options)
            self._opened = pb_grpc.AuthServiceStub(self._channel)
        return self._opened

    def __repr__(self) -> str:
        return f"AuthClient(target={self.target!r}, credential={'set' if self._credential else 'none'})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled. A later call opens a new one."""
        channel, self._channel, self._opened = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def issue_token(
        self,
        user_id: str,
        *,
        ttl: timedelta | None = None,
        expires_at: datetime | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> IssuedToken:
        """Mints a token for `user_id` (IssueToken). Needs the credential.

        `ttl` (counted from the issue time) or `expires_at` (an aware datetime) sets the expiry, else the app's
        default lifetime applies. `claims` are extra JSON claims. Never retried: repeating it could mint twice.
        """
        if ttl is not None and expires_at is not None:
            raise ValueError("pass ttl or expires_at, not both")
        request = pb.IssueTokenRequest(user_id=user_id)
        if ttl is not None:
            duration = duration_pb2.Duration()
            duration.FromTimedelta(ttl)
            request.ttl.CopyFrom(duration)
        if expires_at is not None:
            request.expires_at.CopyFrom(_timestamp(expires_at, "expires_at"))
        if claims is not None:
            request.claims.update(dict(claims))
        response = await self._call(self._stub.IssueToken, request, authorized=True, retry=False)
        issued_at = _datetime(response, "issued_at")
        assert issued_at is not None, "authsvc always sends issued_at"
        return IssuedToken(response.token, issued_at, _datetime(response, "expires_at"), response.key_id)

    async def issue_guest_token(self, user_id: str = "", *, name: str = "") -> GuestToken:
        """Mints a guest token (IssueGuestToken): user id `guest-<user_id>`, or a random one when `user_id` is
        empty; `name` becomes its `name` claim. Needs only the API key, and the app's guest_access on. Never
        retried."""
        request = pb.IssueGuestTokenRequest(user_id=user_id, name=name)
        response = await self._call(self._stub.IssueGuestToken, request, retry=False)
        issued_at = _datetime(response, "issued_at")
        assert issued_at is not None, "authsvc always sends issued_at"
        return GuestToken(
            response.token, response.user_id, issued_at, _datetime(response, "expires_at"), response.key_id
        )

    async def verify_token(self, token: str) -> Verification:
        """Verifies one token (VerifyToken). Needs only the API key. Retried on UNAVAILABLE: it only reads."""
        response = await self._call(self._stub.VerifyToken, pb.VerifyTokenRequest(token=token), retry=True)
        return _verification(response)

    async def verify_tokens(self, tokens: Iterable[str]) -> list[Verification]:
        """Verifies 1 to 1,000 tokens in one call (VerifyTokens), answering in order. Retried on UNAVAILABLE."""
        request = pb.VerifyTokensRequest(tokens=_strings(tokens, "tokens"))
        response = await self._call(self._stub.VerifyTokens, request, retry=True)
        return [_verification(result) for result in response.results]

    async def revoke_users(self, user_ids: Iterable[str], *, before: datetime | None = None) -> dict[str, datetime]:
        """Revokes the tokens of 1 to 1,000 users issued before `before` (default: now, on the server).

        Needs the credential. Answers the revocation in force per user, in request order. Retried on
        UNAVAILABLE: revoking again never moves a revocation backwards (without `before`, a retry revokes up to
        its own "now", a moment later than the first attempt's).
        """
        request = pb.RevokeUserRequest(user_ids=_strings(user_ids, "user_ids"))
        if before is not None:
            request.revoke_before.CopyFrom(_timestamp(before, "before"))
        response = await self._call(self._stub.RevokeUser, request, authorized=True, retry=True)
        return {r.user_id: r.revoked_before.ToDatetime(tzinfo=UTC) for r in response.revocations}

    async def revoke_app(self, *, before: datetime | None = None) -> datetime:
        """Revokes every token of the app issued before `before` (default now), and tokens without `iat`.

        Needs the credential. Answers the app's revocation in force. Retried on UNAVAILABLE, like revoke_users.
        """
        request = pb.RevokeAppRequest()
        if before is not None:
            request.revoke_before.CopyFrom(_timestamp(before, "before"))
        response = await self._call(self._stub.RevokeApp, request, authorized=True, retry=True)
        return response.revoked_before.ToDatetime(tzinfo=UTC)

    async def revoke_token(self, token: str | None = None, *, jti: str | None = None) -> RevokedToken:
        """Revokes one token (one device), given the token itself or its `jti`: every encoding of it is REVOKED
        until it expires. Needs the credential. A token without `jti` is refused (FAILED_PRECONDITION
        TOKEN_WITHOUT_JTI): revoke its user instead. Retried on UNAVAILABLE: revoking again keeps the first time.
        """
        if (token is None) == (jti is None):
            raise ValueError("give the token or its jti, not both")
        request = pb.RevokeTokenRequest(token=token) if token is not None else pb.RevokeTokenRequest(jti=jti)
        response = await self._call(self._stub.RevokeToken, request, authorized=True, retry=True)
        return RevokedToken(
            jti=response.jti,
            revoked_before=response.revoked_before.ToDatetime(tzinfo=UTC),
            expires_at=_datetime(response, "expires_at"),
        )

    async def clear_token_revocations(self, jtis: Iterable[str]) -> list[str]:
        """Removes the revocation of these tokens, by jti (ClearRevocation); answers those that had one. Needs the
        credential. Retried on UNAVAILABLE, like clear_user_revocations."""
        request = pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=_strings(jtis, "jtis")))
        response = await self._call(self._stub.ClearRevocation, request, authorized=True, retry=True)
        return list(response.cleared_jtis)

    async def clear_user_revocations(self, user_ids: Iterable[str]) -> list[str]:
        """Removes the revocation of these users (ClearRevocation); answers those that had one.

        Needs the credential. Retried on UNAVAILABLE: clearing twice is harmless (a retry after a lost answer
        may report fewer users, since the first attempt already cleared them).
        """
        request = pb.ClearRevocationRequest(users=pb.UserIds(user_ids=_strings(user_ids, "user_ids")))
        response = await self._call(self._stub.ClearRevocation, request, authorized=True, retry=True)
        return list(response.cleared_user_ids)

    async def clear_app_revocation(self) -> bool:
        """Removes the app's revocation (ClearRevocation); True when there was one. Needs the credential.
        Retried on UNAVAILABLE, like clear_user_revocations."""
        request = pb.ClearRevocationRequest(app=True)
        response = await self._call(self._stub.ClearRevocation, request, authorized=True, retry=True)
        return response.app_cleared

    def _metadata(self, authorized: bool, method: str) -> tuple[tuple[str, str], ...]:
        if not authorized:
            return ((API_KEY_HEADER, self._api_key),)
        if self._credential is None:
            raise ValueError(
                f"{method} needs the app's credential (its API secret or a server token): "
                "pass credential= to AuthClient"
            )
        return ((API_KEY_HEADER, self._api_key), (AUTHORIZATION_HEADER, f"Bearer {self._credential}"))

    async def _call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        retry: bool,
        authorized: bool = False,
    ) -> _Response:
        metadata = self._metadata(authorized, type(request).__name__.removesuffix("Request"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempts = self._retry_attempts if retry else 1
        backoff = self._retry_backoff
        for attempt in range(1, attempts + 1):
            try:
                return await rpc(request, metadata=metadata, timeout=max(deadline - loop.time(), 0.0))
            except grpc.aio.AioRpcError as error:
                retryable = error.code() == grpc.StatusCode.UNAVAILABLE and attempt < attempts
                if not retryable or loop.time() + backoff >= deadline:
                    raise AuthsvcClientError.from_rpc_error(error) from error
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._retry_max_backoff)
        raise AssertionError("unreachable: the last attempt returns or raises")


class SyncAuthClient:
    """AuthClient's blocking twin, for code without an event loop (Django, Flask, scripts, a thread pool): the
    same arguments, methods, deadlines, retries and AuthsvcClientError, each call returning its answer.

        with SyncAuthClient("localhost:50051", api_key, api_secret) as client:
            issued = client.issue_token("alice", ttl=timedelta(hours=1))
            result = client.verify_token(issued.token)   # result.outcome is VerifyOutcome.VALID

    It runs an AuthClient (so every rule lives in one place) on an event loop in a daemon thread of its own,
    started by the first call; threads may share one client. `close()`, or leaving the `with` block, closes the
    channel and ends the thread; a later call starts them again. Do not call it from a coroutine: there, use
    AuthClient and `await`.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        credential: str | None = None,
        *,
        timeout: float = 5.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        retry_attempts: int = 3,
        retry_backoff: float = 0.1,
        retry_max_backoff: float = 1.0,
    ) -> None:
        self._client = AuthClient(
            target,
            api_key,
            credential,
            timeout=timeout,
            channel_options=channel_options,
            secure=secure,
            credentials=credentials,
            retry_attempts=retry_attempts,
            retry_backoff=retry_backoff,
            retry_max_backoff=retry_max_backoff,
        )
        self.target = target
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return repr(self._client).replace("AuthClient(", "SyncAuthClient(", 1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel (calls in flight are cancelled) and ends the client's thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def issue_token(
        self,
        user_id: str,
        *,
        ttl: timedelta | None = None,
        expires_at: datetime | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> IssuedToken:
        """AuthClient.issue_token: mints a token (IssueToken). Needs the credential; never retried."""
        return self._run(self._client.issue_token(user_id, ttl=ttl, expires_at=expires_at, claims=claims))

    def issue_guest_token(self, user_id: str = "", *, name: str = "") -> GuestToken:
        """AuthClient.issue_guest_token: mints a guest token (IssueGuestToken). Needs only the API key; never
        retried."""
        return self._run(self._client.issue_guest_token(user_id, name=name))

    def verify_token(self, token: str) -> Verification:
        """AuthClient.verify_token: verifies one token (VerifyToken). Retried on UNAVAILABLE."""
        return self._run(self._client.verify_token(token))

    def verify_tokens(self, tokens: Iterable[str]) -> list[Verification]:
        """AuthClient.verify_tokens: verifies 1 to 1,000 tokens in one call (VerifyTokens), in order."""
        return self._run(self._client.verify_tokens(list(tokens)))

    def revoke_users(self, user_ids: Iterable[str], *, before: datetime | None = None) -> dict[str, datetime]:
        """AuthClient.revoke_users: revokes the users' tokens issued before `before` (default now)."""
        return self._run(self._client.revoke_users(list(user_ids), before=before))

    def revoke_app(self, *, before: datetime | None = None) -> datetime:
        """AuthClient.revoke_app: revokes every token of the app issued before `before` (default now)."""
        return self._run(self._client.revoke_app(before=before))

    def revoke_token(self, token: str | None = None, *, jti: str | None = None) -> RevokedToken:
        """AuthClient.revoke_token: revokes one token (one device), by the token or by its `jti`."""
        return self._run(self._client.revoke_token(token, jti=jti))

    def clear_token_revocations(self, jtis: Iterable[str]) -> list[str]:
        """AuthClient.clear_token_revocations: removes these tokens' revocations; answers those that had one."""
        return self._run(self._client.clear_token_revocations(list(jtis)))

    def clear_user_revocations(self, user_ids: Iterable[str]) -> list[str]:
        """AuthClient.clear_user_revocations: removes these users' revocations; answers those that had one."""
        return self._run(self._client.clear_user_revocations(list(user_ids)))

    def clear_app_revocation(self) -> bool:
        """AuthClient.clear_app_revocation: removes the app's revocation; True when there was one."""
        return self._run(self._client.clear_app_revocation())

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="authsvc-client", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, call: Coroutine[Any, Any, _T]) -> _T:
        try:
            loop = self._started()
        except BaseException:
            call.close()
            raise
        future = asyncio.run_coroutine_threadsafe(call, loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt while waiting, for one: the call stops too
            future.cancel()
            raise


def _strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    return list(values)


def _timestamp(value: datetime, name: str) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (e.g. datetime.now(UTC)), not a naive one")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _datetime(response: message.Message, name: str) -> datetime | None:
    if not response.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(response, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _verification(response: pb.VerifyTokenResponse) -> Verification:
    return Verification(
        outcome=VerifyOutcome.from_proto(response.outcome),
        valid=response.valid,
        user_id=response.user_id or None,
        issued_at=_datetime(response, "issued_at"),
        expires_at=_datetime(response, "expires_at"),
        claims=wire.plain_claims(response.claims) if response.HasField("claims") else {},
        dev_token=response.dev_token,
        revoked_by=_enum(RevocationScope, response.revoked_by),
        revoked_before=_datetime(response, "revoked_before"),
        valid_from=_datetime(response, "valid_from"),
        client_action=_enum(ClientAction, response.client_action),
        role=Role.from_proto(response.role),
    )


_Enum = TypeVar("_Enum", RevocationScope, ClientAction)


def _enum(kind: type[_Enum], value: int) -> _Enum | None:
    """None for an unset field; UNSPECIFIED for a number this client does not know (added to the proto later)."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        return kind.UNSPECIFIED
