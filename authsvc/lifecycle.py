"""The end of a server's life: a lame-duck drain that fails no call with anything but UNAVAILABLE.

On SIGTERM a server cannot simply call grpc's `server.stop(grace)`: grpc core answers CANCELLED to every call
it has received but not yet handed to a handler (grpc/grpc#41785), and a client treats CANCELLED as a failure
of its own, not as "try another replica". So a stop goes through these phases:

1. **Lame duck.** Health turns NOT_SERVING at once (load balancers and client-side health checks stop sending
   here), and every call is still served, until the callers go quiet (no call for `QUIET_PERIOD`) or the drain
   timeout ends.
2. **Refusing.** New calls are answered UNAVAILABLE (reason SHUTTING_DOWN) without running; calls already in a
   handler get the shutdown grace to finish.
3. **Disconnecting.** The port stops listening and the client connections are shut down at the TCP level:
   every call still on them, including those grpc core holds but never handed over, ends UNAVAILABLE at the
   client (a lost connection), and the client reconnects elsewhere. Then grpc's own stop finds nothing left to
   cancel.

`Drain` is what the interceptor (authsvc.interceptors) reads and updates on every call; `disconnect` does
phase 3. Streaming calls (health Watch) are not waited for: they last as long as their client wants.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

QUIET_PERIOD = 1.0
"""Seconds without a new call after which the callers count as gone and the lame-duck phase ends early."""

_POLL = 0.05
_FLUSH = 0.2
"""Seconds left, once no call is in a handler, for the last answers to leave before the connections close."""


class Drain:
    """The calls a server is running, when the last one started, and whether it refuses new ones.

    Written by the interceptor on every unary call (two integer updates and a float: hot path), read by `stop`.
    """

    __slots__ = ("in_flight", "last_started", "refusing", "_hurried")

    def __init__(self) -> None:
        self.in_flight = 0
        """Unary calls inside a handler now."""
        self.last_started = time.perf_counter()
        """perf_counter() when the last call started."""
        self.refusing = False
        """True from phase 2 on: new calls are answered UNAVAILABLE without running."""
        self._hurried = False

    def hurry(self) -> None:
        """Ends the waiting of phases 1 and 2 now (an operator's second signal)."""
        self._hurried = True

    def quiet_for(self) -> float:
        """Seconds since the last call started, or 0 while a call is in flight."""
        return 0.0 if self.in_flight else time.perf_counter() - self.last_started

    async def lame_duck(self, longest: float) -> str:
        """Phase 1: waits until the callers go quiet or `longest` seconds pass (or `hurry`); says which."""
        deadline = time.perf_counter() + longest
        while self.quiet_for() < QUIET_PERIOD:
            if self._hurried:
                return "a second signal ended it"
            if time.perf_counter() >= deadline:
                return "the drain timeout passed with calls coming"
            await asyncio.sleep(_POLL)
        return "the callers went quiet"

    async def refuse_and_finish(self, grace: float | None) -> bool:
        """Phase 2: refuses new calls and waits for those in a handler (at most `grace` seconds; None: no
        bound). True when none is left."""
        self.refusing = True
        deadline = None if grace is None else time.perf_counter() + grace
        while self.in_flight:
            if self._hurried or (deadline is not None and time.perf_counter() >= deadline):
                return False
            await asyncio.sleep(_POLL)
        if not self._hurried:
            await asyncio.sleep(_FLUSH)  # an answer is written after its handler returns
        return True


def disconnect(port: int) -> int:
    """Phase 3: stops this process listening on `port` and shuts down (both ways) every client connection it
    accepted there; returns how many connections.

    The sockets belong to grpc core, so they are taken from under it without disturbing its bookkeeping: the
    listening socket's descriptor is pointed at /dev/null (the kernel closes the socket, so a client that
    reconnects is refused, or with SO_REUSEPORT lands on another worker, rather than reaching calls grpc would
    cancel; grpc, whose poller no longer hears from it, later closes /dev/null), and the connections are shut
    down but left open, so grpc sees them end and releases them itself. Linux only (/proc/self/fd); elsewhere
    nothing happens and grpc's stop applies as it is.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    listeners: list[int] = []
    connections: list[socket.socket] = []
    for name in names:
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockname()[1] == port
            ):
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    listeners.append(fd)
                else:
                    sock.getpeername()  # connected: a client's connection (raises for anything else)
                    connections.append(sock)
                    continue
        except OSError:
            pass
        sock.close()
    if listeners:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in listeners:
                os.dup2(null, fd)
        finally:
            os.close(null)
    for sock in connections:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed by its client meanwhile
        finally:
            sock.close()  # the duplicate only; grpc's descriptor stays open until grpc closes it
    return len(connections)
