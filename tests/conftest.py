"""Fixtures that start real parts: a PostgreSQL database, the gRPC server on an ephemeral port, stubs.

The database is the one AUTHSVC_TEST_DATABASE_URL points at, else an embedded PostgreSQL (pgserver) in a
temporary directory. Either way each test session works in a fresh database of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from authsvc import apps, migrations
from authsvc.config import Settings
from authsvc.sealing import Keyring, parse_kek
from authsvc.server import RunningServer, new_state, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2_grpc
from tests.processes import TEST_KEK
from tests.support import FakeClock

TEST_KEYRING = Keyring((parse_kek(TEST_KEK),))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostgreSQL server: AUTHSVC_TEST_DATABASE_URL, or an embedded one for this session."""
    url = os.environ.get("AUTHSVC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    # Not under pytest's basetemp, which concurrent pytest runs prune; and short, because the unix socket
    # lives in the data dir and socket paths are limited to ~100 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def new_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """An empty database of its own on the server (no migrations applied), dropped on exit."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session, dropped at the end."""
    async with new_database(server_url, "authsvc_test") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()
        yield url


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """An empty database for one test (no migrations applied), dropped after it: for tests that migrate, or
    rewrite every row, where the session's database must not see it."""
    async with new_database(server_url, "authsvc_one") as url:
        yield url


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the session's database."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def store(pool: asyncpg.Pool) -> Store:
    """The real store over the session's database."""
    return Store(pool, TEST_KEYRING)


@pytest.fixture(scope="session")
def session_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clock(session_clock: FakeClock) -> Iterator[FakeClock]:
    """The server's clock; reset to the wall clock after each test."""
    yield session_clock
    session_clock.reset()


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings of the test server: loopback, ephemeral gRPC and HTTP ports, a 5 s clock leeway."""
    return Settings(host="127.0.0.1", port=0, http_port=0, issuer="authsvc-test", clock_leeway=5.0)


@pytest.fixture(scope="session")
async def state(store: Store, database_url: str, settings: Settings) -> AsyncIterator[State]:
    """The test server's in-memory state, following the session's database."""
    state = new_state(store, database_url, settings)
    await state.start()
    yield state
    await state.stop()


@pytest.fixture(scope="session")
async def server(
    store: Store, state: State, settings: Settings, session_clock: FakeClock
) -> AsyncIterator[RunningServer]:
    """A real gRPC server on an ephemeral loopback port."""
    running = await start_server(store, state, settings, session_clock)
    yield running
    await running.stop(None)


@pytest.fixture(scope="session")
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the test server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    """The generated AuthService stub, on the test server."""
    return auth_service_pb2_grpc.AuthServiceStub(channel)


NewApp = Callable[..., Awaitable[App]]


@pytest.fixture
def new_app(store: Store) -> NewApp:
    """Creates an app (with fresh credentials) the way `authsvc apps create` does."""

    async def create(name: str = "chat", **options: Any) -> App:
        return await apps.create_app(store, name, **options)

    return create
