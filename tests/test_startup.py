"""Start-up as an operator sees it, in real `authsvc serve` processes: ports another process holds, stop signals
before the server serves, `--no-migrate`, what the log says once, and the connection age of the gRPC port."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from authsvc import migrations
from authsvc.config import Settings
from authsvc.server import start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from authsvc.workers import port_lock_path
from tests.conftest import NewApp
from tests.processes import AUTHSVC, Served, authsvc, clean_env, serve
from tests.support import FakeClock, backend


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path: the embedded PostgreSQL puts its unix socket in the data dir.
    return tmp_path_factory.mktemp("start")


@asynccontextmanager
async def started(env: dict[str, str], cwd: Path, *args: str, new_session: bool = False) -> AsyncIterator[Served]:
    """`authsvc ARGS` running, its output read as it comes; SIGTERM and waited for at the end if still running."""
    process = await asyncio.create_subprocess_exec(
        *AUTHSVC, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=new_session,
    )  # fmt: skip
    served = Served(process)
    try:
        yield served
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await served.finished()


async def exits_or_serves(served: Served) -> None:
    """Waits until the process has exited, or has a worker serving gRPC (then it was not refused)."""

    def serving(records: list[dict[str, object]]) -> bool:
        return any("serving gRPC" in str(r.get("message", "")) for r in records)

    with suppress(AssertionError):  # wait_for fails when the process ends: one of the two outcomes
        await served.wait_for(serving)
    if served.process.returncode is None and not serving(served.records):
        await served.finished()


def stderr_of(served: Served) -> list[str]:
    """The lines the process wrote on stderr (stdout is JSON)."""
    return [line for line in served.log if not line.startswith("{")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _flags(workers: int) -> list[str]:
    return ["--workers", str(workers)]


@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 2), (2, 1), (2, 2)], ids=lambda n: f"{n}w")
async def test_a_second_server_on_the_port_is_refused_and_the_first_keeps_every_call(
    database_url: str, fresh_database: str, new_app: NewApp, workdir: Path, first: int, second: int
) -> None:
    """Another server (its own database) on a port this one listens on must not start: with SO_REUSEPORT the
    kernel would split calls between the two, and apps of the one would be NOT_FOUND on the other."""
    app = await new_app("first")
    async with serve(clean_env(AUTHSVC_DATABASE_URL=database_url), workdir, workers=first) as running:
        args = ["serve", "--host", "127.0.0.1", "--port", str(running.port), "--http-port", "0", *_flags(second)]
        async with started(clean_env(AUTHSVC_DATABASE_URL=fresh_database), workdir, *args) as other:
            await exits_or_serves(other)
        assert other.process.returncode == 1, other.output
        lines = stderr_of(other)
        assert len(lines) == 1 and f"127.0.0.1:{running.port}" in lines[0], other.output
        assert "Traceback" not in other.output
        for _ in range(12):  # a connection of its own each time: the kernel would spread them over both servers
            async with grpc.aio.insecure_channel(
                running.target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    assert running.process.returncode == 0, running.output


@contextmanager
def port_locked(port: int) -> Iterator[bool]:
    """Tries the lock a server holds on 127.0.0.1:port; yields whether this process got it."""
    fd = os.open(port_lock_path("127.0.0.1", port), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


async def test_the_port_lock_is_held_while_serving_and_keeps_a_server_starting_at_once_out(
    database_url: str, workdir: Path
) -> None:
    """Two servers starting at once could both find the port free; the lock file lets one through."""
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0", "--workers", "2"]
    with port_locked(port) as got:  # as a server starting at this moment holds it
        assert got
        async with started(env, workdir, *args) as refused:
            await exits_or_serves(refused)
    assert refused.process.returncode == 1, refused.output
    assert len(stderr_of(refused)) == 1 and f"127.0.0.1:{port}" in refused.output

    async with started(env, workdir, *args) as running:
        await exits_or_serves(running)
        assert running.process.returncode is None, running.output
        with port_locked(port) as got:
            assert not got, "a serving server holds the lock"
    assert running.process.returncode == 0, running.output
    with port_locked(port) as got:
        assert got, "and lets go of it when it stops"


async def test_a_workers_http_port_in_use_is_one_line(database_url: str, workdir: Path) -> None:
    # With several workers the server still has one HTTP port (worker 1 serves it for all: one scrape target).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--host", "127.0.0.1", "--port", "0", "--http-port", str(port), "--workers", "2"]
        async with started(clean_env(AUTHSVC_DATABASE_URL=database_url), workdir, *args) as refused:
            await exits_or_serves(refused)
    assert refused.process.returncode == 1, refused.output
    lines = stderr_of(refused)
    assert len(lines) == 1, refused.output
    assert "HTTP" in lines[0] and f"127.0.0.1:{port}" in lines[0], lines
    assert "Traceback" not in refused.output


@asynccontextmanager
async def black_hole() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A TCP port that accepts connections and never answers: a database start-up waits on. The event is set
    once a connection came in."""
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connected
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("workers", "sig", "code"),
    [(1, signal.SIGINT, 130), (1, signal.SIGTERM, 0), (2, signal.SIGTERM, 0)],
    ids=["one-process-SIGINT", "one-process-SIGTERM", "two-workers-SIGTERM"],
)  # (two workers and SIGINT: asyncio.run's own handling already stopped the supervisor quietly)
async def test_a_stop_signal_during_start_up_exits_quietly(
    workdir: Path, workers: int, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM while the server waits for
    its database: no traceback, exit 130 or 0, at once rather than after the database timeout."""
    async with black_hole() as (port, connected):
        env = clean_env(
            AUTHSVC_DATABASE_URL=f"postgresql://authsvc@127.0.0.1:{port}/authsvc", AUTHSVC_DATABASE_TIMEOUT="10m"
        )
        args = ["serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", *_flags(workers)]
        async with started(env, workdir, *args, new_session=True) as starting:
            async with asyncio.timeout(60):
                await connected.wait()
            os.killpg(starting.process.pid, sig)
            await starting.finished()
    assert starting.process.returncode == code, starting.output
    assert stderr_of(starting) == [], starting.output


@pytest.mark.parametrize(
    ("flags", "setting"), [(["--no-migrate"], {}), ([], {"AUTHSVC_MIGRATE": "false"})], ids=["flag", "setting"]
)
async def test_no_migrate_refuses_a_database_that_lacks_migrations(
    fresh_database: str, flags: list[str], setting: dict[str, str]
) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=fresh_database, **setting)
    result = await asyncio.to_thread(authsvc, "serve", "--port", "0", "--http-port", "0", *flags, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "run 'authsvc migrate'" in result.stderr, result.stderr
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()


def _as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = f"{parts.query}&password={password}" if parts.query else f"password={password}"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}", query=query))


async def test_no_migrate_serves_with_a_role_without_ddl_rights(fresh_database: str, workdir: Path) -> None:
    """The runtime role of the Deployment: reads and writes rows, may not create or alter anything."""
    owner = clean_env(AUTHSVC_DATABASE_URL=fresh_database)
    assert (await asyncio.to_thread(authsvc, "migrate", env=owner)).returncode == 0
    created = await asyncio.to_thread(authsvc, "apps", "create", "runtime", env=owner)
    app = json.loads(created.stdout)
    role, password = f"authsvc_runtime_{secrets.token_hex(4)}", secrets.token_hex(8)
    admin = await asyncpg.connect(fresh_database)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        await admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        await admin.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
        runtime = clean_env(AUTHSVC_DATABASE_URL=_as_user(fresh_database, role, password))

        migrating = await asyncio.to_thread(authsvc, "serve", "--port", "0", "--http-port", "0", env=runtime)
        assert migrating.returncode == 1 and migrating.stderr.count("\n") == 1, migrating.stderr
        assert "permission denied" in migrating.stderr and "AUTHSVC_MIGRATE=false" in migrating.stderr

        async with serve(runtime, workdir, "--no-migrate", workers=1) as served:
            async with grpc.aio.insecure_channel(served.target) as channel:
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                metadata = (("x-api-key", app["api_key"]), ("authorization", f"Bearer {app['api_secret']}"))
                issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=metadata)
                await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=metadata)
                verified = await stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=metadata[:1])
                assert verified.outcome == pb.VERIFY_OUTCOME_REVOKED
            # The operator's commands in the same pod (AUTHSVC_MIGRATE=false there) work under the same role.
            listed = await asyncio.to_thread(authsvc, "apps", "list", env={**runtime, "AUTHSVC_MIGRATE": "false"})
            assert listed.returncode == 0 and app["api_key"] in listed.stdout, listed.stderr
        assert served.process.returncode == 0, served.output
        assert password not in served.output, "the password in the URL's query string is masked in the log"
    finally:
        await admin.execute(f"DROP OWNED BY {role}")  # its privileges, so that the role can go
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_each_fact_is_logged_once_per_start(workdir: Path) -> None:
    """Embedded PostgreSQL, two workers, no KEK: the KEK warning once, each migration once, pgserver's command
    lines not at INFO, a misspelled setting named once; and the CLI beside it adds no warning."""
    env = clean_env(AUTHSVC_DATABSE_TIMEOUT="5s")
    del env["AUTHSVC_KEK"]
    async with serve(env, workdir, workers=2) as served:
        listed = await asyncio.to_thread(authsvc, "apps", "list", env=clean_env(), cwd=workdir)
    assert served.process.returncode == 0, served.output
    messages = Counter(served.messages())
    kek = [m for m in messages if "no key-encryption key" in m]
    assert len(kek) == 1 and messages[kek[0]] == 1, messages
    for version, _ in migrations.available():
        assert messages[f"applied migration {version}"] == 1, messages
    assert not any("migrated to" in m for m in messages)
    assert not [r for r in served.records if r.get("logger") == "pgserver" and r.get("level") != "DEBUG"]
    typo = [m for m in messages if "AUTHSVC_DATABSE_TIMEOUT" in m]
    assert len(typo) == 1 and messages[typo[0]] == 1 and "did you mean AUTHSVC_DATABASE_TIMEOUT" in typo[0]
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr


async def test_clients_are_asked_to_reconnect_after_the_maximum_connection_age(
    store: Store, state: State, settings: Settings, session_clock: FakeClock, new_app: NewApp
) -> None:
    app = await new_app("aged")
    aged = settings.with_overrides(max_connection_age=0.5, max_connection_age_grace=0.5)
    running = await start_server(store, state, aged, session_clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            async with asyncio.timeout(30):  # GOAWAY after the age (±10 % jitter): the channel goes IDLE
                while channel.get_state() == grpc.ChannelConnectivity.READY:
                    await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
            # The next call connects again.
            await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    finally:
        await running.stop(None)
