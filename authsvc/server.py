"""One serving process: the gRPC server with AuthService, AdminService, health and reflection, and the HTTP port;
its readiness, its drain and its stop signals. authsvc.workers runs one of these, or several sharing the port."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from authsvc import credentials, tls
from authsvc.admin_servicer import AdminServicer
from authsvc.clock import MICROS_PER_SECOND, Clock, system_clock
from authsvc.config import Settings
from authsvc.database import open_store
from authsvc.errors import ConfigError
from authsvc.http import HttpServer, Routes, jwks_handler, metrics_handler
from authsvc.interceptors import ObservingInterceptor
from authsvc.lifecycle import Drain, disconnect
from authsvc.logs import CredentialCheck
from authsvc.metrics import Metrics
from authsvc.operators import hash_token
from authsvc.reflection import enable_reflection
from authsvc.sealing import Keyring
from authsvc.servicer import AuthServicer
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import admin_service_pb2, admin_service_pb2_grpc, auth_service_pb2, auth_service_pb2_grpc
from authsvc.watch import WatchHub

if TYPE_CHECKING:
    from authsvc.console.serve import RunningConsole

log = logging.getLogger(__name__)

SERVICE_NAME = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
ADMIN_SERVICE_NAME = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


LIVENESS = "liveness"
"""The health service name of liveness: SERVING from start-up done until stop, whatever the database does (a
restart would not bring a database back). Point a liveness probe at it."""

READINESS = ("", SERVICE_NAME, ADMIN_SERVICE_NAME)
"""The health service names of readiness: SERVING while this process can answer VerifyToken (its state is
fresh); NOT_SERVING while starting, while the state is older than AUTHSVC_MAX_STALENESS, and from stop on."""

_READINESS_POLL = 0.5


@dataclass
class RunningServer:
    """A started gRPC server and the port it listens on, with its HTTP server (/metrics) and metrics."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    http: HttpServer
    http_port: int
    metrics: Metrics
    drain: Drain
    fresh: Callable[[], bool]
    watch: WatchHub | None = None
    """The WatchState streams' hub; closed at stop."""
    _readiness: asyncio.Task[None] | None = None

    async def mark_serving(self) -> None:
        """Turns health SERVING (liveness, and readiness while the state is fresh) and keeps readiness
        following the state's freshness: call it once the process is ready to answer."""
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        if self._readiness is None:
            self._readiness = asyncio.create_task(self._follow_freshness(), name="authsvc-readiness")

    async def _follow_freshness(self) -> None:
        ready: bool | None = None
        while True:
            fresh = self.fresh()
            if fresh != ready:
                status = health_pb2.HealthCheckResponse.SERVING if fresh else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in READINESS:
                    await self.health.set(name, status)
                if ready is not None:
                    log.log(
                        logging.INFO if fresh else logging.WARNING,
                        "readiness %s: the verification state is %s",
                        "SERVING" if fresh else "NOT_SERVING",
                        "current again" if fresh else "older than AUTHSVC_MAX_STALENESS (VerifyToken fails closed)",
                    )
                ready = fresh
            await asyncio.sleep(_READINESS_POLL)

    async def stop(self, grace: float | None, drain_timeout: float = 0.0) -> None:
        """Stops serving in the phases of authsvc.lifecycle, failing no call with anything but UNAVAILABLE:
        health NOT_SERVING for good at once; calls still served until the callers go quiet or `drain_timeout`
        passes; then new calls refused while calls in flight get `grace` seconds (None: no bound); then the
        client connections closed and the server stopped."""
        if self._readiness is not None:
            self._readiness.cancel()
        await self.health.enter_graceful_shutdown()
        if drain_timeout > 0:
            log.info("drain: %s", await self.drain.lame_duck(drain_timeout))
        if not await self.drain.refuse_and_finish(grace):
            log.warning("drain: calls still in flight after the shutdown grace of %ss are cut", grace)
        disconnect(self.port)
        await self.server.stop(0)
        await self.http.close()
        if self.watch is not None:
            await self.watch.close()

    def hurry(self) -> None:
        """Ends a stop in progress now: no more waiting for callers or calls in flight (a second signal)."""
        self.drain.hurry()


async def start_server(
    store: Store,
    state: State,
    settings: Settings,
    clock: Clock = system_clock,
    *,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
    serving: bool = True,
) -> RunningServer:
    """Starts a gRPC server on settings.host:settings.port serving AuthService, health and reflection, and
    the HTTP server (/metrics) on settings.http_port. The gRPC port speaks TLS, or mutual TLS, when the settings
    name the files (authsvc.tls; ConfigError when they are wrong), else plaintext.

    With `reuse_port`, several processes share the port (SO_REUSEPORT) and the kernel spreads connections
    over them; without it, a port already in use is an error rather than silently shared. Health answers
    NOT_SERVING from the moment the port is bound; SERVING once `serving` is true, else once the caller calls
    `mark_serving()`.
    """
    credentials = tls.server_credentials(settings)  # first: wrong TLS files leave nothing half-made behind
    metrics = Metrics() if metrics is None else metrics
    metrics.set_version_source(lambda: state.version)
    metrics.set_staleness_source(state.staleness)
    drain = Drain()
    server = grpc.aio.server(
        interceptors=[ObservingInterceptor(metrics, state.app, drain, _credential_check(state, settings))],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), *connection_options(settings)],
    )
    watch = WatchHub(state, store, settings, clock)
    metrics.set_watchers_source(watch.watchers)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(store, state, settings, clock, metrics, watch), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(store, state, settings, clock), server)
    health = HealthServicer()
    # The stock servicer starts with "" SERVING; a probe must not see that before the process is ready.
    for name in (*READINESS, LIVENESS):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        port = (
            server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
        )
    except RuntimeError:  # grpc's "Failed to bind to address ..."; workers.serve checks the port first
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}: the address is in use or not this host's")
    log.info(
        "gRPC port %s:%d: %s", settings.host, port, tls.describe(settings), extra={"transport": tls.transport(settings)}
    )
    routes = Routes()
    routes.add("/metrics", metrics_handler(metrics.registry))
    routes.add(r"/\.well-known/jwks/(?P<api_key>[a-z0-9]{1,64})\.json", jwks_handler(state.find_app, state.fresh))
    http = HttpServer(routes)
    http_port = await http.start(settings.host, settings.http_port)
    await server.start()
    running = RunningServer(server, port, health, http, http_port, metrics, drain, state.fresh, watch)
    if serving:
        await running.mark_serving()
    return running


def _credential_check(state: State, settings: Settings) -> CredentialCheck:
    """Tells a credential sent where it does not belong (as `x-request-id`): an operator token, or an API secret of
    the app the call names."""
    operator_hashes = frozenset(digest for _, digest in settings.operator_tokens)

    def is_credential(text: str, api_key: str | None) -> bool:
        if operator_hashes and hash_token(text) in operator_hashes:
            return True
        app = state.app(api_key) if api_key else None
        return app is not None and credentials.is_api_secret(text, app)

    return is_credential


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server options for connection age and keepalive, from the settings."""
    options = [
        ("grpc.keepalive_time_ms", round(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.keepalive_timeout * 1000)),
    ]
    if settings.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age * 1000))),
            ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace * 1000)),
        ]
    return options


def new_state(store: Store, url: str, settings: Settings) -> State:
    """The in-memory verification state of this process, following the database at `url`."""
    return State(
        store,
        url,
        max_staleness=settings.max_staleness,
        check_interval=settings.state_check_interval,
        leeway=round(settings.clock_leeway * MICROS_PER_SECOND),
    )


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived before the server served: the process exits quietly, with `exit_code`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """0 for SIGTERM (a stop asked for), 128 + the signal's number otherwise (130 for SIGINT, as shells do)."""
        return 0 if self.signum == signal.SIGTERM else 128 + self.signum


class StopSignals:
    """The stop signals of a serving process. Until `serving()`, one cancels start-up (the task that called
    `install()`; `run_loop` turns that into Interrupted); from then on it sets `stop`, and the drain begins."""

    def __init__(
        self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), on_serving: Callable[[], None] | None = None
    ) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        """Set by a second signal once the drain has begun: stop without waiting."""
        self.received: int | None = None
        self._signals = signals
        self._on_serving = on_serving
        self._starting: asyncio.Task[Any] | None = None

    def install(self) -> None:
        """Handles the signals in the running loop, on behalf of the current task (the one that starts up)."""
        self._starting = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.add_signal_handler(sig, self._received, sig)

    def serving(self) -> None:
        """Start-up is over: signals now stop the server."""
        self._starting = None
        if self._on_serving is not None:
            self._on_serving()

    def _received(self, sig: int) -> None:
        if self.received is not None:
            if self._starting is None:
                self.hurry.set()  # the drain has begun: a second signal ends it now
            return  # else start-up is already being cancelled
        self.received = sig
        if self._starting is not None:
            self._starting.cancel()
        else:
            self.stop.set()


def run_loop(main: Coroutine[Any, Any, None], signals: StopSignals) -> None:
    """Runs `main` (which installs `signals`) in a new event loop; Interrupted when a signal cut its start-up."""
    try:
        asyncio.run(main)
    except asyncio.CancelledError:
        if signals.received is None:
            raise
        raise Interrupted(signals.received) from None


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def interrupt_on_signals() -> None:
    """Makes SIGINT and SIGTERM raise Interrupted: start-up outside an event loop (embedded PostgreSQL, spawning
    workers) stops where it is, through the `with` blocks that clean up; once a loop runs, StopSignals takes over."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)


async def serve_process(
    url: str, settings: Settings, keyring: Keyring, signals: StopSignals, worker: int = 0, workers: int = 1
) -> None:
    """Serves on the database at `url` until `signals` say stop, then drains; run it with `run_loop`. `worker` of
    `workers` is this process's place among the supervisor's (authsvc.workers), 0 of 1 when it serves alone."""
    # Installed first: a signal during start-up (bounded by the database timeouts) ends it at once.
    signals.install()
    stop = signals.stop
    # With workers, the supervisor has migrated already (or checked, with AUTHSVC_MIGRATE=false).
    pool, store = await open_store(url, settings, keyring, migrate=settings.migrate and workers == 1)
    state = new_state(store, url, settings)
    console: RunningConsole | None = None
    try:
        await state.start()
        for app in state.apps() if worker == 0 else ():
            if app.auth_checks_disabled:
                log.warning(
                    "app %s (%s) has auth checks disabled: it accepts developer tokens; never use it in production",
                    app.api_key,
                    app.name,
                )
        metrics = Metrics()
        metrics.register_pool(pool)
        if workers > 1 and settings.http_port:
            # One metrics endpoint per worker (a Prometheus target each): a shared port would mix their counters.
            settings = settings.with_overrides(http_port=settings.http_port + worker)
        running = await start_server(store, state, settings, reuse_port=workers > 1, metrics=metrics)
        if settings.console_port is not None and worker == 0:
            from authsvc.console.serve import start_console  # starlette, uvicorn, jinja2: only when it is on

            try:
                console = await start_console(
                    store, state, settings, metrics, system_clock, http_port=running.http_port, workers=workers
                )
            except BaseException:
                await running.stop(0)
                raise
        signals.serving()
        # What start-up made (modules, descriptors, the loaded state) lives as long as the process: out of the
        # collector's full passes, which then scan only what serving creates (the verify cache, mostly).
        gc.freeze()
        if worker == 0:
            log.info(
                "event loop %s, log level %s",
                "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio",
                settings.log_level,
            )
        if workers > 1:
            log.info("worker %d of %d serving gRPC on %s:%d", worker + 1, workers, settings.host, running.port)
            log.info("worker %d of %d serving HTTP on %s:%d", worker + 1, workers, settings.host, running.http_port)
        else:
            log.info("authsvc serving gRPC on %s:%d", settings.host, running.port)
            log.info("authsvc serving HTTP on %s:%d", settings.host, running.http_port)
        await stop.wait()
        if console is not None:
            await console.stop()
        log.info(
            "stopping: health NOT_SERVING; serving until the callers go quiet (at most %gs), then calls in flight "
            "get %gs (a second signal stops at once)",
            settings.drain_timeout,
            settings.shutdown_grace,
        )
        stopping = asyncio.create_task(running.stop(settings.shutdown_grace, settings.drain_timeout))
        hurried = asyncio.create_task(signals.hurry.wait())
        await asyncio.wait((stopping, hurried), return_when=asyncio.FIRST_COMPLETED)
        if signals.hurry.is_set():
            running.hurry()
        hurried.cancel()
        await stopping
    finally:
        if console is not None:
            await console.stop()
        await state.stop()
        await pool.close()
    log.info("authsvc stopped")


def use_event_loop(settings: Settings) -> None:
    """Installs uvloop as the event loop policy when the settings ask for it (or, with auto, when installed)."""
    if settings.event_loop == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if settings.event_loop == "uvloop":
            raise ConfigError("AUTHSVC_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
