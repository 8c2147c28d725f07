"""User and app revocations: written, cleared, and pruned once no live token can predate them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from authsvc.audit import SYSTEM, Actor
from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.errors import Unavailable
from authsvc.storage.audit import audit
from authsvc.storage.base import Queries, record

PRUNING_LOCK_KEY = int.from_bytes(b"authprun")
"""The advisory lock of a pruning pass: one process prunes at a time, over every replica."""
# Change-log rows pruned once both this old and this far behind; a process that far behind reloads.
_CHANGE_LOG_KEEP_SECONDS = 3600.0
_CHANGE_LOG_KEEP_VERSIONS = 10_000


class RevocationQueries(Queries):
    """Revoking and clearing, each a logged and audited change, and the pruning pass."""

    async def revoke_users(
        self, app_id: int, user_ids: Iterable[str], revoke_before: Micros, *, actor: Actor
    ) -> tuple[dict[str, Micros], int]:
        """Revokes the users' tokens issued before `revoke_before`; never moves a revocation backwards.

        Returns the revocation in force for each user, and the state version of the change. `user_ids` must
        be distinct.
        """
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO user_revocations (app_id, user_id, revoked_before)"
                " SELECT $1, u, $3 FROM unnest($2::text[]) AS u"
                " ON CONFLICT (app_id, user_id) DO UPDATE SET"
                "  revoked_before = GREATEST(user_revocations.revoked_before, EXCLUDED.revoked_before),"
                "  updated_at = now()"
                " RETURNING user_id, user_hash, revoked_before",
                app_id,
                list(user_ids),
                to_datetime(revoke_before),
            )
            in_force = {row["user_id"]: from_datetime(row["revoked_before"]) for row in rows}
            await audit(
                conn,
                actor,
                "users.revoked",
                app_id,
                {"user_ids": list(in_force), "revoke_before": to_datetime(revoke_before).isoformat()},
            )
            version = await record(
                conn, app_id, "revoke", [row["user_hash"] for row in rows], [in_force[row["user_id"]] for row in rows]
            )
        return in_force, version

    async def revoke_app(self, app_id: int, revoke_before: Micros, *, actor: Actor) -> tuple[Micros, int]:
        """Revokes every token of the app issued before `revoke_before` (or without iat); never backwards."""
        async with self._connection() as conn, conn.transaction():
            value = await conn.fetchval(
                "UPDATE apps SET revoked_before = GREATEST(revoked_before, $2), updated_at = now()"
                " WHERE id = $1 RETURNING revoked_before",
                app_id,
                to_datetime(revoke_before),
            )
            in_force = _required(value)
            await audit(conn, actor, "app.revoked", app_id, {"revoke_before": to_datetime(revoke_before).isoformat()})
            version = await record(conn, app_id, "app")
        return in_force, version

    async def clear_user_revocations(
        self, app_id: int, user_ids: Iterable[str], *, actor: Actor
    ) -> tuple[list[str], int]:
        """Removes the users' revocations; returns the users that had one, and the state version."""
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM user_revocations WHERE app_id = $1 AND user_id = ANY($2::text[])"
                " RETURNING user_id, user_hash",
                app_id,
                list(user_ids),
            )
            version = await record(conn, app_id, "clear", [row["user_hash"] for row in rows])
            await audit(conn, actor, "users.revocation_cleared", app_id, {"user_ids": [row["user_id"] for row in rows]})
        return [row["user_id"] for row in rows], version

    async def clear_app_revocation(self, app_id: int, *, actor: Actor) -> tuple[bool, int]:
        """Removes the app's revocation; returns whether it had one, and the state version."""
        async with self._connection() as conn, conn.transaction():
            had = await conn.fetchval(
                "UPDATE apps SET revoked_before = NULL, updated_at = now()"
                " WHERE id = $1 AND revoked_before IS NOT NULL RETURNING true",
                app_id,
            )
            await audit(conn, actor, "app.revocation_cleared", app_id, {"had_revocation": bool(had)})
            version = await record(conn, app_id, "app")
        return bool(had), version

    async def revoke_token(
        self, app_id: int, jti: str, revoked_at: Micros, expires_at: Micros | None, *, actor: Actor
    ) -> tuple[Micros, Micros | None, int]:
        """Revokes the app's token with this jti, kept until `expires_at` (None: kept until cleared).

        Revoking again keeps the first revocation time, and the later expiry (none being the latest). Returns
        the revocation time and expiry in force, and the state version of the change.
        """
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO token_revocations (app_id, jti, revoked_before, expires_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (app_id, jti) DO UPDATE SET expires_at = CASE"
                "  WHEN token_revocations.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL"
                "  ELSE GREATEST(token_revocations.expires_at, EXCLUDED.expires_at) END"
                " RETURNING revoked_before, expires_at",
                app_id,
                jti,
                to_datetime(revoked_at),
                None if expires_at is None else to_datetime(expires_at),
            )
            in_force = from_datetime(row["revoked_before"])
            until = None if row["expires_at"] is None else from_datetime(row["expires_at"])
            await audit(
                conn,
                actor,
                "token.revoked",
                app_id,
                {
                    "jti": jti,
                    "revoked_before": row["revoked_before"].isoformat(),
                    "expires_at": None if row["expires_at"] is None else row["expires_at"].isoformat(),
                },
            )
            version = await record(conn, app_id, "revoke_tokens", times=[in_force], jtis=[jti])
        return in_force, until, version

    async def clear_token_revocations(self, app_id: int, jtis: Iterable[str], *, actor: Actor) -> tuple[list[str], int]:
        """Removes the revocations of these tokens; returns the jtis that had one, and the state version."""
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM token_revocations WHERE app_id = $1 AND jti = ANY($2::text[]) RETURNING jti",
                app_id,
                list(jtis),
            )
            cleared = [row["jti"] for row in rows]
            version = await record(conn, app_id, "clear_tokens", jtis=cleared)
            await audit(conn, actor, "tokens.revocation_cleared", app_id, {"jtis": cleared})
        return cleared, version

    async def revoked_user_ids(self, app_id: int, user_hashes: Iterable[int]) -> list[str]:
        """The ids of the app's users with these hashes that have a revocation now, in order (authsvc.watch names
        them to watchers: the change log holds hashes only)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT user_id FROM user_revocations WHERE app_id = $1 AND user_hash = ANY($2::bigint[])"
                " ORDER BY user_id",
                app_id,
                list(user_hashes),
            )
        return [row["user_id"] for row in rows]

    async def prune(
        self, dsn: str, leeway: Micros, applied: Callable[[int], Awaitable[None]], *, batch: int = 10_000
    ) -> bool:
        """One pruning pass, unless another process (of any replica) is running one: then returns False at once.

        Deletes the user revocations no live token can predate (older than their app's maximum token lifetime
        plus `leeway`: such a token would have expired), `batch` at a time, each batch a logged change whose
        version is handed to `applied` before the next batch; then change-log rows old and far behind. A million
        revocations never sit in memory at once, here or in the processes that follow, and each batch fits the
        database timeout. Returns True.
        """
        async with self._dedicated(dsn) as conn:
            async with self._connection(conn):
                # A session lock, on a connection of the pass's own: a process that dies mid-pass lets go of it
                # with its connection, and the pool (which even a pool of one shares with `applied`) stays free.
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNING_LOCK_KEY):
                    return False
            while (version := await self._prune_batch(conn, leeway, batch)) is not None:
                await applied(version)
            while (version := await self._prune_token_batch(conn, leeway, batch)) is not None:
                await applied(version)
            async with self._connection(conn):
                await conn.execute(
                    "DELETE FROM state_changes WHERE created_at < now() - make_interval(secs => $1::float8)"
                    " AND version < (SELECT version FROM state_version) - $2",
                    _CHANGE_LOG_KEEP_SECONDS,
                    _CHANGE_LOG_KEEP_VERSIONS,
                )
        return True

    async def _prune_batch(self, conn: asyncpg.Connection, leeway: Micros, batch: int) -> int | None:
        """Deletes up to `batch` prunable user revocations as one logged change; its version, or None when none
        was left."""
        async with self._connection(conn), conn.transaction():
            # SKIP LOCKED: a pruner that holds no lock (a release before the lock, during a rolling update) takes
            # other rows, so each row is still deleted and logged once.
            rows = await conn.fetch(
                "DELETE FROM user_revocations WHERE (app_id, user_id) IN ("
                " SELECT r.app_id, r.user_id FROM user_revocations r JOIN apps a ON a.id = r.app_id"
                " WHERE a.max_token_lifetime_seconds IS NOT NULL"
                "  AND r.revoked_before < now() - make_interval(secs => a.max_token_lifetime_seconds + $1::float8)"
                " LIMIT $2 FOR UPDATE OF r SKIP LOCKED)"
                " RETURNING app_id, user_hash",
                leeway / 1_000_000,
                batch,
            )
            per_app: dict[int, list[int]] = {}
            for row in rows:
                per_app.setdefault(row["app_id"], []).append(row["user_hash"])
            version = None
            for app_id, hashes in per_app.items():
                version = await record(conn, app_id, "clear", hashes)
                await audit(conn, SYSTEM, "revocations.pruned", app_id, {"users": len(hashes)})
        return version

    async def _prune_token_batch(self, conn: asyncpg.Connection, leeway: Micros, batch: int) -> int | None:
        """Deletes up to `batch` token revocations whose tokens have expired (past `exp` plus `leeway`; for an app
        with a maximum token lifetime, also once revoked longer ago than it plus twice the leeway, since the
        token's `iat` was at most `leeway` ahead) as one logged change per app; its version, or None when none
        was left."""
        async with self._connection(conn), conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM token_revocations WHERE (app_id, jti) IN ("
                " SELECT t.app_id, t.jti FROM token_revocations t JOIN apps a ON a.id = t.app_id"
                " WHERE t.expires_at < now() - make_interval(secs => $1::float8)"
                "  OR t.revoked_before < now() - make_interval(secs => a.max_token_lifetime_seconds + 2 * $1::float8)"
                " LIMIT $2 FOR UPDATE OF t SKIP LOCKED)"
                " RETURNING app_id, jti",
                leeway / 1_000_000,
                batch,
            )
            per_app: dict[int, list[str]] = {}
            for row in rows:
                per_app.setdefault(row["app_id"], []).append(row["jti"])
            version = None
            for app_id, jtis in per_app.items():
                version = await record(conn, app_id, "clear_tokens", jtis=jtis)
                await audit(conn, SYSTEM, "token_revocations.pruned", app_id, {"tokens": len(jtis)})
        return version


def _required(value: Any) -> Micros:
    if value is None:
        raise Unavailable("the app vanished during the call; retry", "APP_CHANGED")
    return from_datetime(value)
