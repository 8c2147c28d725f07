"""Revoking tokens and undoing it, the same way wherever it is asked for (AuthService's RPCs, the console).

Each call takes the same three steps, in this order: durable in the database (with its audit entry), then visible
in this process's state (so that a VerifyToken answered here after the call's return sees it, whatever the change
feed's delay), then counted (`authsvc_revocations_total`). The time a revocation takes effect from is decided by
tokens.revocation_time, here for both callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from authsvc import tokens
from authsvc.audit import Actor
from authsvc.clock import Clock, Micros
from authsvc.state import State
from authsvc.store import Store

CountRevocation = Callable[[str, int], None]
"""(kind, how many) → None: metrics.Metrics.count_revocation."""


class Revocations:
    """Revokes and clears the revocations of one process's apps: store, then state, then metric."""

    def __init__(self, store: Store, state: State, clock: Clock, leeway: Micros, count: CountRevocation) -> None:
        self._store = store
        self._state = state
        self._clock = clock
        self._leeway = leeway
        self._count = count

    def effective_time(self, requested: Micros | None) -> Micros:
        """When a revocation asked for at `requested` (None: now) takes effect (tokens.revocation_time)."""
        return tokens.revocation_time(requested, now=self._clock(), leeway=self._leeway)

    async def revoke_users(
        self, app_id: int, user_ids: Sequence[str], requested: Micros | None, *, actor: Actor
    ) -> dict[str, Micros]:
        """Revokes the users' tokens issued before `requested` (None: now); each user's revocation in force."""
        in_force, version = await self._store.revoke_users(
            app_id, user_ids, self.effective_time(requested), actor=actor
        )
        await self._state.catch_up(version)
        self._count("user", len(user_ids))
        return in_force

    async def revoke_app(self, app_id: int, requested: Micros | None, *, actor: Actor) -> Micros:
        """Revokes every token of the app issued before `requested` (None: now); the app's revocation in force."""
        in_force, version = await self._store.revoke_app(app_id, self.effective_time(requested), actor=actor)
        await self._state.catch_up(version)
        self._count("app", 1)
        return in_force

    async def revoke_token(
        self, app_id: int, jti: str, expires_at: Micros | None, *, actor: Actor
    ) -> tuple[Micros, Micros | None]:
        """Revokes the token with this jti, now, kept until `expires_at` (None: until cleared); when it was revoked
        and until when the revocation is kept."""
        revoked_at, until, version = await self._store.revoke_token(app_id, jti, self._clock(), expires_at, actor=actor)
        await self._state.catch_up(version)
        self._count("token", 1)
        return revoked_at, until

    async def clear_users(self, app_id: int, user_ids: Sequence[str], *, actor: Actor) -> list[str]:
        """Lifts the users' revocations; the users that had one, in the order asked."""
        cleared, version = await self._store.clear_user_revocations(app_id, user_ids, actor=actor)
        await self._state.catch_up(version)
        self._count("clear", len(cleared))
        had_one = set(cleared)
        return [user_id for user_id in user_ids if user_id in had_one]

    async def clear_app(self, app_id: int, *, actor: Actor) -> bool:
        """Lifts the app's revocation; whether it had one."""
        had, version = await self._store.clear_app_revocation(app_id, actor=actor)
        await self._state.catch_up(version)
        self._count("clear", int(had))
        return had

    async def clear_tokens(self, app_id: int, jtis: Sequence[str], *, actor: Actor) -> list[str]:
        """Lifts the revocations of these tokens; the jtis that had one, in the order asked."""
        cleared, version = await self._store.clear_token_revocations(app_id, jtis, actor=actor)
        await self._state.catch_up(version)
        self._count("clear", len(cleared))
        had_one = set(cleared)
        return [jti for jti in jtis if jti in had_one]
