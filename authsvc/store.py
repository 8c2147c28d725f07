"""Storage: every asyncpg query of authsvc behind one small interface, Store.

The queries live by concern in authsvc.storage (apps and keys, revocations and pruning, the change log and its
announcements, audit); Store is all of them over one pool. Every method either completes against PostgreSQL or
raises Unavailable; a write that returns is committed (and so durable) before the caller acknowledges it.
"""

from __future__ import annotations

from authsvc.storage.apps import AppQueries
from authsvc.storage.audit import AuditQueries
from authsvc.storage.base import create_pool
from authsvc.storage.changes import Change, ChangeQueries, Listener, Snapshot
from authsvc.storage.revocations import RevocationQueries

__all__ = ["Change", "Listener", "Snapshot", "Store", "create_pool"]


class Store(AppQueries, RevocationQueries, ChangeQueries, AuditQueries):
    """The queries of authsvc over an asyncpg pool: apps and keys, revocations, the change log, audit."""
