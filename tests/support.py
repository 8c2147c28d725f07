"""Helpers shared by the tests: the fake clock, call metadata, and decoding of rich error statuses."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc.clock import MICROS_PER_SECOND, Micros, from_datetime
from authsvc.tokens import App


class FakeClock:
    """The injected clock: follows the wall clock until a test sets it, then stays where it is put."""

    def __init__(self) -> None:
        self._frozen: Micros | None = None

    def __call__(self) -> Micros:
        return self._frozen if self._frozen is not None else time.time_ns() // 1000

    def set(self, micros: Micros) -> None:
        """Freezes the clock at `micros`."""
        self._frozen = micros

    def freeze(self) -> Micros:
        """Freezes the clock at the current wall-clock time and returns it (whole second, for readability)."""
        now = (time.time_ns() // 1000 // MICROS_PER_SECOND) * MICROS_PER_SECOND
        self._frozen = now
        return now

    def advance(self, micros: Micros) -> Micros:
        """Moves a frozen clock forward (or back, with a negative span); returns the new now."""
        self._frozen = self() + micros
        return self._frozen

    def reset(self) -> None:
        """Follows the wall clock again."""
        self._frozen = None


Metadata = tuple[tuple[str, str], ...]
"""Call metadata, as the stubs take it."""


async def stored_revocation(pool: asyncpg.Pool, app_id: int, user_id: str) -> Micros | None:
    """The user's revocation time as PostgreSQL holds it, or None: what a test checks is durable."""
    value = await pool.fetchval(
        "SELECT revoked_before FROM user_revocations WHERE app_id = $1 AND user_id = $2", app_id, user_id
    )
    return None if value is None else from_datetime(value)


def newest_kid(app: App) -> str:
    """The kid of the app's newest key: its newest key pair, else its current API secret."""
    return app.key_pairs[0].key_id if app.key_pairs else app.secrets[0].key_id


def api_key_only(app: App) -> Metadata:
    """Call metadata naming the app, as for VerifyToken."""
    return (("x-api-key", app.api_key),)


def backend(app: App, credential: str | None = None) -> Metadata:
    """Call metadata of the app's backend: API key and `Bearer <API secret>` (or another credential)."""
    return (("x-api-key", app.api_key), ("authorization", f"Bearer {credential or app.api_secret}"))


@dataclass(frozen=True)
class RpcFailure:
    """What a client sees of a failed call: code, message and the ErrorInfo reason."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    """Decodes the google.rpc.ErrorInfo of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status in {error.code()}: {error.details()}"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert len(infos) == 1, "every failure carries exactly one ErrorInfo"
    return RpcFailure(error.code(), status.message, infos[0].reason, infos[0].domain)


async def expect_failure(call: Awaitable[Any]) -> RpcFailure:
    """Awaits a call that must fail, and returns what failed."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return failure(info.value)
