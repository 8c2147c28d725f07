"""The processes the bench starts (servers, commands): each started in a group of its own, found by its port,
and stopped on any exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.proc import listening_ports, memory_kib, process_tree

REPO = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"serving gRPC on (?:\[[^\]]*\]|[^\s:\"']+):(\d+)")

# Every process the bench starts, so that an exit by any path (exception, Ctrl-C, SIGTERM) can kill it.
_children: dict[int, str] = {}


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


async def reap(process: asyncio.subprocess.Process) -> None:
    """SIGKILLs the process's group if the process still runs, waits for it, and forgets it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    unregister(process.pid)


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
        await reap(process)
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

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the server process, in KiB (0 where /proc did not say)."""
        return {"VmRSS": 0, "VmHWM": 0, **memory_kib(self.pid)}

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
