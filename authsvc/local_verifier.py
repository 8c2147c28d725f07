"""LocalVerifier: an app's tokens verified in the caller's own process, with no round trip.

It follows the app's state over AuthService.WatchState (a snapshot, then each change, then heartbeats) and runs
authsvc's own token rules on it: authsvc.verifier and authsvc.tokens, the very code the server runs, and the
server's compact revocation set (authsvc.revocations). Imported as `authsvc.client.LocalVerifier`.

    async with LocalVerifier("localhost:50051", api_key, api_secret, hs256_secret=api_secret) as verifier:
        result = verifier.verify(token)   # synchronous, no I/O; VerifyOutcome.UNAVAILABLE past max_lag
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self

import grpc

from authsvc import tokens, watch_wire
from authsvc.client import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    AuthsvcClientError,
    ClientAction,
    RevocationScope,
    Role,
    Verification,
    VerifyOutcome,
)
from authsvc.clock import Clock, Micros, system_clock, to_datetime
from authsvc.revocations import RevocationSet
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from authsvc.verifier import Verifier

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub


@dataclass(frozen=True)
class Revoked:
    """A revocation a LocalVerifier just heard of, for `on_revoked` callbacks: close these users' connections.

    `user_ids` names revoked users (as far as the server could tell); `jtis` names revoked tokens (RevokeToken: one
    device each); `app` is true when the whole app was revoked; `resync` is true when the verifier loaded a fresh
    snapshot after missing changes, so that any user may have been revoked meanwhile (verify the open connections
    again).
    """

    user_ids: tuple[str, ...] = ()
    app: bool = False
    resync: bool = False
    jtis: tuple[str, ...] = ()


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
_ACTIONS = {outcome: ClientAction(action.value) for outcome, action in tokens.CLIENT_ACTIONS.items()}
_SCOPES = {scope: RevocationScope(scope.value) for scope in tokens.RevocationScope}
_ROLES = {role: Role(role.value) for role in tokens.Role}
_VALID = tokens.Outcome.VALID
# JSON values that a caller cannot change in place: an answer whose claims hold only these may be shared.
_SCALARS = frozenset((str, int, float, bool, type(None)))


class _Claims(dict[str, Any]):
    """The claims of a LocalVerifier's answer: a dict that refuses changes, since the answer may be shared."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the claims of a verification are read-only; copy them to change them: dict(result.claims)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[_Claims], tuple[dict[str, Any]]]:
        # copy, deepcopy and pickle rebuild it from a plain dict, never through the refused __setitem__.
        return _Claims, (dict(self),)


def _copy(value: Any) -> Any:
    """A JSON value with its own lists and dicts, so that a caller's changes never reach the verifier's cache."""
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    return value


_EPOCH = to_datetime(0)
# A frozen dataclass's __init__ sets each field through object.__setattr__ (1.6 µs for Verification's seven);
# filling the instance's __dict__ makes the same object, equal and alike in repr, for a third of that. Its fields
# are checked here, so that a field added to Verification cannot be left out silently.
_new = object.__new__
_FIELDS = (
    "outcome",
    "valid",
    "user_id",
    "issued_at",
    "expires_at",
    "claims",
    "dev_token",
    "revoked_by",
    "revoked_before",
    "valid_from",
    "client_action",
    "role",
)
if tuple(field.name for field in fields(Verification)) != _FIELDS:
    raise ImportError("authsvc.local_verifier._answer fills the fields of client.Verification by name: update it")


def _answer(result: tokens.Verification) -> Verification:
    """The client's rendering of a verdict."""
    claims = result.claims
    outcome = result.outcome
    if not claims and not result.dev_token and outcome in _BARE:
        return _BARE[outcome]  # no signature checked out: the verdict alone, the same every time
    if not _SCALARS.issuperset(map(type, claims.values())):
        claims = _copy(claims)
    issued_at, expires_at = result.issued_at, result.expires_at
    answer: Verification = _new(Verification)
    fill = answer.__dict__
    fill["outcome"] = _OUTCOMES[outcome]
    fill["valid"] = outcome is _VALID
    fill["user_id"] = result.user_id or None
    # clock.to_datetime's arithmetic, with timedelta's positional microseconds (keyword parsing costs 0.3 µs).
    fill["issued_at"] = None if issued_at is None else _EPOCH + timedelta(0, 0, issued_at)
    fill["expires_at"] = None if expires_at is None else _EPOCH + timedelta(0, 0, expires_at)
    fill["claims"] = _Claims(claims)
    fill["dev_token"] = result.dev_token
    revoked_by, revoked_before, valid_from = result.revoked_by, result.revoked_before, result.valid_from
    fill["revoked_by"] = None if revoked_by is None else _SCOPES[revoked_by]
    fill["revoked_before"] = None if revoked_before is None else _EPOCH + timedelta(0, 0, revoked_before)
    fill["valid_from"] = None if valid_from is None else _EPOCH + timedelta(0, 0, valid_from)
    fill["client_action"] = _ACTIONS.get(outcome)
    fill["role"] = _ROLES[result.role]
    return answer


_BARE = {
    outcome: Verification(
        _OUTCOMES[outcome], False, None, None, None, _Claims(), False, client_action=_ACTIONS[outcome]
    )
    for outcome in (
        tokens.Outcome.MALFORMED,
        tokens.Outcome.INVALID_SIGNATURE,
        tokens.Outcome.UNKNOWN_KEY,
        tokens.Outcome.ANONYMOUS_DISABLED,
    )
}
# Not verified for now: the same token may pass once the stream is current again.
_UNAVAILABLE = Verification(
    VerifyOutcome.UNAVAILABLE, False, None, None, None, _Claims(), False, client_action=ClientAction.RETRY_LATER
)


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
        self._token_revocations: dict[str, Micros] = {}
        self._version = 0
        self._confirmed_at = -float("inf")
        self._pending: tuple[pb.AppState, bool, array[int], array[int], dict[str, Micros]] | None = None
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
        AuthClient.verify_token. VerifyOutcome.UNAVAILABLE when the state held is older than max_lag. Its
        `claims` are read-only (a token's VALID answer is shared by the calls that present it again)."""
        app = self._app
        if app is None or time.monotonic() - self._confirmed_at > self._max_lag:
            return _UNAVAILABLE
        verifier = self._verifier
        result = verifier.verify(
            token,
            app,
            now=self._clock(),
            leeway=self._leeway,
            revoked_before=self._user_revoked_before,
            token_revoked_at=self._token_revoked_at if self._token_revocations else None,
        )
        if result.outcome is not _VALID:
            return _answer(result)
        # A VALID answer depends on the token alone: the verifier keeps one beside a token it keeps.
        answer: Verification | None = verifier.answer(token)
        if answer is None:
            answer = _answer(result)
            if token in verifier and _SCALARS.issuperset(map(type, result.claims.values())):
                verifier.keep_answer(token, answer)
        return answer

    def _user_revoked_before(self, app_id: int, user_id: str, issued_at: Micros) -> Micros | None:
        return self._revocations.revoking(user_id, issued_at)

    def _token_revoked_at(self, app_id: int, jti: str) -> Micros | None:
        return self._token_revocations.get(jti)

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
            self._pending = (chunk.app, chunk.fresh, array("q"), array("q"), {})
        if self._pending is None:
            raise ValueError("a snapshot chunk without its first")
        state, fresh, hashes, times, revoked_tokens = self._pending
        hashes.extend(chunk.user_hashes)
        times.extend(chunk.revoked_before)
        revoked_tokens.update(zip(chunk.token_revocations.jtis, chunk.token_revocations.revoked_before, strict=True))
        if not chunk.last:
            return False
        self._pending = None
        had_state = self._app is not None
        previous = self._app
        self._set_app(state)
        self._revocations = RevocationSet(hashes, times)
        self._token_revocations = revoked_tokens
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
        elif kind == "tokens_revoked":
            revoked_tokens = change.tokens_revoked
            self._token_revocations.update(zip(revoked_tokens.jtis, revoked_tokens.revoked_before, strict=True))
            self._tell(Revoked(jtis=tuple(revoked_tokens.jtis)))
        elif kind == "tokens_cleared":
            for jti in change.tokens_cleared.jtis:
                self._token_revocations.pop(jti, None)

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
