"""Storage: the asyncpg queries of authsvc behind one small interface.

Every method either completes against PostgreSQL or raises Unavailable; a write that returns is committed
(and so durable) before the caller acknowledges it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from array import array
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

from authsvc import keys
from authsvc.audit import SYSTEM, Actor, AuditEvent
from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.database import connect_error
from authsvc.errors import ConfigError, InvalidArgument, NotFound, Unavailable
from authsvc.sealing import Keyring, SealError
from authsvc.tokens import App, KeyPair, Secret

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


_APP_COLUMNS = (
    "id, api_key, name, algorithm, token_ttl_seconds, auth_checks_disabled,"
    " require_iat, revoked_before, created_at, max_token_lifetime_seconds"
)
# Live keys of the given apps: API secrets current-first, key pairs newest-signing-first.
_KEYS_QUERY = (
    "SELECT app_id, key_id, kind, algorithm, sealed, signs_from, expires_at FROM app_keys"
    " WHERE app_id = ANY($1::bigint[]) AND retired_at IS NULL"
    " ORDER BY app_id, kind, expires_at IS NOT NULL, signs_from DESC, created_at DESC, key_id"
)
_LEGACY_PREFIX = "plain:"
# The settings Store.update_app may change.
_UPDATABLE = frozenset(
    {"name", "algorithm", "token_ttl_seconds", "max_token_lifetime_seconds", "auth_checks_disabled", "require_iat"}
)

CHANNEL = "authsvc_state"
"""NOTIFY channel announcing a new state version (authsvc.state listens)."""

_MICROS = "(extract(epoch from {0}) * 1000000)::bigint"


@dataclass(frozen=True, slots=True)
class Change:
    """One logged change of the verification state."""

    version: int
    app_id: int
    kind: str
    user_hashes: array[int]
    times: array[int]
    app: App | None
    """For kind 'app': the app as it is now (None when it no longer exists)."""


def _int64s(big_endian: bytes) -> array[int]:
    """An int64 array from PostgreSQL's binary int8s (int8send): big-endian, 8 bytes each."""
    values = array("q")
    values.frombytes(big_endian)
    if sys.byteorder == "little":
        values.byteswap()
    return values


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole verification state at one version."""

    version: int
    apps: list[App]
    revocations: dict[int, tuple[array[int], array[int]]]
    """Per app id: user hashes (sorted) and their revocation times, in microseconds, as int64 arrays."""


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


def _build_app(row: asyncpg.Record, key_rows: list[asyncpg.Record], keyring: Keyring) -> App:
    secrets: list[Secret] = []
    pairs: list[KeyPair] = []
    for key in key_rows:
        material = _unseal(keyring, key["sealed"], row["api_key"], key["key_id"])
        if key["kind"] == "secret":
            expires = None if key["expires_at"] is None else from_datetime(key["expires_at"])
            secrets.append(Secret(key["key_id"], material, expires))
        else:
            loaded = keys.load(key["algorithm"], material)
            pairs.append(KeyPair(key["key_id"], loaded, from_datetime(key["signs_from"])))
    return App(
        id=row["id"],
        api_key=row["api_key"],
        name=row["name"],
        algorithm=row["algorithm"],
        secrets=tuple(secrets),
        key_pairs=tuple(pairs),
        token_ttl_seconds=row["token_ttl_seconds"],
        auth_checks_disabled=row["auth_checks_disabled"],
        require_iat=row["require_iat"],
        revoked_before=None if row["revoked_before"] is None else from_datetime(row["revoked_before"]),
        created_at=from_datetime(row["created_at"]),
        max_token_lifetime_seconds=row["max_token_lifetime_seconds"],
    )


def _unseal(keyring: Keyring, sealed: str, api_key: str, key_id: str) -> str:
    if sealed.startswith(_LEGACY_PREFIX):  # carried over by migration 0005; sealed at the next start
        return sealed[len(_LEGACY_PREFIX) :]
    try:
        return keyring.open(sealed, app=api_key, key_id=key_id)
    except SealError as exc:
        raise ConfigError(
            f"cannot open the keys of app {api_key}: {exc}; check AUTHSVC_KEK / AUTHSVC_KEK_FILE"
        ) from exc


async def _load_apps(conn: asyncpg.Connection, keyring: Keyring, where: str = "", *args: Any) -> list[App]:
    rows = await conn.fetch(f"SELECT {_APP_COLUMNS} FROM apps {where} ORDER BY id", *args)
    key_rows = await conn.fetch(_KEYS_QUERY, [row["id"] for row in rows])
    by_app: dict[int, list[asyncpg.Record]] = {}
    for key in key_rows:
        by_app.setdefault(key["app_id"], []).append(key)
    return [_build_app(row, by_app.get(row["id"], []), keyring) for row in rows]


async def _record(
    conn: asyncpg.Connection,
    app_id: int,
    kind: str,
    user_hashes: list[int] | None = None,
    times: list[int] | None = None,
) -> int:
    """Logs a change in the caller's transaction and announces it at commit; returns its version.

    The UPDATE takes the one row lock of state_version until commit, so versions commit in order, gap-free.
    """
    version: int = await conn.fetchval("UPDATE state_version SET version = version + 1 RETURNING version")
    await conn.execute(
        "INSERT INTO state_changes (version, app_id, kind, user_hashes, times) VALUES ($1, $2, $3, $4, $5)",
        version,
        app_id,
        kind,
        user_hashes or [],
        times or [],
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(version))
    return version


async def _audit(
    conn: asyncpg.Connection, actor: Actor, action: str, app_id: int | None, details: dict[str, Any] | None = None
) -> None:
    """Records a change in the caller's transaction, so it is durable exactly when the change is."""
    await conn.execute(
        "INSERT INTO audit_events (actor, action, app_id, api_key, peer, details)"
        " VALUES ($1, $2, $3, (SELECT api_key FROM apps WHERE id = $3), $4, $5::jsonb)",
        actor.id,
        action,
        app_id,
        actor.peer,
        json.dumps(details or {}),
    )


class Store:
    """The queries of authsvc over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring, *, timeout: float = 5.0) -> None:
        self._pool = pool
        self._keyring = keyring
        self.timeout = timeout
        """Seconds one database operation may take, all of it: AUTHSVC_DATABASE_TIMEOUT."""

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one operation. The operation as a whole (acquiring the connection, every
        query, the commit) gets one deadline, `timeout`; past it, or when the database is lost, it raises
        Unavailable. This is the one place where database errors become authsvc errors."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout_at(deadline):
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
                log.warning("a database operation took longer than %gs: cut off", self.timeout)
                raise Unavailable(
                    f"the database did not answer within {self.timeout:g}s; retry later with backoff"
                ) from exc
            log.warning("a database operation failed: %s: %s", type(exc).__name__, exc)
            raise Unavailable("the database is unavailable; retry later with backoff") from exc
        finally:
            if conn is not None:
                await self._release(conn, deadline)

    async def _release(self, conn: asyncpg.Connection, deadline: float) -> None:
        # The operation's outcome is settled by now: a failure to reset the connection only drops it (asyncpg
        # terminates a connection whose reset fails), it neither fails a committed write nor hides an error.
        try:
            await self._pool.release(conn, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        except Exception as exc:
            log.info("dropped a database connection that could not be reset: %s", type(exc).__name__)

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
        max_token_lifetime_seconds: int | None = None,
        key_pair: tuple[str, str] | None = None,
        actor: Actor,
    ) -> App:
        """Creates an app with its API secret (kid `key_id`) and, for EdDSA/ES256, a (kid, private PEM) pair.

        Raises InvalidArgument when the API key is taken.
        """
        async with self._connection() as conn, conn.transaction():
            try:
                app_id = await conn.fetchval(
                    "INSERT INTO apps (api_key, name, algorithm, token_ttl_seconds,"
                    " auth_checks_disabled, require_iat, max_token_lifetime_seconds)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    api_key,
                    name,
                    algorithm,
                    token_ttl_seconds,
                    auth_checks_disabled,
                    require_iat,
                    max_token_lifetime_seconds,
                )
            except asyncpg.UniqueViolationError:
                raise InvalidArgument(f"an app with API key {api_key} exists", "APP_EXISTS") from None
            await self._insert_key(conn, app_id, api_key, key_id, "secret", "HS256", api_secret)
            if key_pair is not None:
                await self._insert_key(conn, app_id, api_key, key_pair[0], "key_pair", algorithm, key_pair[1])
            await _record(conn, app_id, "app")
            await _audit(conn, actor, "app.created", app_id, {"name": name, "algorithm": algorithm})
            (app,) = await _load_apps(conn, self._keyring, "WHERE id = $1", app_id)
        return app

    async def _insert_key(
        self,
        conn: asyncpg.Connection,
        app_id: int,
        api_key: str,
        key_id: str,
        kind: str,
        algorithm: str,
        material: str,
        *,
        signs_from: Micros | None = None,
    ) -> None:
        await conn.execute(
            "INSERT INTO app_keys (app_id, key_id, kind, algorithm, sealed, signs_from)"
            " VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))",
            app_id,
            key_id,
            kind,
            algorithm,
            self._keyring.seal(material, app=api_key, key_id=key_id),
            None if signs_from is None else to_datetime(signs_from),
        )

    async def get_app(self, api_key: str) -> App | None:
        """The app with this API key, or None."""
        async with self._connection() as conn:
            found = await _load_apps(conn, self._keyring, "WHERE api_key = $1", api_key)
        return found[0] if found else None

    async def list_apps(self) -> list[App]:
        """Every app, oldest first."""
        async with self._connection() as conn:
            return await _load_apps(conn, self._keyring)

    async def rotate_secret(self, app: App, *, new_key_id: str, new_secret: str, overlap: Micros, actor: Actor) -> int:
        """Makes `new_secret` the app's current API secret; the others stay valid for `overlap`, then expire.

        Returns the state version of the change.
        """
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE app_keys SET expires_at = least(coalesce(expires_at, 'infinity'),"
                " now() + make_interval(secs => $2::float8))"
                " WHERE app_id = $1 AND kind = 'secret' AND retired_at IS NULL",
                app.id,
                overlap / 1_000_000,
            )
            await self._insert_key(conn, app.id, app.api_key, new_key_id, "secret", "HS256", new_secret)
            await _audit(
                conn, actor, "api_secret.rotated", app.id, {"key_id": new_key_id, "overlap_seconds": overlap / 1e6}
            )
            return await _record(conn, app.id, "app")

    async def add_key_pair(self, app: App, *, key_id: str, private_pem: str, signs_from: Micros, actor: Actor) -> int:
        """Publishes a new key pair at once; it signs from `signs_from`. Returns the state version."""
        async with self._connection() as conn, conn.transaction():
            await self._insert_key(
                conn, app.id, app.api_key, key_id, "key_pair", app.algorithm, private_pem, signs_from=signs_from
            )
            await _audit(
                conn,
                actor,
                "key.rotated",
                app.id,
                {"key_id": key_id, "signs_from": to_datetime(signs_from).isoformat()},
            )
            return await _record(conn, app.id, "app")

    async def retire_key(self, app: App, key_id: str, *, actor: Actor) -> int | None:
        """Stops a key verifying; returns the state version, or None when no such live key exists."""
        async with self._connection() as conn, conn.transaction():
            retired = await conn.fetchval(
                "UPDATE app_keys SET retired_at = now() WHERE app_id = $1 AND key_id = $2 AND retired_at IS NULL"
                " RETURNING true",
                app.id,
                key_id,
            )
            if not retired:
                return None
            await _audit(conn, actor, "key.retired", app.id, {"key_id": key_id})
            return await _record(conn, app.id, "app")

    async def update_app(
        self, app: App, changes: Mapping[str, Any], *, actor: Actor, key_pair: tuple[str, str] | None = None
    ) -> tuple[App, int]:
        """Sets some of the app's settings (`changes`: column to new value, among _UPDATABLE).

        A change of algorithm retires the app's key pairs and publishes `key_pair` (kid, private PEM), signing at
        once, when the new algorithm is EdDSA/ES256. Returns the app as it now is and the state version.
        """
        columns = sorted(changes)
        if not columns or not set(columns) <= _UPDATABLE:
            raise ValueError(f"cannot update {', '.join(sorted(set(columns) - _UPDATABLE)) or 'nothing'}")
        assignments = ", ".join(f"{column} = ${number}" for number, column in enumerate(columns, 2))
        details: dict[str, Any] = {"changed": {column: changes[column] for column in columns}}
        async with self._connection() as conn, conn.transaction():
            found = await conn.fetchval(
                f"UPDATE apps SET {assignments}, updated_at = now() WHERE id = $1 RETURNING true",
                app.id,
                *(changes[column] for column in columns),
            )
            if not found:
                raise NotFound("no app has this API key", "APP_NOT_FOUND")
            if "algorithm" in changes:
                details["retired_key_ids"] = [
                    row["key_id"]
                    for row in await conn.fetch(
                        "UPDATE app_keys SET retired_at = now()"
                        " WHERE app_id = $1 AND kind = 'key_pair' AND retired_at IS NULL RETURNING key_id",
                        app.id,
                    )
                ]
                if key_pair is not None:
                    await self._insert_key(
                        conn, app.id, app.api_key, key_pair[0], "key_pair", changes["algorithm"], key_pair[1]
                    )
                    details["key_id"] = key_pair[0]
            await _audit(conn, actor, "app.updated", app.id, details)
            version = await _record(conn, app.id, "app")
            (updated,) = await _load_apps(conn, self._keyring, "WHERE id = $1", app.id)
        return updated, version

    async def reseal(self, *, only_plain: bool = False, actor: Actor = SYSTEM) -> int:
        """Seals every key under the first key-encryption key (with `only_plain`: the rows carried over in
        plain text by migration 0005). Returns how many rows were rewritten."""
        count = 0
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT k.app_id, k.key_id, k.sealed, a.api_key FROM app_keys k JOIN apps a ON a.id = k.app_id"
                " FOR UPDATE OF k"
            )
            for row in rows:
                plain = row["sealed"].startswith(_LEGACY_PREFIX)
                if (only_plain and not plain) or (not plain and self._keyring.sealed_by_primary(row["sealed"])):
                    continue
                material = _unseal(self._keyring, row["sealed"], row["api_key"], row["key_id"])
                await conn.execute(
                    "UPDATE app_keys SET sealed = $3 WHERE app_id = $1 AND key_id = $2",
                    row["app_id"],
                    row["key_id"],
                    self._keyring.seal(material, app=row["api_key"], key_id=row["key_id"]),
                )
                count += 1
            if count:
                await _audit(conn, actor, "keys.resealed", None, {"keys": count, "kek": self._keyring.primary_id})
        return count

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
            await _audit(
                conn,
                actor,
                "users.revoked",
                app_id,
                {"user_ids": list(in_force), "revoke_before": to_datetime(revoke_before).isoformat()},
            )
            version = await _record(
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
            await _audit(conn, actor, "app.revoked", app_id, {"revoke_before": to_datetime(revoke_before).isoformat()})
            version = await _record(conn, app_id, "app")
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
            version = await _record(conn, app_id, "clear", [row["user_hash"] for row in rows])
            await _audit(
                conn, actor, "users.revocation_cleared", app_id, {"user_ids": [row["user_id"] for row in rows]}
            )
        return [row["user_id"] for row in rows], version

    async def clear_app_revocation(self, app_id: int, *, actor: Actor) -> tuple[bool, int]:
        """Removes the app's revocation; returns whether it had one, and the state version."""
        async with self._connection() as conn, conn.transaction():
            had = await conn.fetchval(
                "UPDATE apps SET revoked_before = NULL, updated_at = now()"
                " WHERE id = $1 AND revoked_before IS NOT NULL RETURNING true",
                app_id,
            )
            await _audit(conn, actor, "app.revocation_cleared", app_id, {"had_revocation": bool(had)})
            version = await _record(conn, app_id, "app")
        return bool(had), version

    async def snapshot(self) -> Snapshot:
        """The whole verification state, read in one consistent transaction."""
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval("SELECT version FROM state_version")
            apps = await _load_apps(conn, self._keyring)
            # Aggregated server-side from an index-only scan in (app, hash) order: a million revocations
            # arrive as two byte strings of big-endian int8s per app, not a million rows, with no sort, and
            # become arrays without a Python int each (two million of them would also leave the heap scattered).
            rows = await conn.fetch(
                "SELECT app_id, string_agg(int8send(user_hash), ''::bytea) AS hashes,"
                f" string_agg(int8send({_MICROS.format('revoked_before')}), ''::bytea) AS times"
                " FROM (SELECT app_id, user_hash, revoked_before FROM user_revocations"
                "  ORDER BY app_id, user_hash) AS r"
                " GROUP BY app_id"
            )
        return Snapshot(
            version=version,
            apps=apps,
            revocations={row["app_id"]: (_int64s(row["hashes"]), _int64s(row["times"])) for row in rows},
        )

    async def changes_since(self, version: int, limit: int = 100) -> list[Change]:
        """The first `limit` changes logged after `version`, in order, with the current state of each changed app."""
        async with self._connection() as conn:
            # Hashes and times as binary int8s (int8send), like the snapshot: a pruning batch or a backlog of
            # changes arrives as int64 arrays, 8 bytes a value, not as a Python int each.
            rows = await conn.fetch(
                "SELECT version, app_id, kind,"
                " (SELECT string_agg(int8send(h), ''::bytea ORDER BY i) FROM unnest(user_hashes)"
                "  WITH ORDINALITY AS u(h, i)) AS user_hashes,"
                " (SELECT string_agg(int8send(t), ''::bytea ORDER BY i) FROM unnest(times)"
                "  WITH ORDINALITY AS u(t, i)) AS times"
                " FROM state_changes WHERE version > $1 ORDER BY version LIMIT $2",
                version,
                limit,
            )
            changed = sorted({row["app_id"] for row in rows if row["kind"] == "app"})
            apps = (
                {app.id: app for app in await _load_apps(conn, self._keyring, "WHERE id = ANY($1::bigint[])", changed)}
                if changed
                else {}
            )
        return [
            Change(
                version=row["version"],
                app_id=row["app_id"],
                kind=row["kind"],
                user_hashes=_int64s(row["user_hashes"] or b""),
                times=_int64s(row["times"] or b""),
                app=apps.get(row["app_id"]) if row["kind"] == "app" else None,
            )
            for row in rows
        ]

    async def prune_revocations(self, leeway: Micros, batch: int = 10_000) -> int | None:
        """Deletes up to `batch` user revocations older than their app's maximum token lifetime (plus leeway).

        No live token can predate them: such a token would have expired. Called until it returns None, it
        prunes them all, a batch a change: a million of them never sit in memory at once, here or in the
        processes that follow the change, and each batch fits the database timeout. Returns the state version
        of the change logged, or None when nothing was left to prune.
        """
        async with self._connection() as conn, conn.transaction():
            # SKIP LOCKED: processes pruning at once take disjoint batches, and each row is returned once.
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
                version = await _record(conn, app_id, "clear", hashes)
                await _audit(conn, SYSTEM, "revocations.pruned", app_id, {"users": len(hashes)})
        return version

    async def audit_events(
        self,
        *,
        api_key: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: Micros | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Recorded changes, newest first, filtered by app, action (a prefix such as `users.`), actor, time."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, api_key, peer, details FROM audit_events"
                " WHERE ($1::text IS NULL OR api_key = $1) AND ($2::text IS NULL OR starts_with(action, $2))"
                " AND ($3::text IS NULL OR actor = $3) AND ($4::timestamptz IS NULL OR at >= $4)"
                " ORDER BY at DESC, id DESC LIMIT $5",
                api_key,
                action,
                actor,
                None if since is None else to_datetime(since),
                limit,
            )
        return [
            AuditEvent(
                id=row["id"],
                at=from_datetime(row["at"]),
                actor=row["actor"],
                action=row["action"],
                api_key=row["api_key"],
                peer=row["peer"],
                details=json.loads(row["details"]),
            )
            for row in rows
        ]

    async def prune_change_log(self, keep_seconds: float = 3600.0, keep_versions: int = 10_000) -> int:
        """Deletes change-log rows that are both old and far behind; a process that far behind reloads."""
        async with self._connection() as conn:
            result: str = await conn.execute(
                "DELETE FROM state_changes WHERE created_at < now() - make_interval(secs => $1::float8)"
                " AND version < (SELECT version FROM state_version) - $2",
                keep_seconds,
                keep_versions,
            )
        return int(result.split()[-1])

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


def _required(value: Any) -> Micros:
    if value is None:
        raise Unavailable("the app vanished during the call; retry", "APP_CHANGED")
    return from_datetime(value)
