"""WatchState: one process's verification state, streamed to the local verifiers of many callers.

The hub hears of every change the process's State applies, and of every full reload (State.subscribe). One task
takes them in version order, encodes each change once and offers the message to the watchers of its app; a
second task offers every watcher a heartbeat each `watch_heartbeat` seconds. Each watcher has a bounded queue
(`watch_buffer` messages): one that lets it fill, because its client reads too slowly, is cut off with
RESOURCE_EXHAUSTED (reason WATCHER_TOO_SLOW) rather than allowed to grow the server's memory.

A new watcher gets a snapshot of its app taken from memory at the state's version; a watcher that resumes with
`from_version` gets the changes after it from the hub's history of recent changes, as long as it reaches back
that far (it starts when the hub does, and a reload of the state clears it); otherwise a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from authsvc import watch_wire
from authsvc.clock import MICROS_PER_SECOND, Clock
from authsvc.config import Settings
from authsvc.errors import NotFound, ResourceExhausted, Unavailable
from authsvc.state import State
from authsvc.store import Change, Store
from authsvc.tokens import App, KeyPair
from authsvc.v1 import auth_service_pb2 as pb

log = logging.getLogger(__name__)

_HISTORY_CHANGES = 10_000
"""Recent changes the hub keeps for watchers that resume."""
_HISTORY_USERS = 200_000
"""... and at most this many user hashes in them (pruning batches are 10,000 each)."""


class _Signal:
    """A marker in a watcher's queue, in place of a message."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_CUT_OFF = _Signal("cut off")
_RESYNC = _Signal("resync")
_GONE = _Signal("app gone")

_Item = pb.WatchStateResponse | _Signal


@dataclass(eq=False)
class _Watcher:
    app_id: int
    queue: asyncio.Queue[_Item]
    after: int = 0
    """The version the watcher holds (or will, once its snapshot is sent): older changes are not offered."""
    sent: int = 0
    """The version of the last message yielded."""


@dataclass(eq=False)
class _Entry:
    """A change the hub heard of, and its message once encoded (only when some watcher needed it)."""

    change: Change
    retired: tuple[KeyPair, ...] = ()
    message: pb.WatchStateResponse | _Signal | None = None

    @property
    def version(self) -> int:
        return self.change.version


@dataclass(eq=False)
class _Reload:
    version: int
    apps: dict[int, App] = field(default_factory=dict)


class WatchHub:
    """Fans the state's changes out to WatchState streams; create it with the state loaded, `close()` it at stop."""

    def __init__(self, state: State, store: Store, settings: Settings, clock: Clock) -> None:
        self._state = state
        self._store = store
        self._clock = clock
        self._issuer = settings.issuer
        self._leeway = round(settings.clock_leeway * MICROS_PER_SECOND)
        self._heartbeat = settings.watch_heartbeat
        self._buffer = settings.watch_buffer
        self._watchers: dict[int, set[_Watcher]] = {}
        self._all: set[_Watcher] = set()
        self._history: deque[_Entry] = deque()
        self._history_users = 0
        self._events: asyncio.Queue[Change | _Reload] = asyncio.Queue()
        self._told_all = (state.staleness(), time.monotonic())
        """The state's staleness when the hub had last offered every change the state held, and when (monotonic)."""
        # From here on, synchronously: the version and apps the hub starts from, then every change after them.
        self.version = state.version
        """Every change up to this version has been offered to the watchers."""
        self.floor = state.version
        """The oldest `from_version` the history can serve."""
        self._apps = {app.id: app for app in state.apps()}
        self._unsubscribe = state.subscribe(self._heard)
        self._closed = False
        self._tasks = [
            asyncio.create_task(self._follow(), name="authsvc-watch"),
            asyncio.create_task(self._beat(), name="authsvc-watch-heartbeat"),
        ]

    def watchers(self) -> int:
        """Watchers connected now."""
        return len(self._all)

    async def close(self) -> None:
        """Stops hearing of changes; streams still open get nothing more (the server's stop ends them)."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    def _heard(self, change: Change | None) -> None:
        # Called by State, synchronously, as it applies a change or ends a reload.
        if change is None:
            self._events.put_nowait(_Reload(self._state.version, {app.id: app for app in self._state.apps()}))
        else:
            self._events.put_nowait(change)

    async def _follow(self) -> None:
        while True:
            event = await self._events.get()
            try:
                if isinstance(event, _Reload):
                    self._reloaded(event)
                else:
                    await self._changed(event)
            except Exception:  # a bug: logged; the watchers resync rather than miss a change
                log.exception("cannot fan out state version %d to watchers; they resync", event.version)
                self._reloaded(_Reload(self._state.version, {app.id: app for app in self._state.apps()}))

    async def _changed(self, change: Change) -> None:
        entry = _Entry(change)
        if change.kind == "app":
            previous = self._apps.pop(change.app_id, None)
            if change.app is not None:
                self._apps[change.app_id] = change.app
                if previous is not None:
                    kept = {pair.key_id for pair in change.app.key_pairs}
                    entry.retired = tuple(pair for pair in previous.key_pairs if pair.key_id not in kept)
        # Encoded only for an app someone watches; a watcher that comes meanwhile is offered it too.
        while self._watchers.get(change.app_id) and entry.message is None:
            entry.message = await self._encode(entry)
        self._remember(entry)
        if entry.message is not None:
            for watcher in tuple(self._watchers.get(change.app_id, ())):
                if change.version > watcher.after:
                    self._offer(watcher, entry.message)
        self.version = change.version
        self._caught_up()

    def _reloaded(self, reload: _Reload) -> None:
        # The state was replaced wholesale (a gap in the change log): what it missed is unknown, so the history
        # cannot serve anything before it, and every watcher gets a fresh snapshot.
        self._history.clear()
        self._history_users = 0
        self.floor = self.version = max(self.version, reload.version)
        self._apps = reload.apps
        for watcher in tuple(self._all):
            self._offer(watcher, _RESYNC)
        self._caught_up()

    def _caught_up(self) -> None:
        """Notes the state's staleness when every change it holds has just been offered to the watchers."""
        if self.version >= self._state.version:
            self._told_all = (self._state.staleness(), time.monotonic())

    def _remember(self, entry: _Entry) -> None:
        self._history.append(entry)
        self._history_users += len(entry.change.user_hashes) + len(entry.change.jtis)
        while len(self._history) > _HISTORY_CHANGES or self._history_users > _HISTORY_USERS:
            dropped = self._history.popleft()
            self._history_users -= len(dropped.change.user_hashes) + len(dropped.change.jtis)
            self.floor = dropped.version

    async def _encode(self, entry: _Entry) -> pb.WatchStateResponse | _Signal:
        change = entry.change
        message = pb.WatchStateResponse(version=change.version)
        if change.kind == "app":
            if change.app is None:
                return _GONE
            message.change.app.CopyFrom(self._app_state(change.app, entry.retired))
        elif change.kind == "revoke":
            try:
                user_ids = await self._store.revoked_user_ids(change.app_id, change.user_hashes)
            except Unavailable:  # the hashes are what verification needs; the ids only name them
                user_ids = []
            revoked = message.change.revoked
            revoked.user_hashes.extend(change.user_hashes)
            revoked.revoked_before.extend(change.times)
            revoked.user_ids.extend(user_ids)
        elif change.kind == "revoke_tokens":
            message.change.tokens_revoked.jtis.extend(change.jtis)
            message.change.tokens_revoked.revoked_before.extend(change.times)
        elif change.kind == "clear_tokens":
            message.change.tokens_cleared.jtis.extend(change.jtis)
        else:
            message.change.cleared.user_hashes.extend(change.user_hashes)
        # After the await: what the message may claim as it goes out, not as it was begun.
        message.staleness.CopyFrom(self._staleness(change.version))
        return message

    def _app_state(self, app: App, retired: tuple[KeyPair, ...] = ()) -> pb.AppState:
        return watch_wire.app_state(app, now=self._clock(), leeway=self._leeway, issuer=self._issuer, retired=retired)

    def _offer(self, watcher: _Watcher, item: _Item) -> None:
        try:
            watcher.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("a WatchState watcher of app %d fell %d messages behind: cut off", watcher.app_id, self._buffer)
            self._forget(watcher)
            while not watcher.queue.empty():  # its backlog is freed now, not when its client reads again
                watcher.queue.get_nowait()
            watcher.queue.put_nowait(_CUT_OFF)

    def _forget(self, watcher: _Watcher) -> None:
        self._all.discard(watcher)
        watchers = self._watchers.get(watcher.app_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.app_id]

    async def _beat(self) -> None:
        interval = watch_wire.seconds_duration(self._heartbeat)
        while True:
            await asyncio.sleep(self._heartbeat)
            if not self._all:
                continue
            beat = pb.WatchStateResponse(
                version=self.version,
                staleness=self._staleness(self.version),
                heartbeat=pb.Heartbeat(interval=interval),
            )
            for watcher in tuple(self._all):
                if beat.version >= watcher.after:
                    self._offer(watcher, beat)

    def _staleness(self, version: int) -> duration_pb2.Duration:
        """The staleness a message at `version` may claim. At the state's own version, the state's: the message
        says all there is. Below it (changes still wait to be offered: the hub behind the state, say as it
        catches up after a database outage), the staleness of the last moment the hub had offered every change,
        grown by the time since: a heartbeat or a change must not vouch for a revocation it does not carry."""
        if version >= self._state.version:
            self._caught_up()
            return watch_wire.seconds_duration(self._state.staleness())
        staleness, told_at = self._told_all
        return watch_wire.seconds_duration(staleness + time.monotonic() - told_at)

    def _snapshot(self, app: App, *, fresh: bool) -> tuple[int, Iterator[pb.WatchStateResponse] | None]:
        """The app's snapshot as of the state's version, taken at once (no await): its version and messages, made
        as they are sent, or None when the app no longer exists."""
        current = self._state.app(app.api_key)
        revocations = self._state.user_revocations(app.id)
        token_revocations = self._state.token_revocations(app.id)
        if current is None or revocations is None or token_revocations is None:
            return self._state.version, None
        hashes, times = revocations.arrays()
        revoked_tokens = list(token_revocations.items())  # a copy: later changes alter the state's dict
        version = self._state.version
        staleness = watch_wire.seconds_duration(self._state.staleness())
        # The arrays are replaced by later changes, never altered: the chunks are cut from them as they go.
        return version, watch_wire.snapshot_chunks(
            self._app_state(current),
            hashes,
            times,
            version=version,
            staleness=staleness,
            fresh=fresh,
            revoked_tokens=revoked_tokens,
        )

    async def watch(self, app: App, from_version: int | None) -> AsyncIterator[pb.WatchStateResponse]:
        """The stream of one watcher of `app`: a snapshot or the changes after `from_version`, then every change
        and heartbeat, until the client goes or falls too far behind (ResourceExhausted)."""
        self._state.check_fresh()  # a stale snapshot would be trusted for up to the verifier's max_lag
        if from_version is not None and from_version > self._state.version:
            await self._state.catch_up()  # a watcher that was on a replica further ahead
        watcher = _Watcher(app.id, asyncio.Queue(self._buffer))
        # From here to the registration, no await: the snapshot or the replay joins the live changes exactly.
        replay: list[_Entry] = []
        first: Iterator[pb.WatchStateResponse] = iter(())
        if from_version is not None and self.floor <= from_version <= self.version:
            replay = [e for e in self._history if e.change.app_id == app.id and e.version > from_version]
            watcher.after = watcher.sent = self.version
        else:
            watcher.after, snapshot = self._snapshot(app, fresh=from_version is not None)
            if snapshot is None:
                raise NotFound("no app has this API key", "APP_NOT_FOUND")
            first, watcher.sent = snapshot, watcher.after
        self._watchers.setdefault(app.id, set()).add(watcher)
        self._all.add(watcher)
        try:
            for message in first:
                yield message
            for entry in replay:
                if entry.message is None:
                    entry.message = await self._encode(entry)
                if isinstance(entry.message, pb.WatchStateResponse):
                    yield entry.message
            replay = []  # not held for the stream's life
            while True:
                item = await watcher.queue.get()
                if isinstance(item, pb.WatchStateResponse):
                    if item.version >= watcher.sent:  # a heartbeat older than a snapshot just sent: skipped
                        watcher.sent = item.version
                        yield item
                elif item is _RESYNC:
                    version, chunks = self._snapshot(app, fresh=True)
                    if chunks is None:
                        raise NotFound("the app no longer exists", "APP_NOT_FOUND")
                    watcher.after = watcher.sent = version
                    for message in chunks:
                        yield message
                elif item is _GONE:
                    raise NotFound("the app no longer exists", "APP_NOT_FOUND")
                else:
                    raise ResourceExhausted(
                        f"this watcher read too slowly: more than {self._buffer} messages waited for it; "
                        "reconnect with from_version to resume",
                        "WATCHER_TOO_SLOW",
                    )
        finally:
            self._forget(watcher)
