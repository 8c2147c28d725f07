"""The serving lifecycle: health NOT_SERVING until ready and from SIGTERM on, a drain that loses no call, exit 0."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.config import Settings
from authsvc.server import LIVENESS, READINESS, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp
from tests.processes import Served, clean_env, serve
from tests.support import FakeClock, api_key_only, backend

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OK = grpc.StatusCode.OK

CONNECTIONS = 4
CALLERS = 32
MAX_CALLS_PER_CALLER = 50_000  # a bound; the test ends the load a few calls after the server exits
WARM_UP_CALLS = 200
HELD = 4


async def test_health_is_not_serving_until_marked_ready_and_again_from_stop_on(
    store: Store, state: State, settings: Settings, session_clock: FakeClock
) -> None:
    running = await start_server(store, state, settings, session_clock, serving=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in (*READINESS, LIVENESS):
                assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == NOT_SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == NOT_SERVING
            await running.mark_serving()
            assert (await watch.read()).status == SERVING
            for name in (*READINESS, LIVENESS):
                assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == SERVING
            # A drain: no caller, so it ends once the callers count as quiet, not at the timeout.
            stopping = asyncio.create_task(running.stop(60, drain_timeout=60))
            assert (await watch.read()).status == NOT_SERVING
            # A stream is not waited for: the drain closes its connection, and its client sees UNAVAILABLE.
            with pytest.raises(grpc.aio.AioRpcError) as closed:
                await watch.read()
            assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.wait_for(stopping, 30)
        with pytest.raises(OSError):  # the HTTP port closes with the server
            await asyncio.open_connection("127.0.0.1", running.http_port)
    finally:
        await running.stop(None)


@dataclass(frozen=True)
class Call:
    """What a client saw of one call of the load."""

    request_id: str
    after_signal: bool
    code: grpc.StatusCode


def _channel(target: str) -> grpc.aio.Channel:
    # A connection of its own, so that with several workers the calls spread over them.
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def _caller(
    stub: AuthServiceAsyncStub,
    name: str,
    app: App,
    token: str,
    signalled: asyncio.Event,
    done: asyncio.Event,
    calls: list[Call],
) -> None:
    """Calls without pause (IssueToken and VerifyToken in turn) until `done`, whatever each call answers."""
    for i in range(MAX_CALLS_PER_CALLER):
        if done.is_set():
            return
        request_id = f"{name}-{i}"
        after_signal = signalled.is_set()
        try:
            if i % 2:
                await stub.VerifyToken(
                    pb.VerifyTokenRequest(token=token), metadata=(*api_key_only(app), ("x-request-id", request_id))
                )
            else:
                await stub.IssueToken(
                    pb.IssueTokenRequest(user_id=name), metadata=(*backend(app), ("x-request-id", request_id))
                )
            code = OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        calls.append(Call(request_id, after_signal, code))
        if code != OK:
            await asyncio.sleep(0.005)  # as a client's retry back-off would; the server may be gone


async def _held(target: str, app: App, request_id: str) -> grpc.StatusCode:
    async with _channel(target) as channel:
        try:
            await auth_service_pb2_grpc.AuthServiceStub(channel).RevokeApp(
                pb.RevokeAppRequest(), metadata=(*backend(app), ("x-request-id", request_id))
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return OK


@pytest.mark.parametrize("workers", [1, 2, 4], ids=["one-process", "two-workers", "four-workers"])
async def test_sigterm_under_sustained_load_fails_no_call_but_with_unavailable_and_exits_0(
    database_url: str, new_app: NewApp, tmp_path: Path, workers: int
) -> None:
    """SIGTERM while CALLERS callers on CONNECTIONS connections call without pause, before, during and after it.

    The server turns health NOT_SERVING at once and keeps serving through the drain (AUTHSVC_DRAIN_TIMEOUT:
    the load never goes quiet here), then refuses new calls while the calls in its handlers finish, then
    closes its connections and exits 0. Every call a client sees fail fails UNAVAILABLE, the status a client
    retries on another replica: none CANCELLED (grpc/grpc#41785), none anything else.

    "In a handler" is made observable rather than timed: HELD RevokeApp calls wait on rows this test has
    locked (SELECT ... FOR UPDATE), and the signal is sent only once PostgreSQL reports exactly HELD server
    backends blocked by the lock. They must all succeed after the release, and the process must still be
    running, refusing new calls, until then. The server's access log has one line for every call its handlers
    started: every call it answered OK reached its client OK, and every call a client saw succeed is there.
    """
    load_app = await new_app("load")
    held_apps = [await new_app(f"held-{i}") for i in range(HELD)]
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_DRAIN_TIMEOUT="2s",
        # The accounting below needs the access line of every call, successful ones included.
        AUTHSVC_ACCESS_LOG_RATE="1000000",
        # Below the 60 s the test waits for the exit: a call stuck in flight would be cut, and reported as lost.
        AUTHSVC_SHUTDOWN_GRACE="30s",
        # The held calls wait on a row lock; they must wait, not time out.
        AUTHSVC_DATABASE_TIMEOUT="60s",
    )
    signalled, done = asyncio.Event(), asyncio.Event()
    calls: list[Call] = []
    locker = await asyncpg.connect(database_url)
    # Outside the locking transaction: pg_stat_activity is a snapshot taken once per transaction.
    observer = await asyncpg.connect(database_url)
    channels: list[grpc.aio.Channel] = []
    try:
        async with serve(env, tmp_path, workers=workers) as served, asyncio.timeout(120):
            channels = [_channel(served.target) for _ in range(CONNECTIONS)]
            stubs: list[AuthServiceAsyncStub] = [auth_service_pb2_grpc.AuthServiceStub(channel) for channel in channels]
            token = (await stubs[0].IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(load_app))).token
            watch = health_pb2_grpc.HealthStub(channels[0]).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING
            callers = [
                asyncio.create_task(
                    _caller(stubs[n % CONNECTIONS], f"load{n}", load_app, token, signalled, done, calls)
                )
                for n in range(CALLERS)
            ]
            while sum(call.code == OK for call in calls) < WARM_UP_CALLS:
                assert not any(caller.done() for caller in callers), f"the load failed: {calls[-8:]}"
                await asyncio.sleep(0.01)
            assert all(call.code == OK for call in calls), "the load failed before the signal"

            lock = locker.transaction()
            await lock.start()
            locked = await locker.fetch(
                "SELECT id FROM apps WHERE api_key = ANY($1::text[]) FOR UPDATE", [a.api_key for a in held_apps]
            )
            assert len(locked) == HELD
            held = [asyncio.create_task(_held(served.target, app, f"held-{i}")) for i, app in enumerate(held_apps)]

            async def blocked_by_the_lock() -> int:
                count: int = await observer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    locker.get_server_pid(),
                )
                return count

            while True:  # polled: PostgreSQL has no event to wait on
                blocked = await blocked_by_the_lock()
                if blocked >= HELD:
                    break
                ended = [task.result() for task in held if task.done()]
                assert not ended, f"held calls ended without waiting for the lock: {ended}"
                await asyncio.sleep(0.01)
            assert blocked == HELD

            signalled.set()
            served.process.send_signal(signal.SIGTERM)
            # Health turns NOT_SERVING while the process serves on.
            assert (await watch.read()).status == NOT_SERVING
            # The drain serves on (the load is answered), then refuses new calls while the held calls are in
            # their handlers: the process runs on until they are released.
            while not any(c.after_signal and c.code != OK for c in calls):
                assert served.process.returncode is None
                await asyncio.sleep(0.01)
            assert any(c.after_signal and c.code == OK for c in calls), "the drain served no call"
            assert await blocked_by_the_lock() == HELD
            assert served.process.returncode is None
            assert not any(task.done() for task in held)

            await lock.rollback()
            held_codes = await asyncio.gather(*held)
            await served.finished()
            # The load goes on past the exit: calls to a server that is gone fail too, and must say so.
            after_exit = len(calls)
            while len(calls) < after_exit + CALLERS:  # noqa: ASYNC110 - counted as the callers append
                await asyncio.sleep(0.01)
            done.set()
            await asyncio.gather(*callers)
    finally:
        done.set()
        for channel in channels:
            await channel.close()
        await locker.close()
        await observer.close()

    assert served.process.returncode == 0, served.output
    assert held_codes == [OK] * HELD
    logged = {r["request_id"]: r["code"] for r in served.records if r.get("logger") == "authsvc.access" and "code" in r}
    assert all(logged[f"held-{i}"] == "OK" for i in range(HELD))

    failed = [c for c in calls if c.code != OK]
    assert failed, "the load outlived the server, so some calls failed"
    assert {c.code for c in failed} == {grpc.StatusCode.UNAVAILABLE}, Counter(c.code for c in failed)
    assert not [c for c in failed if not c.after_signal], "a call failed before the signal"
    answered_ok_then_lost = [c for c in failed if logged.get(c.request_id) == "OK"]
    assert answered_ok_then_lost == [], "every call the server answered OK reached its client"
    ok_unlogged = [c for c in calls if c.code == OK and c.request_id not in logged]
    assert ok_unlogged == [], "every call the server answered is in its access log"
    assert "Traceback" not in served.output


async def _sigterm_under_load(
    served: Served,
    channel: grpc.aio.Channel,
    app: App,
    name: str,
    signalled: asyncio.Event,
    done: asyncio.Event,
    calls: list[Call],
) -> list[asyncio.Task[None]]:
    """Four callers on `channel` calling without pause; once warm, SIGTERM, and back when health says NOT_SERVING.
    The callers go on until `done`."""
    stub: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)
    token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == SERVING
    callers = [asyncio.create_task(_caller(stub, f"{name}{n}", app, token, signalled, done, calls)) for n in range(4)]
    while len(calls) < WARM_UP_CALLS:  # noqa: ASYNC110 - counted as the callers append
        await asyncio.sleep(0.01)
    signalled.set()
    served.process.send_signal(signal.SIGTERM)
    assert (await watch.read()).status == NOT_SERVING
    return callers


async def test_a_drain_ends_when_the_callers_go_quiet_not_at_its_timeout(
    database_url: str, new_app: NewApp, tmp_path: Path
) -> None:
    """Two workers, one client connection (so one worker has no traffic at all), callers that stop calling once
    health says NOT_SERVING, as a client-side health check would: every worker's drain ends because its
    callers went quiet, long before the drain timeout, and no call fails."""
    app = await new_app("quiet")
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_DRAIN_TIMEOUT="1h", AUTHSVC_SHUTDOWN_GRACE="1h")
    signalled, done = asyncio.Event(), asyncio.Event()
    calls: list[Call] = []
    async with serve(env, tmp_path, workers=2) as served, _channel(served.target) as channel:
        callers = await _sigterm_under_load(served, channel, app, "quiet", signalled, done, calls)
        done.set()
        await asyncio.gather(*callers)
        await served.finished()
    assert served.process.returncode == 0, served.output
    assert [c for c in calls if c.code != OK] == []
    drains = [m for m in served.messages() if m.startswith("drain: ")]
    assert drains == ["drain: the callers went quiet"] * 2, drains


async def test_a_second_signal_ends_the_drain_at_once(database_url: str, new_app: NewApp, tmp_path: Path) -> None:
    """Callers that keep calling would hold the drain for its whole timeout (an hour here); an operator's second
    SIGTERM ends it, and the process still exits 0 with every failed call UNAVAILABLE."""
    app = await new_app("hurried")
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_DRAIN_TIMEOUT="1h", AUTHSVC_SHUTDOWN_GRACE="1h")
    signalled, done = asyncio.Event(), asyncio.Event()
    calls: list[Call] = []
    async with serve(env, tmp_path, workers=1) as served, _channel(served.target) as channel:
        callers = await _sigterm_under_load(served, channel, app, "hurried", signalled, done, calls)
        served_after_signal = len(calls)
        while len(calls) < served_after_signal + WARM_UP_CALLS:  # noqa: ASYNC110 - the drain serves on
            await asyncio.sleep(0.01)
        served.process.send_signal(signal.SIGTERM)
        await served.finished()
        done.set()
        await asyncio.gather(*callers)
    assert served.process.returncode == 0, served.output
    assert {c.code for c in calls if c.code != OK} <= {grpc.StatusCode.UNAVAILABLE}
    assert [m for m in served.messages() if m.startswith("drain: ")] == ["drain: a second signal ended it"]
