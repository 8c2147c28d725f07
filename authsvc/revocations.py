"""User revocations held in memory, 16 bytes a user: what VerifyToken consults, with no I/O.

Part of the token core (no asyncpg, no grpc): a verifier inside another service keeps revocations in the same
structure the server does.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable

from authsvc.clock import Micros
from authsvc.tokens import user_hash

_ABSENT = object()
_MEMO_SIZE = 4096
_NONE_HELD = float("-inf")


class RevocationSet:
    """User revocations of one app: user hash → revoked-before, in 16 bytes a user.

    A sorted pair of int64 arrays holds the bulk; recent changes sit in a small dict (None marks a removal)
    that is merged into the arrays once it grows past a sixty-fourth of them, so a change costs O(1) amortized.
    The answers for the users last asked about are remembered by user id until the set changes: hashing a
    user id and a binary search through megabytes cost a chat's active users more than a dict look-up.
    """

    __slots__ = ("_keys", "_times", "_recent", "_answers", "_newest")

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
        self._newest: float = max(self._times, default=_NONE_HELD)

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

    @property
    def newest(self) -> float:
        """No user's revocation time is later than this (micros; -inf when none is held): a token issued at or after
        it is revoked by none of them, so that no user need be looked up. It may stay above the newest after a
        removal, until the next merge: an upper bound is all it promises."""
        return self._newest

    def revoking(self, user_id: str, issued_at: Micros) -> Micros | None:
        """The user's revocation time when it may revoke a token issued at `issued_at`, else None. A token issued
        after every revocation held (most tokens, verified soon after they are issued) costs no look-up at all."""
        if issued_at >= self._newest:
            return None
        return self.get_user(user_id)

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
        if revoked_before > self._newest:
            self._newest = revoked_before
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
        self._newest = max(merged_times, default=_NONE_HELD)  # a removal may have taken the newest
