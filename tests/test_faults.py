"""Faults of the database as a client lives them: restarts, partitions, outages longer than the staleness bound.

Each test runs its own PostgreSQL (embedded, in a temporary directory) or its own TCP proxy in front of one, so
it can restart, stop or cut it off without touching the session's database. No assertion is timed: waits are
bounded polls, and the one bound on a failure's duration is generous.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc import apps, migrations
from authsvc.audit import SYSTEM
from authsvc.client import LocalVerifier, VerifyOutcome
from authsvc.config import Settings
from authsvc.database import open_store
from authsvc.server import LIVENESS, READINESS, RunningServer, new_state, start_server
from authsvc.state import State
from authsvc.store import Store, create_pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import TEST_KEYRING, NewApp
from tests.processes import TEST_KEK, Served, clean_env, serve
from tests.support import FakeClock, RpcFailure, api_key_only, backend, expect_failure, failure
from tests.test_state import ManualMonotonic, eventually

if TYPE_CHECKING:
    from authsvc.v1.admin_service_pb2_grpc import AdminServiceAsyncStub
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

OPERATOR = secrets.token_urlsafe(32)


class OwnPostgres:
    """A PostgreSQL of one test (pgserver in a temporary directory) that the test restarts with pg_ctl."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        self.pgdata = pgdata
        self._server = pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url: str = self._server.get_uri()
        self._socket_dir = dict(parse_qsl(urlsplit(self.url).query))["host"]

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m fast|immediate`: every connection is cut, and the server takes new ones again
        once it is back (after crash recovery, for immediate)."""
        self._pg_ctl("-m", mode, "-l", str(self.pgdata / "log"), "restart")

    def stop(self) -> None:
        """A fast shutdown: the database is away until start()."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", f'-h "" -k {self._socket_dir}', "-l", str(self.pgdata / "log"), "start")

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", *args]
        if self._server.system_user is not None:
            # As root, pgserver runs PostgreSQL as another user. runuser switches to it in a process of its own:
            # subprocess's user= would switch in the forked child of this multi-threaded process (gRPC's
            # threads), where glibc's setuid can crash.
            command = ["runuser", "-u", self._server.system_user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=90)

    def cleanup(self) -> None:
        self._server.cleanup()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL of this test's own, which it may restart."""
    # Not under pytest's basetemp, which concurrent pytest runs prune; short, for the unix socket's path.
    server = OwnPostgres(Path(tempfile.mkdtemp(prefix="authsvc-pg-")))
    yield server
    server.cleanup()


def operator() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {OPERATOR}"),)


def credentials(api_key: str, api_secret: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", api_key), ("authorization", f"Bearer {api_secret}"))


def logged_faults(served: Served) -> list[str]:
    """Lines of the server's output that show a crash: a traceback, an exception, an ERROR record."""
    bad = [line for line in served.log if "Traceback" in line]
    bad += [str(r) for r in served.records if "exception" in r or r.get("level") in ("ERROR", "CRITICAL")]
    return bad


async def test_database_restarts_fail_calls_as_unavailable_with_a_reason_never_internal(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    env = clean_env(
        AUTHSVC_DATABASE_URL=own_postgres.url,
        AUTHSVC_OPERATOR_TOKENS=f"ops:{OPERATOR}",
        AUTHSVC_DATABASE_TIMEOUT="3s",
    )
    async with serve(env, tmp_path, workers=1) as served, grpc.aio.insecure_channel(served.target) as channel:
        auth: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)
        admin: AdminServiceAsyncStub = admin_service_pb2_grpc.AdminServiceStub(channel)
        created = await admin.CreateApp(admin_pb.CreateAppRequest(name="restarts"), metadata=operator())
        api_key, meta = created.app.api_key, credentials(created.app.api_key, created.api_secret)
        calls: dict[str, Callable[[int], Awaitable[Any]]] = {
            "RevokeUser": lambda i: auth.RevokeUser(pb.RevokeUserRequest(user_ids=[f"u{i}"]), metadata=meta),
            "IssueToken": lambda i: auth.IssueToken(pb.IssueTokenRequest(user_id=f"u{i}"), metadata=meta),
            "ClearRevocation": lambda i: auth.ClearRevocation(
                pb.ClearRevocationRequest(users=pb.UserIds(user_ids=[f"u{i - 1}"])), metadata=meta
            ),
            "UpdateApp": lambda i: admin.UpdateApp(
                admin_pb.UpdateAppRequest(api_key=api_key, name=f"restarts {i}"), metadata=operator()
            ),
            "GetApp": lambda i: admin.GetApp(admin_pb.GetAppRequest(api_key=api_key), metadata=operator()),
            "ListAuditEvents": lambda i: admin.ListAuditEvents(
                admin_pb.ListAuditEventsRequest(api_key=api_key, limit=5), metadata=operator()
            ),
        }
        succeeded: Counter[str] = Counter()
        failed: list[tuple[str, grpc.aio.AioRpcError]] = []
        stopping = asyncio.Event()

        async def keep_calling(name: str, call: Callable[[int], Awaitable[Any]]) -> None:
            i = 0
            while not stopping.is_set():
                i += 1
                try:
                    await call(i)
                    succeeded[name] += 1
                except grpc.aio.AioRpcError as error:
                    failed.append((name, error))
                    await asyncio.sleep(0.01)

        loops = [asyncio.create_task(keep_calling(name, call)) for name, call in calls.items() for _ in range(3)]
        try:
            for mode in ("fast", "immediate", "fast", "immediate"):
                before = sum(succeeded.values())

                async def calls_succeed(before: int = before) -> bool:
                    return sum(succeeded.values()) > before + 20

                await eventually(calls_succeed, within=60)
                await asyncio.to_thread(own_postgres.restart, mode)
            after_restarts = dict(succeeded)

            async def every_call_succeeds_again() -> bool:
                return all(succeeded[name] > after_restarts.get(name, 0) for name in calls)

            await eventually(every_call_succeeds_again, within=60)
        finally:
            stopping.set()
            await asyncio.gather(*loops)
    seen: list[tuple[str, RpcFailure]] = []
    for name, error in failed:
        assert error.code() is grpc.StatusCode.UNAVAILABLE, f"{name}: {error.code()} {error.details()}"
        seen.append((name, failure(error)))
    assert seen, "the restarts cut calls off (else this test tested nothing)"
    assert {(name, f.reason, f.domain) for name, f in seen} <= {
        (name, "DATABASE_UNAVAILABLE", "authsvc") for name in calls
    }
    assert logged_faults(served) == []


class Proxy:
    """A TCP proxy on loopback in front of PostgreSQL. `partition()` stops it forwarding: what is sent waits
    (as TCP retransmits across a partition), nothing answers, nothing is closed; `heal()` lets it through."""

    def __init__(self, upstream: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]) -> None:
        self._upstream = upstream
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()
            up_reader, up_writer = await self._upstream()
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


Upstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def proxied(url: str, port: int) -> tuple[str, Upstream]:
    """The URL of the same database through a proxy on 127.0.0.1:`port`, and how the proxy reaches it."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    socket_dir = query.pop("host", None)
    upstream_port = parts.port or int(query.pop("port", "5432"))

    async def upstream() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if socket_dir is not None:  # the embedded PostgreSQL listens on a unix socket only
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{upstream_port}")
        return await asyncio.open_connection(parts.hostname, upstream_port)

    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}", query=urlencode(query))), upstream


async def test_writes_during_a_partition_fail_within_the_database_timeout(
    database_url: str, settings: Settings, new_app: NewApp
) -> None:
    timeout = 2.0
    proxy = Proxy(proxied(database_url, 0)[1])
    await proxy.start()
    url = proxied(database_url, proxy.port)[0]
    configured = settings.with_overrides(database_url=url, database_timeout=timeout, kek=TEST_KEK)
    pool, store = await open_store(url, configured, TEST_KEYRING, migrate=True)
    state = new_state(store, url, configured)
    await state.start()
    running = await start_server(store, state, configured)
    try:
        app = await new_app()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)

            def revoke() -> Awaitable[Any]:
                return stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app), timeout=60)

            await revoke()
            proxy.partition()
            # The first write finds an idle connection whose query never returns; the next ones find none and
            # wait for a connection that never opens. Either way, one deadline for the whole operation.
            for _ in range(3):
                started = time.monotonic()
                cut_off = await expect_failure(revoke())
                took = time.monotonic() - started
                # Generous for a loaded machine, yet short of the two timeouts in a row this once took.
                assert took < 1.6 * timeout, f"a write took {took:.1f}s to fail with a {timeout:g}s timeout"
                assert (cut_off.code, cut_off.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
                assert f"within {timeout:g}s" in cut_off.message
            proxy.heal()

            async def writes_again() -> bool:
                try:
                    await revoke()
                except grpc.aio.AioRpcError:
                    return False
                return True

            await eventually(writes_again, within=60)
    finally:
        await running.stop(None)
        await state.stop()
        await pool.close()
        await proxy.close()


@asynccontextmanager
async def outage_server(
    own_postgres: OwnPostgres, settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[Store, State, RunningServer, ManualMonotonic]]:
    """A server on the test's own PostgreSQL, its state checked every 0.2 s against a monotonic clock the test
    moves (staleness bound 30 s), database timeout 2 s: for outages the test makes by stopping that PostgreSQL."""
    url = own_postgres.url
    pool = await create_pool(url, max_size=2)
    async with pool.acquire() as conn:
        await migrations.apply(conn)
    store = Store(pool, TEST_KEYRING, timeout=2)
    monotonic = ManualMonotonic()
    state = State(store, url, check_interval=0.2, max_staleness=30, monotonic=monotonic)
    await state.start()
    running = await start_server(store, state, settings, clock)
    try:
        yield store, state, running, monotonic
    finally:
        await running.stop(None)
        await state.stop()
        await pool.close()


async def test_an_outage_longer_than_the_staleness_bound_fails_closed_then_recovers(
    own_postgres: OwnPostgres, settings: Settings, session_clock: FakeClock
) -> None:
    async with outage_server(own_postgres, settings, session_clock) as (store, state, running, monotonic):
        app = await apps.create_app(store, "outage")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)

            def issue() -> Awaitable[pb.IssueTokenResponse]:
                response: Awaitable[pb.IssueTokenResponse] = stub.IssueToken(
                    pb.IssueTokenRequest(user_id="alice"), metadata=backend(app)
                )
                return response

            token = (await issue()).token

            def verify() -> Awaitable[pb.VerifyTokenResponse]:
                response: Awaitable[pb.VerifyTokenResponse] = stub.VerifyToken(
                    pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
                )
                return response

            health = health_pb2_grpc.HealthStub(channel)

            async def statuses() -> dict[str, int]:
                return {
                    name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                    for name in (*READINESS, LIVENESS)
                }

            async def not_ready() -> bool:
                return await statuses() == {**dict.fromkeys(READINESS, NOT_SERVING), LIVENESS: SERVING}

            async def ready() -> bool:
                return await statuses() == dict.fromkeys((*READINESS, LIVENESS), SERVING)

            await eventually(ready)
            await asyncio.to_thread(own_postgres.stop)
            # Within the staleness bound: answered from memory.
            monotonic.now += 10
            assert (await verify()).valid
            assert (await issue()).token
            # Writes are never acknowledged unless durable.
            failure = await expect_failure(
                stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
            )
            assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            # Past it: fail closed, verifying, signing and publishing keys alike.
            monotonic.now += 25
            jwks = stub.GetJwks(pb.GetJwksRequest(), metadata=api_key_only(app))
            for call in (verify(), issue(), jwks):
                stale = await expect_failure(call)
                assert (stale.code, stale.reason) == (grpc.StatusCode.UNAVAILABLE, "STATE_STALE")
            jwks_url = f"http://127.0.0.1:{running.http_port}/.well-known/jwks/{app.api_key}.json"
            with pytest.raises(urllib.error.HTTPError) as refused:
                await asyncio.to_thread(urllib.request.urlopen, jwks_url, timeout=10)
            assert refused.value.code == 503 and refused.value.headers["retry-after"] == "5"
            # Readiness follows: a load balancer stops sending here; liveness does not (a restart would not help).
            await eventually(not_ready)
            # The database comes back: the process catches up by itself, without a restart.
            await asyncio.to_thread(own_postgres.start)

            async def fresh_again() -> bool:
                return state.staleness() < 1

            await eventually(fresh_again, within=30)
            assert (await verify()).valid
            await eventually(ready)
            await asyncio.sleep(0.01)
            await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
            assert (await verify()).outcome == pb.VERIFY_OUTCOME_REVOKED
            assert (await issue()).token


def outcome_is(verifier: LocalVerifier, token: str, outcome: VerifyOutcome) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return verifier.verify(token).outcome is outcome

    return check


async def test_a_local_verifier_fails_closed_through_a_database_outage_and_catches_up_after_it(
    own_postgres: OwnPostgres, settings: Settings, session_clock: FakeClock
) -> None:
    """Issue 12, section 5: a database restart under a watching LocalVerifier. The server's heartbeats carry its
    growing staleness, so the verifier answers UNAVAILABLE rather than a stale VALID; once the database is back,
    it catches up, a revocation written by another writer the moment the database returned included."""
    url = own_postgres.url
    heartbeats = settings.with_overrides(watch_heartbeat=0.1)
    async with outage_server(own_postgres, heartbeats, session_clock) as (store, state, running, monotonic):
        verifier: LocalVerifier | None = None
        try:
            app = await apps.create_app(store, "outage-watch")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)
                alice, bob = [
                    (await stub.IssueToken(pb.IssueTokenRequest(user_id=user), metadata=backend(app))).token
                    for user in ("alice", "bob")
                ]
                verifier = LocalVerifier(
                    f"127.0.0.1:{running.port}",
                    app.api_key,
                    app.api_secret,
                    hs256_secret=app.api_secret,
                    max_lag=5.0,
                    clock=session_clock,
                    metrics=False,
                    reconnect_backoff=0.05,
                    reconnect_max_backoff=0.2,
                )
                await verifier.start()
                assert verifier.verify(alice).outcome is VerifyOutcome.VALID

                await asyncio.to_thread(own_postgres.stop)
                monotonic.now += 10  # the server has not confirmed its state for 10 s: its heartbeats say so
                await eventually(outcome_is(verifier, alice, VerifyOutcome.UNAVAILABLE))
                assert verifier.lag > 5.0

                # Another writer revokes bob as soon as the database is back, before this server has caught up:
                # holding the state's lock keeps the server's follower from reading the changes until the
                # revocation is committed (else it could catch up first, and VALID would then be right).
                async with state._lock:
                    await asyncio.to_thread(own_postgres.start)
                    other = await create_pool(url, max_size=1)
                    try:
                        await Store(other, TEST_KEYRING, timeout=5).revoke_users(
                            app.id, ["bob"], session_clock(), actor=SYSTEM
                        )
                    finally:
                        await other.close()
                # From the revocation's commit on, bob is never VALID: UNAVAILABLE until the verifier catches up.
                seen: set[VerifyOutcome] = set()

                async def revoked() -> bool:
                    outcome = verifier.verify(bob).outcome
                    seen.add(outcome)
                    return outcome is VerifyOutcome.REVOKED

                await eventually(revoked, within=30)
                assert seen <= {VerifyOutcome.UNAVAILABLE, VerifyOutcome.REVOKED}, seen
                assert verifier.verify(alice).outcome is VerifyOutcome.VALID
        finally:
            if verifier is not None:
                await verifier.close()


async def test_a_heartbeat_never_vouches_for_a_revocation_still_being_fanned_out(
    own_postgres: OwnPostgres, settings: Settings, session_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose state was stale catches up on a revocation; while its hub still prepares the change for the
    watchers (naming the users takes a database read, slowed here), its heartbeats go out at the older version.
    They must not claim the state's new freshness: a LocalVerifier would answer VALID for the revoked user."""
    heartbeats = settings.with_overrides(watch_heartbeat=0.05)
    async with outage_server(own_postgres, heartbeats, session_clock) as (store, state, running, monotonic):
        naming = store.revoked_user_ids

        async def slow_naming(app_id: int, user_hashes: list[int]) -> list[str]:
            await asyncio.sleep(1.0)
            return await naming(app_id, user_hashes)

        monkeypatch.setattr(store, "revoked_user_ids", slow_naming)
        verifier: LocalVerifier | None = None
        try:
            app = await apps.create_app(store, "fan-out")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub: AuthServiceAsyncStub = auth_service_pb2_grpc.AuthServiceStub(channel)
                bob = (await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))).token
                verifier = LocalVerifier(
                    f"127.0.0.1:{running.port}", app.api_key, app.api_secret, hs256_secret=app.api_secret,
                    max_lag=5.0, clock=session_clock, metrics=False,
                )  # fmt: skip
                await verifier.start()
                assert verifier.verify(bob).outcome is VerifyOutcome.VALID
                seen: set[VerifyOutcome] = set()
                async with state._lock:  # the server cannot catch up: its state goes 10 s stale
                    monotonic.now += 10
                    await eventually(outcome_is(verifier, bob, VerifyOutcome.UNAVAILABLE))
                    await store.revoke_users(app.id, ["bob"], session_clock(), actor=SYSTEM)

                async def revoked() -> bool:
                    outcome = verifier.verify(bob).outcome
                    seen.add(outcome)
                    return outcome is VerifyOutcome.REVOKED

                await eventually(revoked, within=30)
                assert seen <= {VerifyOutcome.UNAVAILABLE, VerifyOutcome.REVOKED}, seen
        finally:
            if verifier is not None:
                await verifier.close()
