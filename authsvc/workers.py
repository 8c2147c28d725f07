"""`authsvc serve`: one serving process (authsvc.server), or a supervisor of several worker processes sharing the
gRPC port; the ports claimed before anything starts, the workers spawned, and all stopped on a signal or when one
dies."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, MutableSequence, Sequence
from contextlib import ExitStack, contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path

from authsvc import tls, tracing
from authsvc.config import Settings
from authsvc.database import database_url, keyring_for, open_store
from authsvc.errors import AuthsvcError, ConfigError
from authsvc.logs import configure_logging
from authsvc.sealing import Keyring
from authsvc.server import Interrupted, StopSignals, interrupt_on_signals, run_loop, serve_process, use_event_loop

log = logging.getLogger(__name__)


def worker_count(settings: Settings) -> int:
    """How many server processes to run: the setting, or one per CPU core available to this process."""
    if settings.workers:
        return settings.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(settings: Settings) -> None:
    """Runs the service until SIGINT or SIGTERM, with the embedded PostgreSQL when no URL is set: in this process
    when `worker_count` is 1, else in that many worker processes sharing the gRPC port.

    What keeps it from starting raises AuthsvcError (one line for the user); a stop signal before it serves
    raises Interrupted.
    """
    interrupt_on_signals()
    use_event_loop(settings)
    tls.check(settings)  # wrong TLS files fail here, in one line, before a database or a worker starts
    tracing.check()  # so does tracing configured without its packages (authsvc[otel])
    keyring = keyring_for(settings)  # here, once: the workers are handed it
    workers = worker_count(settings)
    with _claimed_ports(settings), database_url(settings) as url:
        if workers == 1:
            signals = StopSignals()
            run_loop(serve_process(url, settings, keyring, signals), signals)
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
def _claimed_ports(settings: Settings) -> Iterator[None]:
    """Refuses ports another process listens on, before anything starts: the gRPC port (the workers of this
    server share it, no one else) and the HTTP port (the first worker's). The gRPC port's lock file, held until
    the server stops, keeps two servers starting at once from both passing the check."""
    with ExitStack() as held:
        if settings.port:
            held.enter_context(_port_lock(settings.host, settings.port))
            _check_free(settings.host, settings.port, "gRPC")
        if settings.http_port:
            _check_free(settings.host, settings.http_port, "HTTP")
        yield


def _worker_main(
    url: str,
    settings: Settings,
    keyring: Keyring,
    worker: int,
    workers: int,
    serving: MutableSequence[int],
    metrics_dir: str,
) -> None:
    configure_logging(settings.log_level, ok_line_rate=settings.access_log_rate, worker=worker + 1)
    use_event_loop(settings)

    def report_serving() -> None:
        serving[worker] = 1

    # SIGINT stays ignored (inherited): the supervisor turns a Ctrl-C into SIGTERM for every worker.
    signals = StopSignals((signal.SIGTERM,), on_serving=report_serving)
    try:
        run_loop(serve_process(url, settings, keyring, signals, worker, workers, metrics_dir), signals)
    except AuthsvcError as exc:
        print(f"authsvc: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as exc:
        sys.exit(exc.exit_code)


def _serve_workers(url: str, settings: Settings, keyring: Keyring, workers: int) -> None:
    """Runs `workers` server processes on one port; stops them all on SIGINT/SIGTERM or when one dies."""
    signals = StopSignals()
    run_loop(_prepare_database(url, settings, keyring, signals), signals)
    interrupt_on_signals()  # the event loop's exit set the defaults back
    if settings.port == 0:
        # Every worker must bind the same port: reserve a free one (bound, never listening) for them.
        reserved = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((settings.host, 0))
        settings = settings.with_overrides(port=reserved.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    serving = context.RawArray("b", workers)  # worker i sets [i] once it serves
    # The workers but the first serve their /metrics on unix sockets here; the first merges them (one target).
    metrics_dir = tempfile.TemporaryDirectory(prefix="authsvc-metrics-")
    processes = [
        context.Process(
            target=_worker_main,
            args=(url, settings, keyring, i, workers, serving, metrics_dir.name),
            name=f"authsvc-worker-{i + 1}",
        )
        for i in range(workers)
    ]
    try:
        _supervise(processes, serving, settings, workers)
    finally:
        metrics_dir.cleanup()


def _supervise(
    processes: Sequence[BaseProcess], serving: MutableSequence[int], settings: Settings, workers: int
) -> None:
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
