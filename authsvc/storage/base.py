"""What every query of the store shares: reaching the database, one deadline an operation, the change log.

Every operation either completes against PostgreSQL or raises Unavailable; a write that returns is committed
(and so durable) before the caller acknowledges it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from authsvc.database import connect_error
from authsvc.errors import Unavailable
from authsvc.sealing import Keyring

log = logging.getLogger(__name__)

# Errors that mean "the database cannot be reached right now", as opposed to a bug in a query.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # asyncpg's protocol state broken by a connection lost mid-operation ("cannot switch to state 15; another
    # operation (2) is in progress", while a restart cuts connections), or a schema cache outdated by a migration.
    asyncpg.exceptions.InternalClientError,
)
# SQLSTATE classes of a server that is restarting, failing over, overloaded or resolving a conflict: connection
# exception, insufficient resources, operator intervention (shutdown, crash, cancel), system error, rollback.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_READ_ONLY_TRANSACTION = "25006"  # a primary demoted to a standby by a failover


def unreachable(error: BaseException) -> bool:
    """Whether `error` means the database is (for now) out of reach, so the call is worth retrying later."""
    if isinstance(error, _UNREACHABLE):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = str(error.sqlstate or "")
        return state[:2] in _TRANSIENT_CLASSES or state == _READ_ONLY_TRANSACTION
    return False


CHANNEL = "authsvc_state"
"""NOTIFY channel announcing a new state version (Store.listen)."""


async def create_pool(dsn: str, *, max_size: int = 10, command_timeout: float = 5.0) -> asyncpg.Pool:
    """A connection pool for `dsn`, with one connection opened; raises Unavailable when the database cannot be
    reached."""
    # min_size=0: a pool with a floor reconnects in the background after a restart, logging each failed attempt
    # with a traceback; the next operation opens the connection it needs instead.
    pool = await asyncpg.create_pool(
        dsn, min_size=0, max_size=max_size, command_timeout=command_timeout, timeout=command_timeout
    )
    try:
        async with pool.acquire():  # reached now, so that a database away at start-up is one clear error
            pass
    except Exception as exc:
        pool.terminate()
        # PostgresError: a wrong password, no such database; said in one line like a server out of reach.
        if not unreachable(exc) and not isinstance(exc, asyncpg.PostgresError):
            raise
        raise Unavailable(connect_error(dsn, exc)) from exc
    return pool


async def record(
    conn: asyncpg.Connection,
    app_id: int,
    kind: str,
    user_hashes: list[int] | None = None,
    times: list[int] | None = None,
    jtis: list[str] | None = None,
) -> int:
    """Logs a change in the caller's transaction and announces it at commit; returns its version.

    The UPDATE takes the one row lock of state_version until commit, so versions commit in order, gap-free.
    """
    version: int = await conn.fetchval("UPDATE state_version SET version = version + 1 RETURNING version")
    await conn.execute(
        "INSERT INTO state_changes (version, app_id, kind, user_hashes, times, jtis) VALUES ($1, $2, $3, $4, $5, $6)",
        version,
        app_id,
        kind,
        user_hashes or [],
        times or [],
        jtis or [],
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(version))
    return version


class Queries:
    """A pool, the keyring that seals keys at rest, and the one way to run an operation on them."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring, *, timeout: float = 5.0) -> None:
        self._pool = pool
        self._keyring = keyring
        self._timeout = timeout  # seconds one database operation may take, all of it: AUTHSVC_DATABASE_TIMEOUT

    @asynccontextmanager
    async def _connection(self, held: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A connection for one operation: a pooled one, or `held` (a dedicated one the caller keeps). The
        operation as a whole (acquiring the connection, every query, the commit) gets one deadline, `timeout`;
        past it, or when the database is lost, it raises Unavailable. This is the one place where database
        errors become authsvc errors."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        conn = held
        try:
            async with asyncio.timeout_at(deadline):
                if conn is None:
                    conn = await self._pool.acquire()
                yield conn
        except Exception as exc:
            if not unreachable(exc):
                raise
            if conn is not None:
                # Cut off mid-operation, its state is unknown: not reused. (A connection the server closed is
                # back in the pool already, and its proxy refuses every call.)
                with suppress(asyncpg.InterfaceError):
                    conn.terminate()
            if isinstance(exc, TimeoutError):
                log.warning("a database operation took longer than %gs: cut off", self._timeout)
                raise Unavailable(
                    f"the database did not answer within {self._timeout:g}s; retry later with backoff"
                ) from exc
            log.warning("a database operation failed: %s: %s", type(exc).__name__, exc)
            raise Unavailable("the database is unavailable; retry later with backoff") from exc
        finally:
            if conn is not None and held is None:
                await self._release(conn, deadline)

    @asynccontextmanager
    async def _dedicated(self, dsn: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, outside the pool, for what lives as long as a session (LISTEN, a session
        lock); ended on leaving, which ends that too. Raises Unavailable when the database cannot be reached."""
        try:
            conn = await asyncpg.connect(dsn, timeout=self._timeout, command_timeout=self._timeout)
        except Exception as exc:
            if not unreachable(exc) and not isinstance(exc, asyncpg.PostgresError):
                raise
            raise Unavailable(connect_error(dsn, exc)) from exc
        try:
            yield conn
        finally:
            if not conn.is_closed():
                conn.terminate()

    async def _release(self, conn: asyncpg.Connection, deadline: float) -> None:
        # The operation's outcome is settled by now: a failure to reset the connection only drops it (asyncpg
        # terminates a connection whose reset fails), it neither fails a committed write nor hides an error.
        try:
            await self._pool.release(conn, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        except Exception as exc:
            log.info("dropped a database connection that could not be reset: %s", type(exc).__name__)
