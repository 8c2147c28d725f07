"""Storage: the asyncpg queries of authsvc behind one small interface.

Every method either completes against PostgreSQL or raises Unavailable; a write that returns is committed
(and so durable) before the caller acknowledges it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.errors import InvalidArgument, Unavailable
from authsvc.tokens import App

# Errors that mean "the database cannot be reached right now", as opposed to a bug in a query.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

_APP_COLUMNS = (
    "id, api_key, name, algorithm, api_secret, key_id, token_ttl_seconds, auth_checks_disabled,"
    " require_iat, revoked_before, created_at"
)


async def create_pool(dsn: str, *, max_size: int = 10, command_timeout: float = 5.0) -> asyncpg.Pool:
    """A connection pool for `dsn`; raises Unavailable when the database cannot be reached."""
    try:
        return await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, command_timeout=command_timeout, timeout=command_timeout
        )
    except _UNREACHABLE as exc:
        raise Unavailable(f"cannot reach the database: {type(exc).__name__}") from exc


def _app(row: asyncpg.Record) -> App:
    return App(
        id=row["id"],
        api_key=row["api_key"],
        name=row["name"],
        algorithm=row["algorithm"],
        api_secret=row["api_secret"],
        key_id=row["key_id"],
        token_ttl_seconds=row["token_ttl_seconds"],
        auth_checks_disabled=row["auth_checks_disabled"],
        require_iat=row["require_iat"],
        revoked_before=None if row["revoked_before"] is None else from_datetime(row["revoked_before"]),
        created_at=from_datetime(row["created_at"]),
    )


class Store:
    """The queries of authsvc over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 5.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                yield conn
        except _UNREACHABLE as exc:
            raise Unavailable(
                f"the database is unavailable ({type(exc).__name__}); nothing was changed, retry later"
            ) from exc

    async def create_app(
        self,
        *,
        api_key: str,
        name: str,
        api_secret: str,
        key_id: str,
        algorithm: str,
        token_ttl_seconds: int | None,
        auth_checks_disabled: bool,
        require_iat: bool,
    ) -> App:
        """Creates an app; raises InvalidArgument when the API key is taken."""
        async with self._connection() as conn:
            try:
                row = await conn.fetchrow(
                    "INSERT INTO apps (api_key, name, api_secret, key_id, algorithm, token_ttl_seconds,"
                    " auth_checks_disabled, require_iat) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    f" RETURNING {_APP_COLUMNS}",
                    api_key,
                    name,
                    api_secret,
                    key_id,
                    algorithm,
                    token_ttl_seconds,
                    auth_checks_disabled,
                    require_iat,
                )
            except asyncpg.UniqueViolationError:
                raise InvalidArgument(f"an app with API key {api_key} exists", "APP_EXISTS") from None
        assert row is not None
        return _app(row)

    async def get_app(self, api_key: str) -> App | None:
        """The app with this API key, or None."""
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {_APP_COLUMNS} FROM apps WHERE api_key = $1", api_key)
        return None if row is None else _app(row)

    async def list_apps(self) -> list[App]:
        """Every app, oldest first."""
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY id")
        return [_app(row) for row in rows]

    async def user_revoked_before(self, app_id: int, user_id: str) -> Micros | None:
        """The user's revocation time, or None when the user has no revocation."""
        async with self._connection() as conn:
            value = await conn.fetchval(
                "SELECT revoked_before FROM user_revocations WHERE app_id = $1 AND user_id = $2",
                app_id,
                user_id,
            )
        return None if value is None else from_datetime(value)

    async def user_revocations(self, app_id: int, user_ids: Iterable[str]) -> dict[str, Micros]:
        """The revocation times of those of `user_ids` that have one."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT user_id, revoked_before FROM user_revocations WHERE app_id = $1 AND user_id = ANY($2::text[])",
                app_id,
                list(user_ids),
            )
        return {row["user_id"]: from_datetime(row["revoked_before"]) for row in rows}

    async def revoke_users(self, app_id: int, user_ids: Iterable[str], revoke_before: Micros) -> dict[str, Micros]:
        """Revokes the users' tokens issued before `revoke_before`; never moves a revocation backwards.

        Returns the revocation in force for each user. `user_ids` must be distinct.
        """
        async with self._connection() as conn:
            rows = await conn.fetch(
                "INSERT INTO user_revocations (app_id, user_id, revoked_before)"
                " SELECT $1, u, $3 FROM unnest($2::text[]) AS u"
                " ON CONFLICT (app_id, user_id) DO UPDATE SET"
                "  revoked_before = GREATEST(user_revocations.revoked_before, EXCLUDED.revoked_before),"
                "  updated_at = now()"
                " RETURNING user_id, revoked_before",
                app_id,
                list(user_ids),
                to_datetime(revoke_before),
            )
        return {row["user_id"]: from_datetime(row["revoked_before"]) for row in rows}

    async def revoke_app(self, app_id: int, revoke_before: Micros) -> Micros:
        """Revokes every token of the app issued before `revoke_before` (or without iat); never backwards."""
        async with self._connection() as conn:
            value = await conn.fetchval(
                "UPDATE apps SET revoked_before = GREATEST(revoked_before, $2), updated_at = now()"
                " WHERE id = $1 RETURNING revoked_before",
                app_id,
                to_datetime(revoke_before),
            )
        return _required(value)

    async def clear_user_revocations(self, app_id: int, user_ids: Iterable[str]) -> list[str]:
        """Removes the users' revocations; returns the users that had one."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "DELETE FROM user_revocations WHERE app_id = $1 AND user_id = ANY($2::text[]) RETURNING user_id",
                app_id,
                list(user_ids),
            )
        return [row["user_id"] for row in rows]

    async def clear_app_revocation(self, app_id: int) -> bool:
        """Removes the app's revocation; returns whether it had one."""
        async with self._connection() as conn:
            had = await conn.fetchval(
                "UPDATE apps SET revoked_before = NULL, updated_at = now()"
                " WHERE id = $1 AND revoked_before IS NOT NULL RETURNING true",
                app_id,
            )
        return bool(had)


def _required(value: Any) -> Micros:
    if value is None:
        raise Unavailable("the app vanished during the call; retry", "APP_CHANGED")
    return from_datetime(value)
