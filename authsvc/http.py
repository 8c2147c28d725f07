"""The HTTP side of authsvc: a small route table (GET /metrics, and more to come) on a port of its own.

It runs on the server's asyncio loop rather than in a thread: handlers may await (a JWKS route reads the
in-memory state, which the loop owns), a scrape reads the database pool and the state without crossing
threads, and it starts and stops with the gRPC server. A scrape holds the loop for a few milliseconds (3.7 ms
measured for a full set of series on a slow 2-core box), once per scrape interval.
It speaks just enough HTTP/1.1 for Prometheus, probes and curl: one request per connection, no body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest

from authsvc.errors import ConfigError
from authsvc.metrics import MergedRegistry, merge_expositions
from authsvc.tokens import App

log = logging.getLogger(__name__)

_READ_TIMEOUT = 10.0
# Connections held at once; more are closed on arrival, so that slow clients (each held up to _READ_TIMEOUT, then
# drained) cannot take the file descriptors of the process that serves gRPC. Prometheus and probes need a few.
_MAX_CONNECTIONS = 256
_MAX_LINE = 8192  # the request line, and each header line (StreamReader's limit: readuntil stops there)
_MAX_HEADERS = 100
_MAX_HEADER_BYTES = 32768
# After an error answer, what the client is still sending is read and dropped for a while, so that closing
# with unread data does not reset the connection before the client has read the answer (a lingering close).
_DRAIN_BYTES = 4 * 1024 * 1024
_DRAIN_SECONDS = 5.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class Request:
    """An HTTP request as a handler sees it: path, query, headers (lower-case names) and the route's groups."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """An HTTP response: status, body and content type, plus any further headers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class _Refused(Exception):
    """The request cannot be served as sent; `response` says why."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


_BAD_REQUEST = Response(400, b"bad request\n")
_URI_TOO_LONG = Response(414, b"request line too long\n")
_HEADERS_TOO_LARGE = Response(431, b"request headers too large\n")

Handler = Callable[[Request], Awaitable[Response]]
"""A route's handler."""


class Routes:
    """GET routes: a path pattern (a regular expression matched against the whole path) and its handler."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], Handler]] = []

    def add(self, pattern: str, handler: Handler) -> None:
        """Serves GET (and HEAD) on paths matching `pattern`; its named groups become `Request.params`."""
        self._routes.append((re.compile(pattern), handler))

    def find(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler of `path` and the groups its pattern captured, or None."""
        for pattern, handler in self._routes:
            if match := pattern.fullmatch(path):
                return handler, match.groupdict()
        return None


def jwks_handler(find_app: Callable[[str], Awaitable[App | None]], fresh: Callable[[], bool]) -> Handler:
    """A handler serving an app's JSON Web Key Set at /.well-known/jwks/<api key>.json (404 for an unknown app).

    Fails closed as GetJwks does: 503 while the state is too stale to vouch for it (it may still hold a retired key).
    """

    async def jwks(request: Request) -> Response:
        if not fresh():
            return Response(503, b"authsvc cannot reach its database; retry later\n", headers=(("retry-after", "5"),))
        app = await find_app(request.params["api_key"])
        if app is None:
            return Response(404, b"no such app\n")
        body = json.dumps({"keys": app.jwks()}).encode()
        # Verifiers cache key sets; new keys are published ahead of signing (AUTHSVC_KEY_ROTATION_DELAY).
        return Response(200, body, "application/jwk-set+json", (("cache-control", "public, max-age=300"),))

    return jwks


_WORKER_SCRAPE_TIMEOUT = 5.0


def metrics_handler(registry: CollectorRegistry, workers: Sequence[tuple[int, str]] = ()) -> Handler:
    """A handler serving `registry` in the exposition format the scraper asks for.

    With `workers` ((worker number, unix socket path) of the other worker processes of this server, each serving
    its own /metrics there), it serves all of them merged as one target (authsvc.metrics.merge_expositions),
    this process being worker 1. A worker that does not answer (starting, stopping) is left out of that scrape.
    """

    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        if not workers:
            return Response(200, encode(registry), content_type)
        texts = [(1, generate_latest(registry).decode())]
        answers = await asyncio.gather(*(scrape_worker(path) for _, path in workers))
        texts += [(number, text) for (number, _), text in zip(workers, answers, strict=True) if text is not None]
        return Response(200, encode(MergedRegistry(merge_expositions(texts))), content_type)

    return metrics


async def scrape_worker(path: str) -> str | None:
    """The /metrics of the worker process serving HTTP on the unix socket `path`, or None when it does not answer."""
    try:
        async with asyncio.timeout(_WORKER_SCRAPE_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n")
                answer = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        return None
    return body.decode()


class HttpServer:
    """Serves `routes` over HTTP/1.1 on the running asyncio loop."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start_unix(self, path: str) -> None:
        """Listens on the unix socket `path` (a worker's own /metrics, read by the worker that serves the port)."""
        try:
            self._server = await asyncio.start_unix_server(self._connection, path, limit=_MAX_LINE)
        except OSError as exc:
            raise ConfigError(f"cannot listen for HTTP on {path}: {exc.strerror or exc}") from exc

    async def start(self, host: str, port: int) -> int:
        """Listens on host:port (0 picks a free port) and returns the port."""
        try:
            self._server = await asyncio.start_server(self._connection, host, port, limit=_MAX_LINE)
        except OSError as exc:
            raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}") from exc
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stops listening and drops connections still open."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= _MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (close()) that races a result.
            try:
                async with asyncio.timeout(_READ_TIMEOUT):
                    request = await _read_request(reader)
            except _Refused as refused:
                writer.write(_head(refused.response) + refused.response.body)
                await writer.drain()
                await _drain(reader)
                return
            response = await self._respond(request)
            writer.write(_head(response) + (b"" if request.method == "HEAD" else response.body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or stalled; nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()

    async def _respond(self, request: Request) -> Response:
        found = self.routes.find(request.path)
        if found is None:
            return Response(404, b"not found\n")
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        handler, params = found
        try:
            return await handler(Request(request.method, request.path, request.query, request.headers, params))
        except Exception:
            log.exception("HTTP handler for %s failed", request.path)
            return Response(500, b"internal error\n")


async def _read_line(reader: asyncio.StreamReader, too_long: Response) -> bytes:
    """A line, with its newline; at the end of the stream what is left, as readline gives it."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _Refused(too_long) from None
    except asyncio.IncompleteReadError as exc:
        return exc.partial


async def _read_request(reader: asyncio.StreamReader) -> Request:
    line = (await _read_line(reader, _URI_TOO_LONG)).decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(_BAD_REQUEST)
    headers: dict[str, str] = {}
    size = count = 0
    while True:
        raw = await _read_line(reader, _HEADERS_TOO_LARGE)
        if raw in (b"\r\n", b"\n", b""):
            break
        size, count = size + len(raw), count + 1
        if count > _MAX_HEADERS or size > _MAX_HEADER_BYTES:
            raise _Refused(_HEADERS_TOO_LARGE)
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return Request(parts[0].upper(), path, query, headers)


async def _drain(reader: asyncio.StreamReader) -> None:
    """Reads and drops what the client still sends, up to a bound, until it closes or goes quiet."""
    dropped = 0
    try:
        while dropped < _DRAIN_BYTES:
            async with asyncio.timeout(_DRAIN_SECONDS):
                chunk = await reader.read(65536)
            if not chunk:
                return
            dropped += len(chunk)
    except (TimeoutError, ConnectionError):
        pass


def _head(response: Response) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
