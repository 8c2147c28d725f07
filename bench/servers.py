"""What the bench runs and measures: the bench database, server processes, and readings from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVING_LINE = re.compile(r"serving gRPC on (?:\[[^\]]*\]|[^\s:\"']+):(\d+)")

# Every process the bench starts, so that an exit by any path (exception, Ctrl-C, SIGTERM) can kill it.
_children: dict[int, str] = {}


# -- /proc readings --


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """User + system CPU time of a process (all its threads, live or exited)."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    if with_reaped_children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / CLK_TCK


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def process_tree(root: int) -> list[int]:
    """The process and its descendants, alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(parent_of(int(entry)), []).append(int(entry))
            except (OSError, ValueError):
                continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def set_affinity(root: int, cpus: Collection[int]) -> None:
    """Lets every thread of the process tree at `root` run only on `cpus` (threads made later inherit it)."""
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def tree_cpu_seconds(root: int, *, with_reaped_children: bool = False) -> float:
    """CPU time of a process and its live descendants (and of its reaped ones, if asked)."""
    return sum(tree_cpu_by_process(root, with_reaped_children=with_reaped_children).values())


def tree_cpu_by_process(root: int, *, with_reaped_children: bool = False) -> dict[int, float]:
    """CPU time of a process and of each of its live descendants (with the root's reaped ones, if asked)."""
    times: dict[int, float] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            times[pid] = cpu_seconds(pid, with_reaped_children=with_reaped_children and pid == root)
    return times


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle, iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return total - idle, total


def listening_ports(pids: Sequence[int]) -> set[int]:
    """TCP ports the processes listen on (IPv4 and IPv6), from their socket inodes and /proc/net/tcp*."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    if not inodes:
        return ports
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pids[0]}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except (OSError, IndexError, StopIteration):
            continue
    return ports


# -- processes --


def register(pid: int, name: str) -> None:
    _children[pid] = name


def unregister(pid: int) -> None:
    _children.pop(pid, None)


def kill_all_children() -> None:
    """SIGKILLs every process group the bench started and has not stopped (each by its own id)."""
    for pid in list(_children):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _children.pop(pid, None)


def clean_env(**extra: str) -> dict[str, str]:
    """The bench's environment without any AUTHSVC_* setting of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(extra)
    return env


async def run_command(argv: Sequence[str], env: Mapping[str, str], within: float = 120) -> tuple[int, str, str]:
    """Runs a command to completion (killed after `within` seconds): (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    register(process.pid, argv[-1])
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        unregister(process.pid)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def json_object_with(text: str, key: str) -> dict[str, Any] | None:
    """The first JSON object in `text` that has `key` (the output may be mixed with JSON log lines)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and key in value:
            return value
    return None


AUTHSVC = [sys.executable, "-m", "authsvc"]


def _open_for_appending(path: Path) -> IO[bytes]:
    return open(path, "ab")


class ServerExited(RuntimeError):
    """A server process exited before it answered SERVING."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass
class ServerProcess:
    """A gRPC server subprocess (authsvc serve, or the baseline), its port and its start-up timings.

    The port comes from the "serving gRPC on HOST:PORT" log line when the server writes one (on stdout or
    stderr, as plain text or JSON), else from the sockets the process listens on; either way the server counts
    as started once grpc.health.v1.Health/Check answers SERVING on it.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    port: int = 0
    spawned_at: float = 0.0
    log_line_after: float | None = None
    """Seconds from spawn to the "serving gRPC" line, when the server wrote one."""
    serving_after: float = 0.0
    """Seconds from spawn to the first SERVING answer of the health check."""
    log: deque[str] = field(default_factory=lambda: deque(maxlen=400))
    log_file: Path | None = None
    """Where stdout goes when set (as a log collector would take it, and no bench CPU spent reading it);
    else stdout is read into `log` with stderr."""
    _log_port: int = 0
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.log.append(text)
            if not self._log_port and (match := SERVING_LINE.search(text)):
                self._log_port = int(match.group(1))
                self.log_line_after = time.monotonic() - self.spawned_at

    async def start(self, within: float = 120) -> ServerProcess:
        with contextlib.ExitStack() as files:
            stdout: Any = asyncio.subprocess.PIPE
            if self.log_file is not None:
                stdout = files.enter_context(_open_for_appending(self.log_file))  # the child keeps its own
            self.spawned_at = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=1 << 22,
            )
        register(self.process.pid, self.name)
        streams = [s for s in (self.process.stdout, self.process.stderr) if s is not None]
        self._readers = [asyncio.create_task(self._read(s)) for s in streams]
        tried_bad: set[int] = set()
        deadline = self.spawned_at + within
        while True:
            if self.process.returncode is not None:
                await asyncio.sleep(0.2)  # let the readers take the last lines
                last = next((line for line in reversed(self.log) if line.strip()), "no output")
                raise ServerExited(f"{self.name} exited with {self.process.returncode}: {last.strip()}", self.tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {within:.0f}s:\n" + self.tail())
            candidates = {self._log_port} if self._log_port else listening_ports(process_tree(self.pid))
            ports = sorted(candidates - tried_bad)
            statuses = await asyncio.gather(*(health_status(f"127.0.0.1:{port}", within=1.0) for port in ports))
            for port, status in zip(ports, statuses, strict=True):
                if status == health_pb2.HealthCheckResponse.SERVING:
                    self.serving_after = time.monotonic() - self.spawned_at
                    self.port = port
                    return self
                if status == -1:  # not gRPC (a metrics endpoint, say)
                    tried_bad.add(port)
            await asyncio.sleep(0.005)

    def tail(self, lines: int = 40) -> str:
        written = list(self.log)
        if self.log_file is not None:
            with contextlib.suppress(OSError), open(self.log_file, "rb") as f:
                start = max(0, f.seek(0, os.SEEK_END) - 16384)
                f.seek(start)
                text = f.read().decode(errors="replace").splitlines()
                written = text[1 if start else 0 :] + written  # a cut first line is dropped
        return "\n".join(written[-lines:])

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; every process of its group."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything of its group left behind
        unregister(process.pid)
        for reader in self._readers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 2)


async def health_status(target: str, within: float) -> int:
    """The health status of the server at `target`; 0 when it does not answer yet, -1 when it is not gRPC."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=within
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return 0
            return -1
    return int(reply.status)


@contextlib.asynccontextmanager
async def running(server: ServerProcess, within: float = 120) -> AsyncIterator[ServerProcess]:
    try:
        yield await server.start(within)
    finally:
        await server.stop()


# -- the database --


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@dataclass
class PostgresServer:
    """The PostgreSQL server the bench creates its databases on."""

    admin_url: str
    embedded: bool
    version: str = ""
    postmaster_pid: int | None = None
    """The postmaster, when it runs on this machine (its CPU time is then measured)."""

    def cpu_seconds(self) -> float | None:
        """CPU time of the postmaster and its backends, including backends that have exited."""
        if self.postmaster_pid is None:
            return None
        try:
            return tree_cpu_seconds(self.postmaster_pid, with_reaped_children=True)
        except OSError:
            return None


@contextlib.asynccontextmanager
async def postgres_server() -> AsyncIterator[PostgresServer]:
    """AUTHSVC_BENCH_DATABASE_URL's server, else an embedded one (pgserver) in a temporary directory."""
    url = os.environ.get("AUTHSVC_BENCH_DATABASE_URL")
    embedded = None
    if not url:
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        # Short path: the unix socket lives in the data dir.
        pgdata = Path(tempfile.mkdtemp(prefix="authsvc-bench-pg-"))
        embedded = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="delete")
        url = embedded.get_uri()
    assert url is not None
    try:
        conn = await asyncpg.connect(url, timeout=30)
        try:
            server = PostgresServer(url, embedded is not None, str(await conn.fetchval("SHOW server_version")))
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            with contextlib.suppress(OSError, ValueError):
                server.postmaster_pid = parent_of(int(backend))  # a backend's parent is the postmaster
        finally:
            await conn.close()
        yield server
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.cleanup)


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer, label: str) -> AsyncIterator[str]:
    """A new, empty database on the server, dropped afterwards (WITH (FORCE): every session is ended)."""
    name = f"authsvc_bench_{label}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server.admin_url, name)
    finally:
        admin = await asyncpg.connect(server.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
