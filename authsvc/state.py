"""The in-memory verification state of one process: apps, keys, settings and revocations.

VerifyToken reads only this. Every change is written to PostgreSQL with a version (see store.py); this module
keeps the process's copy current:

- at start, a full snapshot;
- on `NOTIFY authsvc_state`, the changes logged since the local version, applied in version order;
- after a write of this process, the same catch-up before the RPC answers (read-your-writes);
- every `check_interval`, a version check that catches up whatever a lost notification missed;
- a gap in the change log (pruned history) or a lost listener falls back to a full reload.

The state is fresh as of the last successful contact with the database. Past `max_staleness` without one,
`check_fresh` raises Unavailable: verification fails closed rather than trusting revocations it may have missed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg

from authsvc.clock import Micros
from authsvc.errors import AuthsvcError, Unavailable
from authsvc.store import CHANNEL, Change, Snapshot, Store, unreachable
from authsvc.tokens import App, user_hash

log = logging.getLogger(__name__)

_ABSENT = object()
_MEMO_SIZE = 4096
_CHANGES_PER_READ = 100
"""Changes read from the log at a time: a process far behind catches up in bounded steps."""
_TRIM_AFTER = 65_536
"""User revocations applied, after which free heap memory is handed back to the system."""


def _malloc_trim() -> Callable[[int], int] | None:
    path = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(path), "malloc_trim", None) if path else None  # glibc only
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hands free heap pages back to the system (glibc's malloc_trim; nothing elsewhere).

    glibc keeps what Python frees in its heap, so a process that built and dropped tens of megabytes (a
    snapshot's byte strings, the arrays a merge replaced, a pruning batch) would otherwise stay that much larger
    for good. `make bench` (scenario m) measures it.
    """
    if _TRIM is not None:
        _TRIM(0)


class RevocationSet:
    """User revocations of one app: user hash → revoked-before, in 16 bytes a user.

    A sorted pair of int64 arrays holds the bulk; recent changes sit in a small dict (None marks a removal)
    that is merged into the arrays once it grows past an eighth of them, so merging stays O(n) amortized.
    The answers for the users last asked about are remembered by user id until the set changes: hashing a
    user id and a binary search through megabytes cost a chat's active users more than a dict look-up.
    """

    __slots__ = ("_keys", "_times", "_recent", "_answers")

    def __init__(self, keys: Iterable[int] = (), times: Iterable[int] = ()) -> None:
        # int64 arrays (a snapshot's) are taken over, not copied: 16 MB a million revocations.
        self._keys = keys if isinstance(keys, array) and keys.typecode == "q" else array("q", keys)
        self._times = times if isinstance(times, array) and times.typecode == "q" else array("q", times)
        self._recent: dict[int, int | None] = {}
        self._answers: dict[str, Micros | None] = {}
        if any(a > b for a, b in zip(self._keys, self._keys[1:], strict=False)):
            # The snapshot query delivers hashes in order; this only guards against a plan that does not.
            pairs = sorted(zip(self._keys, self._times, strict=True))
            self._keys = array("q", (k for k, _ in pairs))
            self._times = array("q", (t for _, t in pairs))

    def get(self, key: int) -> Micros | None:
        """The revocation time of a user hash, or None."""
        hit = self._recent.get(key, _ABSENT)
        if hit is not _ABSENT:
            return hit  # type: ignore[return-value]
        keys = self._keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self._times[i]
        return None

    def get_user(self, user_id: str) -> Micros | None:
        """The revocation time of a user, or None (remembered for the last few thousand users asked about)."""
        answers = self._answers
        answer = answers.get(user_id, _ABSENT)
        if answer is not _ABSENT:
            return answer  # type: ignore[return-value]
        answer = self.get(user_hash(user_id))
        if len(answers) >= _MEMO_SIZE:
            answers.clear()
        answers[user_id] = answer
        return answer

    def set(self, key: int, revoked_before: Micros) -> None:
        """Records a user's revocation time (as the database has it in force)."""
        self._answers.clear()
        self._recent[key] = revoked_before
        self._maybe_merge()

    def remove(self, key: int) -> None:
        """Forgets a user's revocation."""
        self._answers.clear()
        self._recent[key] = None
        self._maybe_merge()

    def __bool__(self) -> bool:
        """False only when certainly empty, without merging (cheap enough for the hot path)."""
        return bool(self._keys) or bool(self._recent)

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    def arrays(self) -> tuple[array[int], array[int]]:
        """The user hashes (ascending) and their revocation times, merged: arrays a later change replaces, never
        alters, so a reader may keep them as they are now (authsvc.watch sends them as a snapshot)."""
        self._merge()
        return self._keys, self._times

    def nbytes(self) -> int:
        """Bytes held by the arrays (the dict of recent changes aside)."""
        return self._keys.itemsize * len(self._keys) + self._times.itemsize * len(self._times)

    def _maybe_merge(self) -> None:
        # A sixty-fourth: a merge copies the arrays, so amortized cost stays O(1) a change (64 copies for a
        # million changes to a million revocations), while the dict (~100 bytes an entry, ints included, against
        # 16 in the arrays) stays small: at an eighth it held as much memory as the arrays themselves.
        if len(self._recent) > max(1024, len(self._keys) // 64):
            self._merge()

    def _merge(self) -> None:
        if not self._recent:
            return
        keys, times = self._keys, self._times
        merged_keys, merged_times = array("q"), array("q")
        start = 0
        for key, value in sorted(self._recent.items()):
            i = bisect_left(keys, key, start)
            merged_keys.extend(keys[start:i])
            merged_times.extend(times[start:i])
            if i < len(keys) and keys[i] == key:
                i += 1
            if value is not None:
                merged_keys.append(key)
                merged_times.append(value)
            start = i
        merged_keys.extend(keys[start:])
        merged_times.extend(times[start:])
        self._keys, self._times, self._recent = merged_keys, merged_times, {}


StateListener = Callable[[Change | None], None]
"""Told of each change as it is applied, and (with None) of each full reload; it must not raise."""


@dataclass
class _AppEntry:
    app: App
    revocations: RevocationSet = field(default_factory=RevocationSet)


class State:
    """One process's copy of what verification needs, kept current from PostgreSQL."""

    def __init__(
        self,
        store: Store,
        dsn: str,
        *,
        max_staleness: float = 30.0,
        check_interval: float = 2.0,
        prune_interval: float = 60.0,
        leeway: Micros = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._dsn = dsn
        self._max_staleness = max_staleness
        self._check_interval = check_interval
        self._prune_interval = prune_interval
        self._leeway = leeway
        self._monotonic = monotonic
        self._by_key: dict[str, _AppEntry] = {}
        self._by_id: dict[int, _AppEntry] = {}
        self.version = 0
        self._fresh_at = -float("inf")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = monotonic()
        self._applied_since_trim = 0
        self._listeners: list[StateListener] = []  # watch hook

    # -- reading (the hot path: no I/O) --

    def app(self, api_key: str) -> App | None:
        """The app with this API key, as of the local state."""
        entry = self._by_key.get(api_key)
        return None if entry is None else entry.app

    def apps(self) -> list[App]:
        """Every app, as of the local state."""
        return [entry.app for entry in self._by_id.values()]

    def user_revoked_before(self, app_id: int, user_id: str) -> Micros | None:
        """The user's revocation time, or None."""
        entry = self._by_id.get(app_id)
        if entry is None or not entry.revocations:  # no hashing for an app without user revocations
            return None
        return entry.revocations.get_user(user_id)

    def staleness(self) -> float:
        """Seconds since the state was last confirmed current against the database."""
        return max(0.0, self._monotonic() - self._fresh_at)

    def fresh(self) -> bool:
        """True while the state is at most the maximum staleness old: what verification may rely on."""
        return self._monotonic() - self._fresh_at <= self._max_staleness

    def check_fresh(self) -> None:
        """Raises Unavailable when the state is older than the maximum staleness (fail closed)."""
        if not self.fresh():
            raise Unavailable(
                f"authsvc has not reached its database for over {self._max_staleness:.0f}s and cannot vouch "
                "for revocations; retry later",
                "STATE_STALE",
            )

    def user_revocations(self, app_id: int) -> RevocationSet | None:
        """The app's user revocations (watch hook: authsvc.watch snapshots them), or None for an unknown app."""
        entry = self._by_id.get(app_id)
        return None if entry is None else entry.revocations

    def subscribe(self, listener: StateListener) -> Callable[[], None]:
        """Watch hook: `listener` is told of every change applied and every reload, from now until the returned
        function is called. authsvc.watch fans them out to the WatchState streams."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def revocation_count(self) -> int:
        """User revocations held in memory, over all apps."""
        return sum(len(entry.revocations) for entry in self._by_id.values())

    # -- keeping current --

    async def find_app(self, api_key: str) -> App | None:
        """The app with this API key; on a miss, catches up once first (an app another process just made)."""
        app = self.app(api_key)
        if app is None:
            await self.catch_up()
            app = self.app(api_key)
        return app

    async def load(self) -> None:
        """Replaces the whole state with a snapshot of the database."""
        async with self._lock:
            await self._reload()

    async def catch_up(self, version: int | None = None) -> None:
        """Applies the changes logged since the local version (at least up to `version`, when given)."""
        if version is not None and self.version >= version:
            return
        async with self._lock:
            if version is not None and self.version >= version:
                return
            started = self._monotonic()
            while True:
                changes = await self._store.changes_since(self.version, _CHANGES_PER_READ)
                if changes and changes[0].version != self.version + 1:
                    log.info("state change log has a gap after version %d; reloading", self.version)
                    await self._reload()
                    return
                for change in changes:
                    self._apply(change)
                if len(changes) < _CHANGES_PER_READ:
                    break
            self._fresh_at = started
            if self._applied_since_trim >= _TRIM_AFTER:
                release_free_memory()
                self._applied_since_trim = 0

    async def start(self) -> None:
        """Loads the state and starts following changes."""
        await self.load()
        self._task = asyncio.create_task(self._follow(), name="authsvc-state")

    async def stop(self) -> None:
        """Stops following changes."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _reload(self) -> None:
        started = self._monotonic()
        snapshot: Snapshot = await self._store.snapshot()
        by_id: dict[int, _AppEntry] = {}
        for app in snapshot.apps:
            by_id[app.id] = _AppEntry(app, RevocationSet(*snapshot.revocations.get(app.id, ((), ()))))
        self._by_id = by_id
        self._by_key = {entry.app.api_key: entry for entry in by_id.values()}
        self.version = snapshot.version
        self._fresh_at = started
        del snapshot, by_id
        release_free_memory()  # the snapshot's byte strings and the previous state's arrays
        self._applied_since_trim = 0
        for listener in self._listeners:  # watch hook: after the swap, so State.version is the snapshot's
            listener(None)

    def _apply(self, change: Change) -> None:
        entry = self._by_id.get(change.app_id)
        if change.kind == "app":
            if change.app is None:  # deleted
                if entry is not None:
                    del self._by_id[change.app_id]
                    self._by_key.pop(entry.app.api_key, None)
            elif entry is None:
                entry = _AppEntry(change.app)
                self._by_id[change.app_id] = entry
                self._by_key[change.app.api_key] = entry
            else:
                entry.app = change.app
        elif entry is not None and change.kind == "revoke":
            for key, revoked_before in zip(change.user_hashes, change.times, strict=True):
                entry.revocations.set(key, revoked_before)
        elif entry is not None and change.kind == "clear":
            for key in change.user_hashes:
                entry.revocations.remove(key)
        self._applied_since_trim += len(change.user_hashes)
        self.version = change.version
        for listener in self._listeners:  # watch hook
            listener(change)

    async def _follow(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._follow_connection()
                log.warning("lost the state listener connection; reconnecting")
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, AuthsvcError) or unreachable(exc):
                    log.warning("cannot follow state changes (%s); retrying in %.1fs", type(exc).__name__, backoff)
                else:  # a bug, logged in full; following goes on (a stopped follower would fail every call closed)
                    log.exception("unexpected error following state changes; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _follow_connection(self) -> None:
        """LISTENs on one connection and catches up on every wake-up or check, until the connection is lost."""
        lost = asyncio.Event()
        timeout = self._store.timeout
        conn = await asyncpg.connect(self._dsn, timeout=timeout, command_timeout=timeout)
        try:
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            conn.add_termination_listener(lambda _: lost.set())
            await self.catch_up()  # whatever happened while no one listened
            while not lost.is_set():
                try:
                    # Not wait_for: on 3.11 it can swallow a cancellation that lands with its result
                    # (CPython gh-86296), and stop() would then wait forever.
                    async with asyncio.timeout(self._check_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                await self.catch_up()
                if self._monotonic() - self._last_prune >= self._prune_interval:
                    self._last_prune = self._monotonic()
                    await self.prune()
        finally:
            if not conn.is_closed():
                conn.terminate()

    async def prune(self) -> None:
        """Deletes user revocations no live token can predate, and old change-log rows."""
        pruned = False
        while (version := await self._store.prune_revocations(self._leeway)) is not None:
            # Between batches, so that this process applies other processes' changes meanwhile too.
            await self.catch_up(version)
            pruned = True
        if pruned:
            release_free_memory()
        await self._store.prune_change_log()
