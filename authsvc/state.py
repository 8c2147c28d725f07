"""The in-memory verification state of one process: apps, keys, settings and revocations.

VerifyToken reads only this. Every change is written to PostgreSQL with a version (see store.py); this module
keeps the process's copy current, reading through the store and doing no I/O of its own:

- at start, a full snapshot;
- on a notification (Store.listen), the changes logged since the local version, applied in version order;
- after a write of this process, the same catch-up before the RPC answers (read-your-writes);
- every `check_interval`, a version check that catches up whatever a lost notification missed;
- a lost listener connection is opened again at once (with backoff while the database is away), then catches up;
- a gap in the change log (pruned history) falls back to a full reload.

The state is fresh as of the last successful contact with the database. Past `max_staleness` without one,
`check_fresh` raises Unavailable: verification fails closed rather than trusting revocations it may have missed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from authsvc.clock import Micros
from authsvc.errors import AuthsvcError, Unavailable
from authsvc.revocations import RevocationSet
from authsvc.store import Change, Snapshot, Store
from authsvc.tokens import App

log = logging.getLogger(__name__)

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


StateListener = Callable[[Change | None], None]
"""Told of each change as it is applied, and (with None) of each full reload; it must not raise."""


@dataclass
class _AppEntry:
    app: App
    revocations: RevocationSet = field(default_factory=RevocationSet)
    tokens: dict[str, Micros] = field(default_factory=dict)
    """Token revocations (RevokeToken): jti → when the token was revoked."""


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
        self._task: asyncio.Task[None] | None = None
        self._last_prune = monotonic()
        self._applied_since_trim = 0
        self._listeners: list[StateListener] = []  # watch hook
        self.token_revocations_held = 0
        """Token revocations held, over every app: while 0, verification looks none up (the usual case)."""

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

    def revoking(self, app_id: int, user_id: str, issued_at: Micros) -> Micros | None:
        """The user's revocation time when it may revoke a token issued at `issued_at`, else None: the verifier's
        look-up (verifier.RevocationLookup), which skips the user for a token newer than every revocation."""
        entry = self._by_id.get(app_id)
        return None if entry is None else entry.revocations.revoking(user_id, issued_at)

    def token_revoked_at(self, app_id: int, jti: str) -> Micros | None:
        """When the app's token with this jti was revoked, or None."""
        entry = self._by_id.get(app_id)
        if entry is None or not entry.tokens:
            return None
        return entry.tokens.get(jti)

    def token_revocations(self, app_id: int) -> dict[str, Micros] | None:
        """The app's token revocations (watch hook: authsvc.watch copies them into a snapshot; later changes alter
        this dict), or None for an unknown app."""
        entry = self._by_id.get(app_id)
        return None if entry is None else entry.tokens

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
            by_id[app.id] = _AppEntry(
                app,
                RevocationSet(*snapshot.revocations.get(app.id, ((), ()))),
                snapshot.token_revocations.get(app.id, {}),
            )
        self._by_id = by_id
        self._by_key = {entry.app.api_key: entry for entry in by_id.values()}
        self.token_revocations_held = sum(len(entry.tokens) for entry in by_id.values())
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
                    self.token_revocations_held -= len(entry.tokens)
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
        elif entry is not None and change.kind == "revoke_tokens":
            held = len(entry.tokens)
            entry.tokens.update(zip(change.jtis, change.times, strict=True))
            self.token_revocations_held += len(entry.tokens) - held
        elif entry is not None and change.kind == "clear_tokens":
            held = len(entry.tokens)
            for jti in change.jtis:
                entry.tokens.pop(jti, None)
            self.token_revocations_held += len(entry.tokens) - held
        self._applied_since_trim += len(change.user_hashes) + len(change.jtis)
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
            except AuthsvcError as exc:
                log.warning("cannot follow state changes (%s); retrying in %.1fs", exc, backoff)
            except Exception:
                # A bug, logged in full; following goes on (a stopped follower would fail every call closed).
                log.exception("unexpected error following state changes; retrying in %.1fs", backoff)
            else:
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _follow_connection(self) -> None:
        """Catches up on every notification and every check, until the listener's connection is lost."""
        async with self._store.listen(self._dsn) as listener:
            await self.catch_up()  # whatever happened while no one listened
            while not listener.lost:
                await listener.wait(self._check_interval)
                await self.catch_up()
                if self._monotonic() - self._last_prune >= self._prune_interval:
                    self._last_prune = self._monotonic()
                    await self.prune()

    async def prune(self) -> bool:
        """A pruning pass (Store.prune), applying each batch, and whatever else changed meanwhile, before the
        next; False when another process was running one, so this one did nothing."""
        pruned = False

        async def apply(version: int) -> None:
            nonlocal pruned
            await self.catch_up(version)
            pruned = True

        ran = await self._store.prune(self._dsn, self._leeway, apply)
        if pruned:
            release_free_memory()
        return ran
