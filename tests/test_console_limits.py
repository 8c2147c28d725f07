"""The console's HTTP limits (authsvc.console.protocol) on a real uvicorn server and real sockets: a request must
arrive whole within the deadline, and connections beyond the cap are closed on arrival. tests/test_console.py
checks the same deadline on the console of a real `authsvc serve`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from authsvc.console import protocol
from authsvc.console.protocol import BoundedH11Protocol

DEADLINE = 0.6


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def serve(http: type[H11Protocol]) -> AsyncIterator[int]:
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, http=http)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.startup(sockets=[sock])
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await server.shutdown()


@pytest.fixture
async def bounded(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(protocol, "REQUEST_SECONDS", DEADLINE)
    monkeypatch.setattr(protocol, "MAX_CONNECTIONS", 3)
    async for port in serve(BoundedH11Protocol):
        yield port


@pytest.fixture
async def plain() -> AsyncIterator[int]:
    async for port in serve(H11Protocol):
        yield port


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float | None:
    """Seconds until the server closed the connection (EOF), or None if it was still open after `seconds`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - started


async def trickle(port: int, seconds: float) -> float | None:
    """Opens a request and sends one more header line every 0.1 s; when the server closed it (None: never)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    try:
        while time.monotonic() - started < seconds:
            await asyncio.sleep(0.1)
            if reader.at_eof():
                return time.monotonic() - started
            writer.write(b"X-Slow: y\r\n")
            await writer.drain()
            try:
                async with asyncio.timeout(0.01):
                    if not await reader.read(1024):
                        return time.monotonic() - started
            except TimeoutError:
                pass
    except ConnectionError:
        return time.monotonic() - started
    finally:
        writer.close()
    return None


async def test_uvicorn_alone_keeps_a_trickling_request_open(plain: int) -> None:
    # Why the console has its own protocol: each byte restarts uvicorn's only timer.
    assert await trickle(plain, 3 * DEADLINE + 6) is None


async def test_a_request_that_trickles_in_is_cut_off_at_the_deadline(bounded: int) -> None:
    closed = await trickle(bounded, 3 * DEADLINE)
    assert closed is not None and DEADLINE * 0.9 <= closed <= DEADLINE + 0.5


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(bounded: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded)
    closed = await closed_within(reader, 3 * DEADLINE)
    writer.close()
    assert closed is not None and closed <= DEADLINE + 0.5


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes = b"") -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer.write(head + body)
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in answer.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    return answer.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(length)


async def test_requests_in_time_pass_and_keep_alive_still_works(bounded: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded)
    try:
        assert await request(reader, writer, b"one") == b"HTTP/1.1 200 OK one"
        await asyncio.sleep(DEADLINE * 1.5)  # idle between requests: uvicorn's keep-alive (5 s), not the deadline
        assert await request(reader, writer, b"two") == b"HTTP/1.1 200 OK two"
        # A body that arrives in pieces, within the deadline, is a request like any other.
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(DEADLINE / 3)
        writer.write(b"def")
        answer = await reader.readuntil(b"abcdef")
        assert answer.startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()


async def test_connections_beyond_the_cap_are_closed_on_arrival(bounded: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", bounded) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded)
    closed = await closed_within(reader, DEADLINE / 2)  # well before any deadline
    writer.close()
    assert closed is not None
    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded)  # room again once they are gone
    try:
        assert await request(reader, writer, b"in") == b"HTTP/1.1 200 OK in"
    finally:
        writer.close()
