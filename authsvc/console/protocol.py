"""The console's HTTP/1.1: uvicorn's h11 protocol with the two limits uvicorn leaves out.

uvicorn has no deadline for receiving a request: its keep-alive timeout covers only the idle time between
requests and restarts with every byte received, so a client that opens a connection and sends nothing, or trickles
a header line every few seconds, holds it for ever (uvicorn issue #157; tests/test_console_limits.py shows it). Nor
does it cap the connections it accepts: `limit_concurrency` answers 503 only once a request has arrived whole. The
console shares its process with the gRPC server, so connections held open would take that process's file
descriptors and memory. Here every request must arrive whole (headers and body) within REQUEST_SECONDS of the
connection's opening or of its first byte, and a connection beyond MAX_CONNECTIONS is closed as soon as it opens.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_SECONDS = 10.0
"""The longest a request may take to arrive, from the connection's opening or the request's first byte."""

MAX_CONNECTIONS = 100
"""Connections the console holds at once; more are closed on arrival (a browser opens about six)."""


class BoundedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a deadline on each request's arrival and a cap on open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaited: object = None  # the request cycle that was current when the deadline was armed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()  # connection_lost follows, and forgets it
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first byte of a new request
        super().data_received(data)
        cycle = self.cycle
        if self._deadline is not None and cycle is not None and cycle is not self._awaited and not cycle.more_body:
            self._disarm()  # the request arrived whole, body included

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._awaited = self.cycle
        self._deadline = self.loop.call_later(REQUEST_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self.transport.close()
