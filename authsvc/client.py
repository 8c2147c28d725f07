"""A small typed asyncio client for authsvc, over the generated grpc.aio stubs.

    async with AuthClient("localhost:50051", api_key, api_secret) as client:
        issued = await client.issue_token("alice", ttl=timedelta(hours=1))
        result = await client.verify_token(issued.token)   # result.outcome is VerifyOutcome.VALID

Every call sends `x-api-key`; the calls that need the app's credential (issue, revoke, clear) also send
`authorization: Bearer <credential>`, and raise ValueError before any network traffic when the client was made
without one. Every call has a deadline (`timeout`, covering its retries too). Failures raise AuthsvcClientError,
decoded from the google.rpc.ErrorInfo authsvc puts in each error status.

Retries: only calls that are safe to repeat are retried, and only on UNAVAILABLE (the server or the network is
down, or authsvc answered DATABASE_UNAVAILABLE, which changes nothing), with a small bounded exponential backoff.
VerifyToken and VerifyTokens read only; RevokeUser, RevokeApp and ClearRevocation are idempotent (revoking again
never moves a revocation backwards; clearing twice clears nothing more). IssueToken is never retried: a lost
answer may hide a minted token, and a retry would mint a second one.

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
import random
import time
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import grpc
from google.protobuf import duration_pb2, message, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc import tokens, watch_wire, wire
from authsvc.clock import Clock, Micros, system_clock, to_datetime
from authsvc.revocations import RevocationSet
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from authsvc.verifier import Verifier

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

__all__ = [
    "ROUND_ROBIN",
    "AuthClient",
    "AuthsvcClientError",
    "IssuedToken",
    "LocalVerifier",
    "Revoked",
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

    @classmethod
    def from_proto(cls, value: int) -> VerifyOutcome:
        """The outcome for a proto enum number; UNSPECIFIED for a number this client does not know."""
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


@dataclass(frozen=True)
class Verification:
    """authsvc's verdict on one token.

    `user_id`, the times and `claims` are filled in once the signature checked out (so an EXPIRED answer still
    says whose token it was), else they are None / empty. Claim numbers that are whole come back as int.
    """

    outcome: VerifyOutcome
    valid: bool
    user_id: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    claims: dict[str, Any]
    dev_token: bool


class AuthsvcClientError(Exception):
    """A failed call: the gRPC status code, the ErrorInfo reason (e.g. INVALID_USER_ID) and the message.

    `reason` is empty when the status carried no authsvc ErrorInfo, as for a deadline or a connection failure
    that never reached authsvc.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name} {reason or '(no reason)'}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> AuthsvcClientError:
        """Decodes the google.rpc.Status (and its ErrorInfo) from a failed call's trailers."""
        code = error.code()
        message = error.details() or ""
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # the rich status disagrees with the call's code or message: trust the call
            status = None
        if status is None:
            return cls(code, "", message)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return cls(code, info.reason, status.message, domain=info.domain, metadata=dict(info.metadata))
        return cls(code, "", status.message)


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
        options = list(channel_options)
        if credentials is not None or secure:
            self._channel = grpc.aio.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options)
        self._stub: AuthServiceAsyncStub = pb_grpc.AuthServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"AuthClient(target={self.target!r}, credential={'set' if self._credential else 'none'})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

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
    )


@dataclass(frozen=True)
class Revoked:
    """A revocation a LocalVerifier just heard of, for `on_revoked` callbacks: close these users' connections.

    `user_ids` names revoked users (as far as the server could tell); `app` is true when the whole app was revoked;
    `resync` is true when the verifier loaded a fresh snapshot after missing changes, so that any user may have
    been revoked meanwhile (verify the open connections again).
    """

    user_ids: tuple[str, ...] = ()
    app: bool = False
    resync: bool = False


# Codes after which a first connection will not succeed by trying again: start() raises them.
_FATAL_AT_START = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_OUTCOMES = {outcome: VerifyOutcome(outcome.value) for outcome in tokens.Outcome}


def _when(micros: Micros | None) -> datetime | None:
    return None if micros is None else to_datetime(micros)


class LocalVerifier:
    """Verifies the tokens of one app in this process, with authsvc's own token rules, on a copy of the app's state
    that the WatchState stream keeps current (revocations arrive within milliseconds).

    `credential` (the API secret or a server token) opens the stream. For an HS256 app, `hs256_secret` is the
    API secret that signs its tokens (or several, during a rotation): the stream never carries a secret, only a
    fingerprint that says whether the configured one is still accepted, and until when. EdDSA and ES256 apps need
    none: the stream carries their public keys.

    `verify(token)` is synchronous and does no I/O. When the copy is older than `max_lag` seconds (no message,
    not even a heartbeat, since), it fails closed: VerifyOutcome.UNAVAILABLE. The stream reconnects by itself
    with backoff and resumes from `version`. `lag` and `version` tell where it stands; with prometheus-client
    installed they are also the gauges `authsvc_local_verifier_lag_seconds` and `authsvc_local_verifier_version`
    (label `api_key`) of `registry` (default: prometheus_client's), unless `metrics` is false.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        credential: str,
        *,
        hs256_secret: str | Sequence[str] | None = None,
        max_lag: float = 10.0,
        cache_size: int = 10_000,
        start_timeout: float = 30.0,
        reconnect_backoff: float = 0.1,
        reconnect_max_backoff: float = 5.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        clock: Clock = system_clock,
        metrics: bool = True,
        registry: Any = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty; pass the app's API key")
        if not credential:
            raise ValueError("credential is empty; pass the app's API secret or a server token")
        if max_lag <= 0 or start_timeout <= 0 or reconnect_backoff <= 0 or reconnect_max_backoff < reconnect_backoff:
            raise ValueError("max_lag, start_timeout and the backoffs must be positive, the maximum backoff the larger")
        self.target = target
        self.api_key = api_key
        self._metadata = ((API_KEY_HEADER, api_key), (AUTHORIZATION_HEADER, f"Bearer {credential}"))
        self._secrets = (hs256_secret,) if isinstance(hs256_secret, str) else tuple(hs256_secret or ())
        self._max_lag = max_lag
        self._start_timeout = start_timeout
        self._backoff = reconnect_backoff
        self._max_backoff = reconnect_max_backoff
        self._clock = clock
        self._verifier = Verifier(cache_size)
        self._channel_args = (target, list(channel_options), secure, credentials)
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._listeners: list[Callable[[Revoked], Any]] = []
        self._metrics = (registry, metrics)
        # The state: replaced as a whole by a snapshot, changed in place by changes; read by verify().
        self._app: tokens.App | None = None
        self._leeway: Micros = 0
        self._revocations = RevocationSet()
        self._version = 0
        self._confirmed_at = -float("inf")
        self._pending: tuple[pb.AppState, bool, array[int], array[int]] | None = None
        self.last_error: AuthsvcClientError | None = None
        """Why the stream last failed, or None: for logs and health checks of the caller."""

    def __repr__(self) -> str:
        return f"LocalVerifier(target={self.target!r}, api_key={self.api_key!r}, version={self._version})"

    @property
    def version(self) -> int:
        """The state version held: send in no request, only for monitoring (0 before the first snapshot)."""
        return self._version

    @property
    def lag(self) -> float:
        """Seconds since the state held was last known current (infinite before the first snapshot)."""
        return time.monotonic() - self._confirmed_at

    def on_revoked(self, callback: Callable[[Revoked], Any]) -> None:
        """Calls `callback(Revoked)` for each revocation as it arrives (users, the app, or a resync)."""
        self._listeners.append(callback)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Opens the stream and returns once the first snapshot is loaded. Raises AuthsvcClientError when the
        server refuses the credential or the app (no retry would help), or UNAVAILABLE when no snapshot came
        within `start_timeout`; ValueError when the app signs with HS256 and no `hs256_secret` it accepts was
        given (every token would be refused)."""
        if self._task is not None:
            raise RuntimeError("this LocalVerifier was started already")
        target, options, secure, credentials = self._channel_args
        if credentials is not None or secure:
            self._channel = grpc.aio.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options)
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(pb_grpc.AuthServiceStub(self._channel)), name="LocalVerifier")
        try:
            async with asyncio.timeout(self._start_timeout):
                await asyncio.shield(self._started)
        except TimeoutError:
            await self.close()
            cause = f": {self.last_error}" if self.last_error else ""
            raise AuthsvcClientError(
                grpc.StatusCode.UNAVAILABLE, "", f"no state from {target} within {self._start_timeout:g}s{cause}"
            ) from None
        except BaseException:
            await self.close()
            raise
        app = self._app
        if app is not None and app.algorithm == tokens.HS256 and not app.secrets:
            await self.close()
            raise ValueError(
                "this app signs its tokens with HS256: pass its API secret as hs256_secret (none given, or not one "
                "the app accepts)"
            )
        _register(self)

    async def close(self) -> None:
        """Stops following the state (verify answers UNAVAILABLE once max_lag passes) and closes the channel."""
        _unregister(self)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def verify(self, token: str) -> Verification:
        """authsvc's verdict on `token` for this app, reached here, now: the same rules and verdict type as
        AuthClient.verify_token. VerifyOutcome.UNAVAILABLE when the state held is older than max_lag."""
        app = self._app
        if app is None or time.monotonic() - self._confirmed_at > self._max_lag:
            return Verification(VerifyOutcome.UNAVAILABLE, False, None, None, None, {}, False)
        result = self._verifier.verify(
            token, app, now=self._clock(), leeway=self._leeway, revoked_before=self._user_revoked_before
        )
        return Verification(
            outcome=_OUTCOMES[result.outcome],
            valid=result.outcome is tokens.Outcome.VALID,
            user_id=result.user_id or None,
            issued_at=_when(result.issued_at),
            expires_at=_when(result.expires_at),
            claims=dict(result.claims),
            dev_token=result.dev_token,
        )

    def _user_revoked_before(self, app_id: int, user_id: str) -> Micros | None:
        revocations = self._revocations
        return revocations.get_user(user_id) if revocations else None

    async def _follow(self, stub: AuthServiceAsyncStub) -> None:
        backoff = self._backoff
        while True:
            request = pb.WatchStateRequest()
            if self._app is not None:
                request.from_version = self._version
            try:
                async for message in stub.WatchState(request, metadata=self._metadata):
                    self._receive(message)
                    backoff = self._backoff
            except grpc.aio.AioRpcError as error:
                self.last_error = AuthsvcClientError.from_rpc_error(error)
                started = self._started
                if started is not None and not started.done() and error.code() in _FATAL_AT_START:
                    started.set_exception(self.last_error)
                    return
            except ValueError as exc:  # a message that does not decode (a key that does not load): start over
                self.last_error = AuthsvcClientError(grpc.StatusCode.INTERNAL, "", f"undecodable state: {exc}")
                self._pending = None
            # Jittered, so that the watchers of a server that went away do not all come back at once.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    def _receive(self, message: pb.WatchStateResponse) -> None:
        kind = message.WhichOneof("event")
        if kind == "snapshot":
            if not self._snapshot_chunk(message.snapshot):
                return  # more chunks to come: the state held is unchanged, and so is its lag
        elif kind == "change":
            self._change(message.change)
        self._version = message.version
        self._confirmed_at = time.monotonic() - message.staleness.ToTimedelta().total_seconds()

    def _snapshot_chunk(self, chunk: pb.SnapshotChunk) -> bool:
        if chunk.HasField("app"):
            self._pending = (chunk.app, chunk.fresh, array("q"), array("q"))
        if self._pending is None:
            raise ValueError("a snapshot chunk without its first")
        state, fresh, hashes, times = self._pending
        hashes.extend(chunk.user_hashes)
        times.extend(chunk.revoked_before)
        if not chunk.last:
            return False
        self._pending = None
        had_state = self._app is not None
        previous = self._app
        self._set_app(state)
        self._revocations = RevocationSet(hashes, times)
        if fresh and had_state:
            self._tell(Revoked(resync=True))
        elif previous is not None:
            self._tell_app_revoked(previous)
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        return True

    def _change(self, change: pb.StateChange) -> None:
        kind = change.WhichOneof("change")
        if kind == "app":
            previous = self._app
            self._set_app(change.app)
            self._tell_app_revoked(previous)
        elif kind == "revoked":
            revoked = change.revoked
            for user_hash, revoked_before in zip(revoked.user_hashes, revoked.revoked_before, strict=True):
                self._revocations.set(user_hash, revoked_before)
            self._tell(Revoked(user_ids=tuple(revoked.user_ids)))
        elif kind == "cleared":
            for user_hash in change.cleared.user_hashes:
                self._revocations.remove(user_hash)

    def _set_app(self, state: pb.AppState) -> None:
        self._app = watch_wire.app_from_state(state, self._secrets)
        self._leeway = watch_wire.leeway_of(state)

    def _tell_app_revoked(self, previous: tokens.App | None) -> None:
        now = self._app.revoked_before if self._app is not None else None
        before = previous.revoked_before if previous is not None else None
        if now is not None and (before is None or now > before):
            self._tell(Revoked(app=True))

    def _tell(self, event: Revoked) -> None:
        for callback in self._listeners:
            try:
                callback(event)
            except Exception as exc:  # the caller's bug: reported like an unhandled task error, the stream goes on
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "LocalVerifier on_revoked callback failed", "exception": exc}
                )


class _Gauges:
    """The lag and version gauges of every LocalVerifier registered in one Prometheus registry."""

    def __init__(self) -> None:
        self.verifiers: weakref.WeakSet[LocalVerifier] = weakref.WeakSet()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        lag = GaugeMetricFamily(
            "authsvc_local_verifier_lag_seconds",
            "Seconds since a LocalVerifier's state was last known current; past its max_lag it fails closed.",
            labels=["api_key"],
        )
        version = GaugeMetricFamily(
            "authsvc_local_verifier_version", "The state version a LocalVerifier holds.", labels=["api_key"]
        )
        for verifier in list(self.verifiers):
            lag.add_metric([verifier.api_key], verifier.lag)
            version.add_metric([verifier.api_key], verifier.version)
        yield lag
        yield version


_GAUGES: dict[int, tuple[Any, _Gauges]] = {}


def _register(verifier: LocalVerifier) -> None:
    registry, enabled = verifier._metrics
    if not enabled:
        return
    try:
        import prometheus_client
    except ImportError:
        return
    registry = prometheus_client.REGISTRY if registry is None else registry
    if id(registry) not in _GAUGES:
        gauges = _Gauges()
        registry.register(gauges)
        _GAUGES[id(registry)] = (registry, gauges)
    _GAUGES[id(registry)][1].verifiers.add(verifier)


def _unregister(verifier: LocalVerifier) -> None:
    for _, gauges in _GAUGES.values():
        gauges.verifiers.discard(verifier)
