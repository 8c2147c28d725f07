"""Reading the state: a snapshot at one version, the changes logged since a version, and their announcements."""

from __future__ import annotations

import asyncio
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from authsvc.storage.apps import load_apps
from authsvc.storage.base import CHANNEL, Queries
from authsvc.tokens import App

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
    jtis: list[str] = field(default_factory=list)
    """For kinds 'revoke_tokens' (with `times`) and 'clear_tokens': the tokens' jtis."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole verification state at one version."""

    version: int
    apps: list[App]
    revocations: dict[int, tuple[array[int], array[int]]]
    """Per app id: user hashes (sorted) and their revocation times, in microseconds, as int64 arrays."""
    token_revocations: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per app id: jti → when the token was revoked, in microseconds."""


def _int64s(big_endian: bytes) -> array[int]:
    """An int64 array from PostgreSQL's binary int8s (int8send): big-endian, 8 bytes each."""
    values = array("q")
    values.frombytes(big_endian)
    if sys.byteorder == "little":
        values.byteswap()
    return values


class Listener:
    """Notifications of new state versions on one connection (Store.listen), and whether it was lost."""

    def __init__(self) -> None:
        self._notified = asyncio.Event()
        self._lost = False

    @property
    def lost(self) -> bool:
        """True once the connection is gone: no notification arrives any more."""
        return self._lost

    async def wait(self, at_most: float) -> None:
        """Returns at a notification (or one that came since the last wait), at the connection's loss, or after
        `at_most` seconds, whichever comes first."""
        try:
            # Not wait_for: on 3.11 it can swallow a cancellation that lands with its result (CPython
            # gh-86296), and stopping the follower would then wait forever.
            async with asyncio.timeout(at_most):
                await self._notified.wait()
        except TimeoutError:
            pass
        self._notified.clear()

    def notify(self) -> None:
        """A new state version was announced."""
        self._notified.set()

    def lose(self) -> None:
        """The connection is gone."""
        self._lost = True
        self._notified.set()  # wakes a waiter at once, to reconnect


class ChangeQueries(Queries):
    """What a process's in-memory state is loaded and kept current from."""

    async def snapshot(self) -> Snapshot:
        """The whole verification state, read in one consistent transaction."""
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval("SELECT version FROM state_version")
            apps = await load_apps(conn, self._keyring)
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
            token_rows = await conn.fetch(
                f"SELECT app_id, jti, {_MICROS.format('revoked_before')} AS revoked_at FROM token_revocations"
            )
        token_revocations: dict[int, dict[str, int]] = {}
        for row in token_rows:
            token_revocations.setdefault(row["app_id"], {})[row["jti"]] = row["revoked_at"]
        return Snapshot(
            version=version,
            apps=apps,
            revocations={row["app_id"]: (_int64s(row["hashes"]), _int64s(row["times"])) for row in rows},
            token_revocations=token_revocations,
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
                "  WITH ORDINALITY AS u(t, i)) AS times, jtis"
                " FROM state_changes WHERE version > $1 ORDER BY version LIMIT $2",
                version,
                limit,
            )
            changed = sorted({row["app_id"] for row in rows if row["kind"] == "app"})
            apps = (
                {app.id: app for app in await load_apps(conn, self._keyring, "WHERE id = ANY($1::bigint[])", changed)}
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
                jtis=list(row["jtis"]),
            )
            for row in rows
        ]

    @asynccontextmanager
    async def listen(self, dsn: str) -> AsyncIterator[Listener]:
        """Announcements of new state versions, on a dedicated connection (LISTEN holds it for good, so not a
        pooled one). Raises Unavailable when the database cannot be reached."""
        listener = Listener()
        async with self._dedicated(dsn) as conn:
            conn.add_termination_listener(lambda _: listener.lose())
            async with self._connection(conn):
                await conn.add_listener(CHANNEL, lambda *_: listener.notify())
            yield listener
