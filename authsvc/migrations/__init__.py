"""Versioned SQL migrations, applied in name order under a PostgreSQL advisory lock."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from authsvc.errors import ConfigError

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x61757468737663  # "authsvc": every replica that starts at once waits here, not races.


def available() -> list[tuple[str, str]]:
    """Every migration shipped with the package, as (version, SQL), in the order they apply."""
    files = [f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")]
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in sorted(files, key=lambda f: f.name)]


async def apply(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations this database lacks, each in its own transaction; returns their versions."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    version = "schema_migrations"
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigError(
            f"cannot migrate the database ({version}): {exc}; run 'authsvc migrate' as the schema's owner, "
            "and serve with AUTHSVC_MIGRATE=false"
        ) from exc
    except asyncpg.PostgresError as exc:
        raise ConfigError(f"cannot migrate the database: migration {version} failed: {exc}") from exc
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


async def pending(conn: asyncpg.Connection) -> list[str]:
    """The versions shipped but not yet applied to this database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")} if exists else set()
    return [version for version, _ in available() if version not in done]


async def require_applied(conn: asyncpg.Connection) -> None:
    """Raises ConfigError, saying to run `authsvc migrate`, when this database lacks a migration of this release.

    A database ahead of this release is fine: during a rollout the previous release runs against the new schema.
    """
    if missing := await pending(conn):
        raise ConfigError(
            f"the database lacks migration(s) {', '.join(missing)} of this release and AUTHSVC_MIGRATE is false: "
            "run 'authsvc migrate' first"
        )
