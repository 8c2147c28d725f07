"""WatchState and LocalVerifier: the state stream of a real server on a real port, read through the generated stub
and by authsvc.client.LocalVerifier, against the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from prometheus_client import CollectorRegistry

from authsvc import apps
from authsvc.audit import SYSTEM
from authsvc.client import AuthsvcClientError, LocalVerifier, Revoked, VerifyOutcome
from authsvc.clock import MICROS_PER_SECOND
from authsvc.config import Settings
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App, user_hash
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from authsvc.watch_wire import secret_fingerprint
from tests.conftest import NewApp
from tests.support import FakeClock, api_key_only, backend, expect_failure, failure, newest_kid

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

Stream = grpc.aio.UnaryStreamCall[pb.WatchStateRequest, pb.WatchStateResponse]

WAIT = 30.0
"""Seconds any wait below may take before the test fails (generous: the machine is shared)."""


def watch(stub: AuthServiceAsyncStub, app: App, from_version: int | None = None) -> Stream:
    request = pb.WatchStateRequest() if from_version is None else pb.WatchStateRequest(from_version=from_version)
    return stub.WatchState(request, metadata=backend(app))


async def next_message(call: Stream, *, heartbeats: bool = False) -> pb.WatchStateResponse:
    """The stream's next message (heartbeats skipped unless asked for)."""
    async with asyncio.timeout(WAIT):
        while True:
            message = await call.read()
            assert isinstance(message, pb.WatchStateResponse), "the stream ended"
            if heartbeats or message.WhichOneof("event") != "heartbeat":
                return message


async def snapshot(call: Stream) -> tuple[pb.WatchStateResponse, list[int]]:
    """The snapshot the stream starts with: its first message and every user hash of its chunks."""
    first = await next_message(call)
    assert first.WhichOneof("event") == "snapshot" and first.snapshot.HasField("app")
    hashes = list(first.snapshot.user_hashes)
    message = first
    while not message.snapshot.last:
        message = await next_message(call)
        assert message.version == first.version
        hashes += message.snapshot.user_hashes
    return first, hashes


async def eventually(check: Callable[[], bool]) -> None:
    """Waits until `check()` holds, polling; fails after WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def async_stub(channel: grpc.aio.Channel) -> AuthServiceAsyncStub:
    """The generated stub on an asyncio channel (typed as such)."""
    stub: AuthServiceAsyncStub = pb_grpc.AuthServiceStub(channel)
    return stub


async def verify_on_server(stub: AuthServiceAsyncStub, app: App, token: str) -> VerifyOutcome:
    response = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
    return VerifyOutcome(response.outcome)


async def issue(stub: AuthServiceAsyncStub, app: App, user_id: str, **fields: Any) -> str:
    response = await stub.IssueToken(pb.IssueTokenRequest(user_id=user_id, **fields), metadata=backend(app))
    return response.token


@asynccontextmanager
async def own_server(
    store: Store, state: State, settings: Settings, clock: FakeClock, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A second server over the session's state, with settings of the test's own (a short heartbeat, say)."""
    running = await start_server(store, state, settings.with_overrides(**overrides), clock)
    try:
        yield running
    finally:
        await running.stop(None)


def local(target: str | int, app: App, clock: FakeClock, **options: Any) -> LocalVerifier:
    address = f"127.0.0.1:{target}" if isinstance(target, int) else target
    options.setdefault("hs256_secret", app.api_secret if app.algorithm == "HS256" else None)
    options.setdefault("metrics", False)
    return LocalVerifier(address, app.api_key, app.api_secret, clock=clock, **options)


async def test_a_snapshot_of_the_app_then_each_change_in_version_order(
    stub: AuthServiceAsyncStub, new_app: NewApp, state: State
) -> None:
    app = await new_app()
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
    call = watch(stub, app)
    first, hashes = await snapshot(call)
    assert first.version == state.version
    described = first.snapshot.app
    assert (described.api_key, described.algorithm, described.issuer) == (app.api_key, "HS256", "authsvc-test")
    assert described.clock_leeway.ToSeconds() == 5
    assert [s.fingerprint for s in described.secrets] == [secret_fingerprint(app.api_secret, app.api_key)]
    assert app.api_secret.encode() not in first.SerializeToString()
    assert hashes == [user_hash("alice")]
    assert not first.snapshot.fresh

    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob", "carol"]), metadata=backend(app))
    await stub.ClearRevocation(pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["alice"])), metadata=backend(app))
    await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    revoked, cleared, app_revoked = [await next_message(call) for _ in range(3)]
    assert first.version < revoked.version < cleared.version < app_revoked.version == state.version
    assert sorted(revoked.change.revoked.user_ids) == ["bob", "carol"]
    assert sorted(revoked.change.revoked.user_hashes) == sorted([user_hash("bob"), user_hash("carol")])
    assert len(revoked.change.revoked.revoked_before) == 2
    assert list(cleared.change.cleared.user_hashes) == [user_hash("alice")]
    assert app_revoked.change.app.HasField("revoked_before")
    call.cancel()


async def test_a_watcher_resumes_from_its_version_with_only_the_changes_after_it(
    stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    call = watch(stub, app)
    first, _ = await snapshot(call)
    call.cancel()
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["dave"]), metadata=backend(app))
    resumed = watch(stub, app, from_version=first.version)
    message = await next_message(resumed)
    assert message.WhichOneof("event") == "change", "a version the server can serve gets changes, not a snapshot"
    assert list(message.change.revoked.user_ids) == ["dave"]
    assert message.version > first.version
    resumed.cancel()


async def test_a_version_the_server_cannot_serve_gets_a_fresh_snapshot(
    store: Store, state: State, settings: Settings, clock: FakeClock, new_app: NewApp
) -> None:
    app = await new_app()
    await state.catch_up()  # every earlier test's change applied: none arrives late, moving the versions below
    async with own_server(store, state, settings, clock) as running:
        stub = async_stub(grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"))
        assert running.watch is not None
        started_at = running.watch.floor  # this server keeps the changes after its start, not before
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["erin"]), metadata=backend(app))
        for too_old_or_ahead in (started_at - 1, state.version + 1000):
            call = watch(stub, app, from_version=too_old_or_ahead)
            first, hashes = await snapshot(call)
            assert first.snapshot.fresh
            assert (first.version, hashes) == (state.version, [user_hash("erin")])
            call.cancel()

        # A reload of the state (as after a gap in the change log) loses what came before it: a watcher gets a
        # fresh snapshot at once, and a version from before the reload can no longer be resumed from.
        live = watch(stub, app)
        before, _ = await snapshot(live)
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["frank"]), metadata=backend(app))
        assert list((await next_message(live)).change.revoked.user_ids) == ["frank"]
        await state.load()
        again, _ = await snapshot(live)
        assert again.snapshot.fresh and again.version > before.version
        live.cancel()
        resumed = watch(stub, app, from_version=before.version)
        first, hashes = await snapshot(resumed)
        assert first.snapshot.fresh and sorted(hashes) == sorted([user_hash("erin"), user_hash("frank")])
        resumed.cancel()


async def test_watching_needs_the_apps_credential(stub: AuthServiceAsyncStub, new_app: NewApp, server: Any) -> None:
    app, other = await new_app(), await new_app()
    user_token = await issue(stub, app, "alice")
    cases = [
        (api_key_only(app), grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL"),
        (backend(app, "not-the-secret"), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL"),
        (backend(app, other.api_secret), grpc.StatusCode.PERMISSION_DENIED, "CREDENTIAL_OF_ANOTHER_APP"),
        (backend(app, user_token), grpc.StatusCode.PERMISSION_DENIED, "USER_TOKEN_NOT_ALLOWED"),
        ((("x-api-key", "nosuchapp"), ("authorization", "Bearer x")), grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND"),
    ]
    for metadata, code, reason in cases:
        found = await expect_failure(_drain(stub.WatchState(pb.WatchStateRequest(), metadata=metadata)))
        assert (found.code, found.reason) == (code, reason)
    found = await expect_failure(_drain(watch(stub, app, from_version=-1)))
    assert (found.code, found.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VERSION")

    wrong = LocalVerifier(f"127.0.0.1:{server.port}", app.api_key, "not-the-secret", metrics=False)
    with pytest.raises(AuthsvcClientError) as raised:
        await wrong.start()
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
    without_secret = LocalVerifier(f"127.0.0.1:{server.port}", app.api_key, app.api_secret, metrics=False)
    with pytest.raises(ValueError, match="hs256_secret"):
        await without_secret.start()


async def _drain(call: Stream) -> None:
    async with asyncio.timeout(WAIT):
        async for _ in call:
            pass


async def test_local_verdicts_are_the_servers(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    hs256, other, eddsa, other_eddsa = (
        await new_app(),
        await new_app(),
        await new_app(algorithm="EdDSA"),
        await new_app(algorithm="EdDSA", require_iat=True),
    )
    now = clock.freeze()
    tokens = [
        [
            await issue(stub, hs256, "alice", claims={"room": "lobby", "n": 3}),
            await issue(stub, hs256, "bob", ttl={"seconds": 60}),
            await issue(stub, other, "alice"),  # another app's token
            jwt.encode({"user_id": "carol", "aud": "someone-else"}, hs256.api_secret, algorithm="HS256"),
            jwt.encode({"user_id": "carol", "iat": now // MICROS_PER_SECOND + 3600}, hs256.api_secret),
            jwt.encode({"server": True}, hs256.api_secret, algorithm="HS256"),
            "header.payload.devtoken",
            "not a token",
        ],
        [await issue(stub, eddsa, "dave"), await issue(stub, other_eddsa, "dave")],
    ]
    for app, presented in zip((hs256, eddsa), tokens, strict=True):
        async with local(server.port, app, clock) as verifier:
            clock.advance(120 * MICROS_PER_SECOND)  # bob's token expires
            for token in presented:
                here, there = verifier.verify(token), await verify_on_server(stub, app, token)
                assert here.outcome == there, token
            clock.set(now)
    async with local(server.port, hs256, clock) as verifier:
        result = verifier.verify(tokens[0][0])
        assert (result.outcome, result.valid, result.user_id) == (VerifyOutcome.VALID, True, "alice")
        assert result.claims["room"] == "lobby" and result.issued_at is not None and not result.dev_token
        assert verifier.verify(tokens[0][2]).outcome is VerifyOutcome.UNKNOWN_KEY  # another app's kid
    async with local(server.port, eddsa, clock) as verifier:
        assert verifier.verify(tokens[1][1]).outcome is VerifyOutcome.UNKNOWN_KEY  # another app's kid


async def test_a_callers_changes_to_the_claims_never_reach_another_answer(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    app = await new_app()
    flat = await issue(stub, app, "alice", claims={"room": "lobby"})
    nested = await issue(stub, app, "bob", claims={"rooms": ["lobby"], "profile": {"name": "Bob"}})
    async with local(server.port, app, clock) as verifier:
        # The first check, the second (the token is kept), then answers from what was kept.
        changes: list[Callable[[dict[str, Any]], object]] = [
            lambda claims: claims.__setitem__("room", "admin"),
            lambda claims: claims.update(room="admin"),
            lambda claims: claims.pop("room"),
            lambda claims: claims.clear(),
        ]
        for answer in [verifier.verify(flat) for _ in range(4)]:
            for change in changes:
                with pytest.raises(TypeError, match="read-only"):
                    change(answer.claims)
            assert answer.valid and answer.claims["room"] == "lobby"
            assert dict(answer.claims) | {"room": "admin"} != answer.claims  # a copy is the caller's to change
            assert copy.deepcopy(answer) == answer and pickle.loads(pickle.dumps(answer.claims)) == answer.claims
        for _ in range(4):
            answer = verifier.verify(nested)
            assert answer.valid and answer.claims["rooms"] == ["lobby"] and answer.claims["profile"]["name"] == "Bob"
            answer.claims["rooms"].append("admin")
            answer.claims["profile"]["name"] = "Mallory"


async def test_a_revocation_reaches_the_local_verifier_and_its_callbacks(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    app = await new_app()
    alice, bob = await issue(stub, app, "alice"), await issue(stub, app, "bob")
    heard: list[Revoked] = []
    async with local(server.port, app, clock) as verifier:
        verifier.on_revoked(heard.append)
        assert verifier.verify(alice).outcome is VerifyOutcome.VALID
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
        await eventually(lambda: verifier.verify(alice).outcome is VerifyOutcome.REVOKED)
        assert heard == [Revoked(user_ids=("alice",))]
        assert verifier.verify(bob).outcome is VerifyOutcome.VALID

        await stub.ClearRevocation(
            pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["alice"])), metadata=backend(app)
        )
        await eventually(lambda: verifier.verify(alice).outcome is VerifyOutcome.VALID)
        await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
        await eventually(lambda: verifier.verify(bob).outcome is VerifyOutcome.REVOKED)
        assert heard[-1] == Revoked(app=True)
        await stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=backend(app))
        await eventually(lambda: verifier.verify(bob).outcome is VerifyOutcome.VALID)


async def test_a_rotated_out_secret_verifies_until_its_overlap_ends(
    stub: AuthServiceAsyncStub, store: Store, state: State, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    app = await new_app()
    old_token = await issue(stub, app, "alice")
    both = local(server.port, app, clock)
    only_old = local(server.port, app, clock)
    await only_old.start()
    _, new_secret, version = await apps.rotate_api_secret(store, app, overlap_seconds=3600, actor=SYSTEM)
    await state.catch_up(version)
    rotated = state.app(app.api_key)
    assert rotated is not None
    new_token = await issue(stub, rotated, "bob")
    both = local(server.port, app, clock, hs256_secret=[app.api_secret, new_secret])
    await both.start()
    await eventually(lambda: only_old.version >= version)
    try:
        for verifier in (both, only_old):
            assert verifier.verify(old_token).outcome is VerifyOutcome.VALID  # within the overlap
        assert both.verify(new_token).outcome is VerifyOutcome.VALID
        # The new secret is not in only_old's configuration: it cannot check tokens signed with it.
        assert only_old.verify(new_token).outcome is VerifyOutcome.UNKNOWN_KEY

        clock.advance(3700 * MICROS_PER_SECOND)  # the overlap is over
        assert await verify_on_server(stub, rotated, old_token) is VerifyOutcome.UNKNOWN_KEY
        for verifier in (both, only_old):
            assert verifier.verify(old_token).outcome is VerifyOutcome.UNKNOWN_KEY
        assert both.verify(new_token).outcome is VerifyOutcome.VALID
    finally:
        await both.close()
        await only_old.close()


async def test_a_rotated_key_verifies_at_once_and_a_retired_one_stops(
    stub: AuthServiceAsyncStub, store: Store, state: State, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    app = await new_app(algorithm="ES256")
    old_token = await issue(stub, app, "alice")
    async with local(server.port, app, clock) as verifier:
        assert verifier.verify(old_token).outcome is VerifyOutcome.VALID
        call = watch(stub, app)
        await snapshot(call)
        new_kid, _, version = await apps.rotate_key(store, app, delay_seconds=0, now=clock(), actor=SYSTEM)
        await state.catch_up(version)
        rotated = await next_message(call)
        assert [(k.jwk.kid, k.state) for k in rotated.change.app.public_keys] == [
            (new_kid, pb.KEY_STATE_SIGNING),
            (newest_kid(app), pb.KEY_STATE_SIGNING),
        ]
        current = state.app(app.api_key)
        assert current is not None
        new_token = await issue(stub, current, "bob")
        await eventually(lambda: verifier.version >= version)
        assert verifier.verify(new_token).outcome is VerifyOutcome.VALID

        version = await apps.retire_key(store, current, newest_kid(app), now=clock(), actor=SYSTEM)
        await state.catch_up(version)
        retired = await next_message(call)
        assert (retired.change.app.public_keys[-1].jwk.kid, retired.change.app.public_keys[-1].state) == (
            newest_kid(app),
            pb.KEY_STATE_RETIRED,
        )
        await eventually(lambda: verifier.verify(old_token).outcome is VerifyOutcome.UNKNOWN_KEY)
        assert await verify_on_server(stub, current, old_token) is VerifyOutcome.UNKNOWN_KEY
        assert verifier.verify(new_token).outcome is VerifyOutcome.VALID
        call.cancel()


async def test_heartbeats_keep_an_idle_verifier_current_and_its_gauges_say_so(
    store: Store, state: State, settings: Settings, clock: FakeClock, new_app: NewApp
) -> None:
    app = await new_app()
    async with own_server(store, state, settings, clock, watch_heartbeat=0.05) as running:
        stub = async_stub(grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"))
        token = await issue(stub, app, "alice")
        call = watch(stub, app)
        first, _ = await snapshot(call)
        beat = await next_message(call, heartbeats=True)
        assert beat.WhichOneof("event") == "heartbeat" and beat.version >= first.version
        assert beat.heartbeat.interval.ToMilliseconds() == 50
        call.cancel()

        registry = CollectorRegistry()
        async with local(running.port, app, clock, max_lag=2.0, metrics=True, registry=registry) as verifier:
            # Nothing changes for longer than max_lag: heartbeats alone keep the verifier answering.
            await asyncio.sleep(3)
            assert verifier.verify(token).outcome is VerifyOutcome.VALID
            labels = {"api_key": app.api_key}
            assert registry.get_sample_value("authsvc_local_verifier_version", labels) == verifier.version
            lag = registry.get_sample_value("authsvc_local_verifier_lag_seconds", labels)
            assert lag is not None and 0 <= lag < 2.0


async def test_a_verifier_fails_closed_past_max_lag_and_catches_up_when_the_server_is_back(
    store: Store, state: State, settings: Settings, clock: FakeClock, new_app: NewApp, stub: AuthServiceAsyncStub
) -> None:
    app = await new_app()
    alice, bob = await issue(stub, app, "alice"), await issue(stub, app, "bob")
    heard: list[Revoked] = []
    running = await start_server(store, state, settings.with_overrides(watch_heartbeat=0.1), clock)
    port = running.port
    verifier = local(port, app, clock, max_lag=1.0, reconnect_backoff=0.05, reconnect_max_backoff=0.2)
    verifier.on_revoked(heard.append)
    try:
        await verifier.start()
        assert verifier.verify(alice).outcome is VerifyOutcome.VALID
        await running.stop(None)
        await eventually(lambda: verifier.verify(alice).outcome is VerifyOutcome.UNAVAILABLE)
        assert verifier.lag > 1.0

        # Back on the same port, with nothing missed: it resumes from its version (no resync).
        running = await start_server(store, state, settings.with_overrides(watch_heartbeat=0.1, port=port), clock)
        await eventually(lambda: verifier.verify(alice).outcome is VerifyOutcome.VALID)
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
        await eventually(lambda: verifier.verify(alice).outcome is VerifyOutcome.REVOKED)
        assert heard == [Revoked(user_ids=("alice",))]

        # Away while bob is revoked on another server: never VALID for bob again, and told to resync.
        await running.stop(None)
        await eventually(lambda: verifier.verify(bob).outcome is VerifyOutcome.UNAVAILABLE)
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(app))
        assert verifier.verify(bob).outcome is VerifyOutcome.UNAVAILABLE
        running = await start_server(store, state, settings.with_overrides(watch_heartbeat=0.1, port=port), clock)
        await eventually(lambda: verifier.verify(bob).outcome is not VerifyOutcome.UNAVAILABLE)
        assert verifier.verify(bob).outcome is VerifyOutcome.REVOKED
        assert heard[-1] == Revoked(resync=True)
    finally:
        await verifier.close()
        await running.stop(None)


async def test_a_watcher_too_slow_is_cut_off_and_its_backlog_freed(
    store: Store, state: State, settings: Settings, clock: FakeClock, new_app: NewApp
) -> None:
    app = await new_app()
    async with own_server(store, state, settings, clock, watch_buffer=4, watch_heartbeat=60) as running:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = async_stub(channel)
        # A client that stops reading, with a flow-control window that does not grow meanwhile.
        slow = async_stub(grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.http2.bdp_probe", 0)]))
        call = watch(slow, app)
        await snapshot(call)
        for batch in range(20):  # each change names 1,000 users of 200 characters: ~220 KB a message
            user_ids = [f"{batch:03d}{n:04d}" + "u" * 193 for n in range(1000)]
            await stub.RevokeUser(pb.RevokeUserRequest(user_ids=user_ids), metadata=backend(app))
        await eventually(lambda: running.watch is not None and running.watch.watchers() == 0)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(WAIT):
                while await call.read() is not grpc.aio.EOF:
                    pass
        cut = failure(raised.value)
        assert (cut.code, cut.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW")
