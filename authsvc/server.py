"""Wiring: the gRPC server with AuthService, health and reflection, the HTTP port, and the `serve` lifecycle."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator, MutableSequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from authsvc import credentials, migrations, tls
from authsvc.admin_servicer import AdminServicer
from authsvc.clock import MICROS_PER_SECOND, Clock, system_clock
from authsvc.config import Settings
from authsvc.database import database_url
from authsvc.errors import AuthsvcError, ConfigError
from authsvc.http import HttpServer, Routes, jwks_handler, metrics_handler
from authsvc.interceptors import ObservingInterceptor
from authsvc.lifecycle import Drain, disconnect
from authsvc.logs import CredentialCheck, configure_logging
from authsvc.metrics import Metrics
from authsvc.operators import hash_token
from authsvc.reflection import enable_reflection
from authsvc.sealing import Keyring, generated_keyring, keyring_from
from authsvc.servicer import AuthServicer
from authsvc.state import State
from authsvc.store import Store, create_pool
from authsvc.v1 import admin_service_pb2, admin_service_pb2_grpc, auth_service_pb2, auth_service_pb2_grpc
from authsvc.watch import WatchHub

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
    except RuntimeError:  # grpc's "Failed to bind to address ..."; serve() checks the port first, in one line
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}: the address is in use or not this host's")
    log.info(
        "gRPC port %s:%d: %s", settings.host, port, tls.describe(settings), extra={"transport": tls.transport(settings)}
    )
    routes = Routes()
    routes.add("/metrics", metrics_handler(metrics.registry))
    routes.add(r"/\.well-known/jwks/(?P<api_key>[a-z0-9]{1,64})\.json", jwks_handler(state.find_app))
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


def keyring_for(settings: Settings, *, warn: bool = True) -> Keyring:
    """The key-encryption keys from the settings; for the embedded database only, one kept in the data dir.

    With an external database and no key configured, authsvc refuses to start: it would otherwise have to
    keep secrets in plain text, or make a key that other replicas cannot know. Using the data dir's key is
    warned about unless `warn` is false (the CLI), and always when the key is made.
    """
    keyring = keyring_from(settings.kek, settings.kek_file)
    if keyring is not None:
        return keyring
    if settings.database_url:
        raise ConfigError(
            "no key-encryption key: set AUTHSVC_KEK or AUTHSVC_KEK_FILE (base64 of 32 random bytes; "
            "'authsvc keys new-kek' prints one). API secrets and private keys are sealed with it."
        )
    keyring, created = generated_keyring(settings.data_dir)
    log.log(
        logging.WARNING if warn or created else logging.INFO,
        "no key-encryption key configured: %s %s for the embedded database; set AUTHSVC_KEK_FILE in production",
        "generated" if created else "using",
        settings.data_dir / "kek",
    )
    return keyring


async def open_store(url: str, settings: Settings, keyring: Keyring, *, migrate: bool) -> tuple[asyncpg.Pool, Store]:
    """A pool on the database at `url` and the store over it. First the schema: brought up to date (`migrate`),
    else checked (ConfigError when this release's migrations are not all applied)."""
    pool = await create_pool(url, max_size=settings.database_pool_size, command_timeout=settings.database_timeout)
    try:
        async with pool.acquire() as conn:
            if migrate:
                await migrations.apply(conn)
            else:
                await migrations.require_applied(conn)
        store = Store(pool, keyring, timeout=settings.database_timeout)
        if sealed := await store.reseal(only_plain=True):
            log.info("sealed %d keys carried over in plain text", sealed)
    except BaseException:  # a signal during start-up cancels it too
        pool.terminate()
        raise
    return pool, store


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
    `install()`; `_run` turns that into Interrupted); from then on it sets `stop`, and the drain begins."""

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


def _run(main: Coroutine[Any, Any, None], signals: StopSignals) -> None:
    """Runs `main` (which installs `signals`) in a new event loop; Interrupted when a signal cut its start-up."""
    try:
        asyncio.run(main)
    except asyncio.CancelledError:
        if signals.received is None:
            raise
        raise Interrupted(signals.received) from None


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _interrupt_on_signals() -> None:
    # Start-up outside an event loop (embedded PostgreSQL, spawning workers) stops where it is, through the
    # `with` blocks that clean up; once a loop runs, StopSignals takes over.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)


async def _serve(
    url: str, settings: Settings, keyring: Keyring, signals: StopSignals, worker: int = 0, workers: int = 1
) -> None:
    # Installed first: a signal during start-up (bounded by the database timeouts) ends it at once.
    signals.install()
    stop = signals.stop
    # With workers, the supervisor has migrated already (or checked, with AUTHSVC_MIGRATE=false).
    pool, store = await open_store(url, settings, keyring, migrate=settings.migrate and workers == 1)
    state = new_state(store, url, settings)
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
        await state.stop()
        await pool.close()
    log.info("authsvc stopped")


def worker_count(settings: Settings) -> int:
    """How many server processes to run: the setting, or one per CPU core available to this process."""
    if settings.workers:
        return settings.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def serve(settings: Settings) -> None:
    """Runs the service until SIGINT or SIGTERM, with the embedded PostgreSQL when no URL is set.

    What keeps it from starting raises AuthsvcError (one line for the user); a stop signal before it serves
    raises Interrupted.
    """
    _interrupt_on_signals()
    use_event_loop(settings)
    tls.check(settings)  # wrong TLS files fail here, in one line, before a database or a worker starts
    keyring = keyring_for(settings)  # here, once: the workers are handed it
    workers = worker_count(settings)
    with _claimed_ports(settings, workers), database_url(settings) as url:
        if workers == 1:
            signals = StopSignals()
            _run(_serve(url, settings, keyring, signals), signals)
        else:
            _serve_workers(url, settings, keyring, workers)


def port_lock_path(host: str, port: int) -> Path:
    """The file a server locks for its life on host:port (in the temporary directory, writable in a container)."""
    return Path(tempfile.gettempdir()) / f"authsvc-{host.strip('[]').replace('/', '_')}-{port}.lock"


@contextmanager
def _port_lock(host: str, port: int) -> Iterator[None]:
    path = port_lock_path(host, port)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        # Another user's file: that user's server cannot share our port anyway (SO_REUSEPORT needs the same user).
        log.debug("cannot open %s (%s): the port check alone guards %s:%d", path, exc.strerror, host, port)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"cannot listen for gRPC on {host}:{port}: another authsvc server holds it ({path} is locked)"
            ) from None
        yield
    finally:
        os.close(fd)


def _check_free(host: str, port: int, what: str) -> None:
    """Raises ConfigError when a socket of another process listens on host:port, whether it shares or not."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot listen for {what} on {host}:{port}: {reason}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # Not SO_REUSEPORT: then the bind fails while any socket listens there, sharing (SO_REUSEPORT) or
            # not. SO_REUSEADDR: connections of a server that just stopped (TIME_WAIT) do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None


@contextmanager
def _claimed_ports(settings: Settings, workers: int) -> Iterator[None]:
    """Refuses ports another process listens on, before anything starts: the gRPC port (the workers of this
    server share it, no one else) and each worker's HTTP port. The gRPC port's lock file, held until the server
    stops, keeps two servers starting at once from both passing the check."""
    with ExitStack() as held:
        if settings.port:
            held.enter_context(_port_lock(settings.host, settings.port))
            _check_free(settings.host, settings.port, "gRPC")
        if settings.http_port:
            last = settings.http_port + (workers - 1 if workers > 1 else 0)
            if last > 65535:
                raise ConfigError(f"AUTHSVC_HTTP_PORT + one port per worker goes past 65535 ({last})")
            for http_port in range(settings.http_port, last + 1):
                _check_free(settings.host, http_port, "HTTP")
        yield


def _worker_main(
    url: str, settings: Settings, keyring: Keyring, worker: int, workers: int, serving: MutableSequence[int]
) -> None:
    configure_logging(settings.log_level, worker=worker + 1)
    use_event_loop(settings)

    def report_serving() -> None:
        serving[worker] = 1

    # SIGINT stays ignored (inherited): the supervisor turns a Ctrl-C into SIGTERM for every worker.
    signals = StopSignals((signal.SIGTERM,), on_serving=report_serving)
    try:
        _run(_serve(url, settings, keyring, signals, worker, workers), signals)
    except AuthsvcError as exc:
        print(f"authsvc: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as exc:
        sys.exit(exc.exit_code)


def _serve_workers(url: str, settings: Settings, keyring: Keyring, workers: int) -> None:
    """Runs `workers` server processes on one port; stops them all on SIGINT/SIGTERM or when one dies."""
    signals = StopSignals()
    _run(_prepare_database(url, settings, keyring, signals), signals)
    _interrupt_on_signals()  # the event loop's exit set the defaults back
    if settings.port == 0:
        # Every worker must bind the same port: reserve a free one (bound, never listening) for them.
        reserved = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((settings.host, 0))
        settings = settings.with_overrides(port=reserved.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    serving = context.RawArray("b", workers)  # worker i sets [i] once it serves
    processes = [
        context.Process(
            target=_worker_main, args=(url, settings, keyring, i, workers, serving), name=f"authsvc-worker-{i + 1}"
        )
        for i in range(workers)
    ]
    received: list[int] = []

    def stop_workers() -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def stop(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
        stop_workers()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers (see _worker_main)
    for process in processes:
        if not received:
            process.start()
    signal.signal(signal.SIGINT, stop)
    if received:
        stop_workers()  # one may have been starting when the signal came
    log.info("authsvc running %d workers on %s:%d", workers, settings.host, settings.port)
    failed = False
    started = [process for process in processes if process.pid is not None]
    while any(process.is_alive() for process in started):
        for process in started:
            process.join(timeout=0.2)
            if not process.is_alive() and process.exitcode not in (0, None) and not (received or failed):
                log.error("%s exited with %s; stopping the others", process.name, process.exitcode)
                failed = True
                stop_workers()
    # A worker that SIGTERM reached before it could handle it ends with -SIGTERM: stopped as asked.
    if failed or any(process.exitcode not in (0, -signal.SIGTERM) for process in started):
        raise SystemExit(1)
    if received and not all(serving):
        raise Interrupted(received[0])


async def _prepare_database(url: str, settings: Settings, keyring: Keyring, signals: StopSignals) -> None:
    signals.install()
    pool, _ = await open_store(url, settings, keyring, migrate=settings.migrate)
    await pool.close()
