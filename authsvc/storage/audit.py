"""The audit trail: recorded with each change, in its transaction; read newest first."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from authsvc.audit import Actor, AuditEvent
from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.storage.base import Queries


async def audit(
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


class AuditQueries(Queries):
    """Reading the audit trail."""

    async def audit_events(
        self,
        *,
        api_key: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: Micros | None = None,
        limit: int = 100,
        before: tuple[Micros, int] | None = None,
    ) -> list[AuditEvent]:
        """Recorded changes, newest first, filtered by app, action (a prefix such as `users.`), actor, time;
        `before` (the `at` and `id` of the last event of a page) starts the next page after that event."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, api_key, peer, details FROM audit_events"
                " WHERE ($1::text IS NULL OR api_key = $1) AND ($2::text IS NULL OR starts_with(action, $2))"
                " AND ($3::text IS NULL OR actor = $3) AND ($4::timestamptz IS NULL OR at >= $4)"
                " AND ($6::timestamptz IS NULL OR (at, id) < ($6, $7::bigint))"
                " ORDER BY at DESC, id DESC LIMIT $5",
                api_key,
                action,
                actor,
                None if since is None else to_datetime(since),
                limit,
                None if before is None else to_datetime(before[0]),
                None if before is None else before[1],
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
