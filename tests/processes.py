"""`authsvc` as a user runs it, in real processes: one-shot commands, and `authsvc serve` with its JSON log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

AUTHSVC = [sys.executable, "-m", "authsvc"]

Record = dict[str, Any]
"""One JSON log line of the server."""


TEST_KEK = "dGVzdC1rZWstb2YtYXV0aHN2Yy10ZXN0cy0zMmJ5dGU="
"""The key-encryption key of every test process (base64 of 32 bytes), so they can read each other's rows."""


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without AUTHSVC_* variables (nor OTEL_*: tracing off), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "OTEL_"))}
    env["AUTHSVC_KEK"] = TEST_KEK
    env.update(extra)
    return env


def authsvc(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs one `authsvc` command to completion."""
    return subprocess.run([*AUTHSVC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


class Served:
    """A running `authsvc serve` process: its ports, and everything it wrote, read as it comes.

    Both pipes are drained all along: a server logging one line per call would otherwise block on a full pipe.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[Record] = []
        """The JSON lines of stdout, parsed."""
        self.log: list[str] = []
        """Every line of stdout and stderr, as written."""
        self.port = 0
        self.http_port = 0
        self._changed = asyncio.Event()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout, parse=True)),
            asyncio.create_task(self._read(process.stderr, parse=False)),
        ]

    @property
    def target(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        """All the process wrote, stdout and stderr."""
        return "".join(self.log)

    def messages(self) -> list[str]:
        """The messages of the JSON log, in order."""
        return [record.get("message", "") for record in self.records]

    async def wait_for(self, predicate: Callable[[list[Record]], bool]) -> None:
        """Waits until `predicate(records)` holds; fails if the process ends, or after 90 s."""
        async with asyncio.timeout(90):
            while not predicate(self.records):
                if all(reader.done() for reader in self._readers):
                    raise AssertionError("authsvc serve ended before the expected log line:\n" + self.output)
                self._changed.clear()
                await self._changed.wait()

    async def finished(self) -> None:
        """Waits until the process has exited and both pipes are read to the end (at most 60 s)."""
        try:
            async with asyncio.timeout(60):
                await self.process.wait()
                await asyncio.gather(*self._readers)
        except TimeoutError:
            raise AssertionError("authsvc serve did not exit within 60 s of being stopped:\n" + self.output) from None

    async def _read(self, stream: asyncio.StreamReader, *, parse: bool) -> None:
        try:
            while line := (await stream.readline()).decode():
                self.log.append(line)
                if parse:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = {"message": line, "not_json": True}
                    self.records.append(record)
                self._changed.set()
        finally:
            self._changed.set()


_WORKERS = re.compile(r"running (\d+) workers")


def served_ports(records: list[Record], kind: str) -> list[int]:
    """The ports of the "serving gRPC|HTTP on host:port" lines (gRPC: one per worker; HTTP: the first worker's)."""
    pattern = re.compile(rf"serving {kind} on \S+:(\d+)$")
    return [int(m.group(1)) for r in records if (m := pattern.search(str(r.get("message", ""))))]


@asynccontextmanager
async def serve(env: dict[str, str], cwd: Path, *args: str, workers: int | None = None) -> AsyncIterator[Served]:
    """Runs `authsvc serve` on loopback and ephemeral ports, waits until every worker serves; SIGTERM at the end.

    `workers` None leaves the worker count to the default (one per core).
    """
    flags = ["--workers", str(workers)] if workers is not None else []
    process = await asyncio.create_subprocess_exec(
        *AUTHSVC, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", *flags, *args,
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    served = Served(process)

    def all_serving(records: list[Record]) -> bool:
        # With several workers, the parent names their number before any of them starts.
        counts = [int(m.group(1)) for r in records if (m := _WORKERS.search(str(r.get("message", ""))))]
        expected = counts[0] if counts else 1
        # Every worker serves gRPC; the first alone serves HTTP (/metrics of all of them, JWKS).
        return len(served_ports(records, "gRPC")) >= expected and len(served_ports(records, "HTTP")) >= 1

    try:
        await served.wait_for(all_serving)
        served.port = served_ports(served.records, "gRPC")[0]
        served.http_port = served_ports(served.records, "HTTP")[0]
        yield served
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await served.finished()
