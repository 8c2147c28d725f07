"""Apps and their keys: the rows, and the App values made of them (keys unsealed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from authsvc import keys
from authsvc.audit import SYSTEM, Actor
from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.errors import ConfigError, InvalidArgument, NotFound
from authsvc.sealing import Keyring, SealError
from authsvc.storage.audit import audit
from authsvc.storage.base import Queries, record
from authsvc.tokens import DEFAULT_GUEST_TOKEN_TTL_SECONDS, App, KeyPair, Secret

_APP_COLUMNS = (
    "id, api_key, name, algorithm, token_ttl_seconds, auth_checks_disabled,"
    " require_iat, revoked_before, created_at, max_token_lifetime_seconds,"
    " guest_access, guest_token_ttl_seconds, anonymous_access"
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
    {
        "name",
        "algorithm",
        "token_ttl_seconds",
        "max_token_lifetime_seconds",
        "auth_checks_disabled",
        "require_iat",
        "guest_access",
        "guest_token_ttl_seconds",
        "anonymous_access",
    }
)


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
        guest_access=row["guest_access"],
        guest_token_ttl_seconds=row["guest_token_ttl_seconds"],
        anonymous_access=row["anonymous_access"],
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


async def load_apps(conn: asyncpg.Connection, keyring: Keyring, where: str = "", *args: Any) -> list[App]:
    """The apps that `where` (an SQL condition on apps, with `args`) selects, oldest first, with their live keys."""
    rows = await conn.fetch(f"SELECT {_APP_COLUMNS} FROM apps {where} ORDER BY id", *args)
    key_rows = await conn.fetch(_KEYS_QUERY, [row["id"] for row in rows])
    by_app: dict[int, list[asyncpg.Record]] = {}
    for key in key_rows:
        by_app.setdefault(key["app_id"], []).append(key)
    return [_build_app(row, by_app.get(row["id"], []), keyring) for row in rows]


class AppQueries(Queries):
    """Creating, reading and changing apps and their keys; every change is logged and audited."""

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
        guest_access: bool = False,
        guest_token_ttl_seconds: int = DEFAULT_GUEST_TOKEN_TTL_SECONDS,
        anonymous_access: bool = False,
        actor: Actor,
    ) -> App:
        """Creates an app with its API secret (kid `key_id`) and, for EdDSA/ES256, a (kid, private PEM) pair.

        Raises InvalidArgument when the API key is taken.
        """
        async with self._connection() as conn, conn.transaction():
            try:
                app_id = await conn.fetchval(
                    "INSERT INTO apps (api_key, name, algorithm, token_ttl_seconds,"
                    " auth_checks_disabled, require_iat, max_token_lifetime_seconds,"
                    " guest_access, guest_token_ttl_seconds, anonymous_access)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    api_key,
                    name,
                    algorithm,
                    token_ttl_seconds,
                    auth_checks_disabled,
                    require_iat,
                    max_token_lifetime_seconds,
                    guest_access,
                    guest_token_ttl_seconds,
                    anonymous_access,
                )
            except asyncpg.UniqueViolationError:
                raise InvalidArgument(f"an app with API key {api_key} exists", "APP_EXISTS") from None
            await self._insert_key(conn, app_id, api_key, key_id, "secret", "HS256", api_secret)
            if key_pair is not None:
                await self._insert_key(conn, app_id, api_key, key_pair[0], "key_pair", algorithm, key_pair[1])
            await record(conn, app_id, "app")
            await audit(
                conn,
                actor,
                "app.created",
                app_id,
                {
                    "name": name,
                    "algorithm": algorithm,
                    "guest_access": guest_access,
                    "guest_token_ttl_seconds": guest_token_ttl_seconds,
                    "anonymous_access": anonymous_access,
                },
            )
            (app,) = await load_apps(conn, self._keyring, "WHERE id = $1", app_id)
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
            found = await load_apps(conn, self._keyring, "WHERE api_key = $1", api_key)
        return found[0] if found else None

    async def list_apps(self) -> list[App]:
        """Every app, oldest first."""
        async with self._connection() as conn:
            return await load_apps(conn, self._keyring)

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
            await audit(
                conn, actor, "api_secret.rotated", app.id, {"key_id": new_key_id, "overlap_seconds": overlap / 1e6}
            )
            return await record(conn, app.id, "app")

    async def add_key_pair(self, app: App, *, key_id: str, private_pem: str, signs_from: Micros, actor: Actor) -> int:
        """Publishes a new key pair at once; it signs from `signs_from`. Returns the state version."""
        async with self._connection() as conn, conn.transaction():
            await self._insert_key(
                conn, app.id, app.api_key, key_id, "key_pair", app.algorithm, private_pem, signs_from=signs_from
            )
            await audit(
                conn,
                actor,
                "key.rotated",
                app.id,
                {"key_id": key_id, "signs_from": to_datetime(signs_from).isoformat()},
            )
            return await record(conn, app.id, "app")

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
            await audit(conn, actor, "key.retired", app.id, {"key_id": key_id})
            return await record(conn, app.id, "app")

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
            await audit(conn, actor, "app.updated", app.id, details)
            version = await record(conn, app.id, "app")
            (updated,) = await load_apps(conn, self._keyring, "WHERE id = $1", app.id)
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
                await audit(conn, actor, "keys.resealed", None, {"keys": count, "kek": self._keyring.primary_id})
        return count
