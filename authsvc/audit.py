"""Audit: who changed what. Every change of state is recorded with its actor in the change's transaction."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: a credential's id (never the secret) and, over the network, the peer address."""

    id: str
    peer: str | None = None


SYSTEM = Actor("system")
"""authsvc itself (pruning, sealing at start)."""


def cli_actor() -> Actor:
    """The operator running the command line on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One recorded change."""

    id: int
    at: int
    actor: str
    action: str
    api_key: str | None
    peer: str | None
    details: dict[str, Any] = field(default_factory=dict)
