"""The console in the serving process: uvicorn on AUTHSVC_CONSOLE_PORT, in the process's own event loop.

uvicorn's `serve()` would install its own signal handlers; the server's StopSignals own those, so the console
is started and stopped through uvicorn's `startup` and `shutdown` instead.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from authsvc.clock import MICROS_PER_SECOND, Clock
from authsvc.config import Settings
from authsvc.console.app import Console, build_app
from authsvc.console.figures import Figures, local_source
from authsvc.console.protocol import BoundedH11Protocol
from authsvc.console.sessions import LoginLink, Sessions
from authsvc.errors import ConfigError
from authsvc.metrics import Metrics
from authsvc.revoking import Revocations
from authsvc.state import State
from authsvc.store import Store

log = logging.getLogger(__name__)


@dataclass
class RunningConsole:
    """A started console and the port it listens on."""

    server: uvicorn.Server
    socket: socket.socket
    port: int
    figures: Figures
    url: str

    async def stop(self) -> None:
        """Stops serving: open connections are closed (a page being rendered gets a second). Idempotent."""
        if self.server.started:
            self.server.started = False
            await self.figures.stop()
            await self.server.shutdown(sockets=[self.socket])


def _bind(host: str, port: int) -> socket.socket:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bare, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen for the console on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_console(
    store: Store,
    state: State,
    settings: Settings,
    metrics: Metrics,
    clock: Clock,
    *,
    worker_sockets: Sequence[tuple[int, str]] = (),
) -> RunningConsole:
    """Starts the console on settings.console_host:console_port (which must be set), HTTPS when its TLS files
    are. ConfigError (one line) when the port cannot be bound or the TLS files cannot be loaded."""
    assert settings.console_port is not None
    secure = settings.console_tls_cert_file is not None
    link = LoginLink() if settings.console_login_link else None
    figures = Figures(
        local_source(lambda: state.version, state.staleness, metrics.outcome_counts),
        {f"worker {number}": path for number, path in worker_sockets},
    )
    console = Console(
        store=store,
        state=state,
        clock=clock,
        operator_tokens=settings.operator_tokens,
        leeway=round(settings.clock_leeway * MICROS_PER_SECOND),
        key_rotation_delay=settings.key_rotation_delay,
        secret_overlap=settings.secret_overlap,
        revocations=Revocations(
            store, state, clock, round(settings.clock_leeway * MICROS_PER_SECOND), metrics.count_revocation
        ),
        sessions=Sessions(settings.console_idle_timeout),
        figures=figures,
        secure=secure,
        link=link,
    )
    config = uvicorn.Config(
        build_app(console),
        lifespan="off",
        log_config=None,
        access_log=False,  # an access line would carry the query string: the login link's code
        server_header=False,
        proxy_headers=False,
        ssl_certfile=settings.console_tls_cert_file,
        ssl_keyfile=settings.console_tls_key_file,
        timeout_graceful_shutdown=1,
        http=BoundedH11Protocol,  # a deadline on each request's arrival and a cap on connections (protocol.py)
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the console's TLS files {settings.console_tls_cert_file}, {settings.console_tls_key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = _bind(settings.console_host, settings.console_port)
    await server.startup(sockets=[sock])
    figures.start()
    port = sock.getsockname()[1]
    host = settings.console_host if ":" not in settings.console_host else f"[{settings.console_host.strip('[]')}]"
    url = f"{'https' if secure else 'http'}://{host}:{port}"
    log.info("console on %s:%d (%s)", settings.console_host, port, "HTTPS" if secure else "HTTP, no TLS")
    if link is not None and link.code is not None:
        # On the terminal, not in the log: the code opens a session (once).
        print(f"authsvc console: open {url}/login/link?code={link.code} (this link works once)", file=sys.stderr)
        sys.stderr.flush()
    return RunningConsole(server, sock, port, figures, url)
