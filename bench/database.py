"""The PostgreSQL server the bench runs on (AUTHSVC_BENCH_DATABASE_URL's, else an embedded one) and the fresh
databases it makes there for each scenario."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.proc import parent_of, tree_cpu_seconds


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@dataclass
class PostgresServer:
    """The PostgreSQL server the bench creates its databases on."""

    admin_url: str
    embedded: bool
    version: str = ""
    postmaster_pid: int | None = None
    """The postmaster, when it runs on this machine (its CPU time is then measured)."""

    def cpu_seconds(self) -> float | None:
        """CPU time of the postmaster and its backends, including backends that have exited."""
        if self.postmaster_pid is None:
            return None
        try:
            return tree_cpu_seconds(self.postmaster_pid, with_reaped_children=True)
        except OSError:
            return None


@contextlib.asynccontextmanager
async def postgres_server() -> AsyncIterator[PostgresServer]:
    """AUTHSVC_BENCH_DATABASE_URL's server, else an embedded one (pgserver) in a temporary directory."""
    url = os.environ.get("AUTHSVC_BENCH_DATABASE_URL")
    embedded = None
    if not url:
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        # Short path: the unix socket lives in the data dir.
        pgdata = Path(tempfile.mkdtemp(prefix="authsvc-bench-pg-"))
        embedded = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="delete")
        url = embedded.get_uri()
    assert url is not None
    try:
        conn = await asyncpg.connect(url, timeout=30)
        try:
            server = PostgresServer(url, embedded is not None, str(await conn.fetchval("SHOW server_version")))
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            with contextlib.suppress(OSError, ValueError):
                server.postmaster_pid = parent_of(int(backend))  # a backend's parent is the postmaster
        finally:
            await conn.close()
        yield server
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.cleanup)


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer, label: str) -> AsyncIterator[str]:
    """A new, empty database on the server, dropped afterwards (WITH (FORCE): every session is ended)."""
    name = f"authsvc_bench_{label}_{secrets.token_hex(4)}"
    await _administer(server, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server.admin_url, name)
    finally:
        await _administer(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _administer(server: PostgresServer, statement: str) -> None:
    admin = await asyncpg.connect(server.admin_url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()
