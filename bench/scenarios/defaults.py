"""The `defaults` rows of `make bench`: `authsvc serve` as `make run` starts it, and tuned beside it.

A user runs the defaults: the event loop, the log level and the worker count the server picks when nothing is
set. Each configuration gets a server of its own, started with no AUTHSVC_EVENT_LOOP, AUTHSVC_LOG_LEVEL or
AUTHSVC_WORKERS beyond what the configuration names, its stdout (the JSON log, one access-log line per call at
INFO) going to a file as a log collector would take it. VerifyToken of a repeated token is measured against
Health/Check of the same server, in interleaved rounds (bench/measure.py). What each server really ran with is then
read from the server itself, not assumed: its worker processes and the event loop loaded in each (/proc), its
log level from what its log holds, and whatever its start-up log says about either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import Bench, Row, Target, log
from bench.database import fresh_database
from bench.measure import measure_interleaved
from bench.proc import listening_ports, process_tree
from bench.scenarios.throughput import health_spec, repeated_tokens, verify_specs
from bench.servers import ServerProcess, clean_env
from bench.service import BENCH_KEK, create_app, migrate

TARGET = 0.9
"""VerifyToken of a repeated token ÷ Health/Check of the same server, calls/s, with the defaults (the issue's)."""


@dataclass(frozen=True)
class Config:
    """One configuration of `authsvc serve` measured by the defaults rows."""

    key: str
    """Row-key prefix: its rows are `<key>-a` (Health/Check) and `<key>-b-rep` (VerifyToken)."""
    title: str
    chart: str
    env: dict[str, str]
    """The settings the configuration sets, beyond what every bench server needs to run on a shared machine."""

    @property
    def env_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.env.items()) or "none of its own"

    def check_row(self) -> Row:
        return Row(f"{self.key}-a", f"({self.key}) Health/Check, {self.title}", f"{self.chart} check", self.server)

    def verify_row(self) -> Row:
        label = f"({self.key}) VerifyToken HS256 repeated (100 tokens), {self.title}"
        return Row(f"{self.key}-b-rep", label, f"{self.chart} verify", self.server)

    @property
    def server(self) -> str:
        return f"authsvc ({self.chart})"


CONFIGS = (
    Config("defaults", "as `make run` starts it", "make run", {}),
    Config(
        "defaults-tuned",
        "uvloop and WARNING",
        "tuned",
        {"AUTHSVC_EVENT_LOOP": "uvloop", "AUTHSVC_LOG_LEVEL": "WARNING"},
    ),
)
CONNECTIONS = 16
"""TCP connections in all for these rows (calls in flight stay the bench's). Workers share the port through
SO_REUSEPORT, the kernel hashing each connection to one of them: with the bench's 4 and two workers, one window
in eight has every connection on one worker (2 × ½⁴), a server cheaper per call than one whose workers take
turns on the core (Health/Check on uvloop: 300 µs a call so against 361 split), so the two sides of a ratio could
be measured on differently loaded servers."""


def spread(spec_for: Callable[[int], dict[str, Any]], generators: int) -> Callable[[int], dict[str, Any]]:
    """The load of `spec_for` over CONNECTIONS connections."""
    return lambda i: {**spec_for(i), "channels": max(1, CONNECTIONS // generators)}


ROW_KEYS = frozenset(key for c in CONFIGS for key in (f"{c.key}-a", f"{c.key}-b-rep"))

COMMON_ENV_TEXT = (
    "AUTHSVC_DATABASE_URL (the bench's database), AUTHSVC_KEK (required with an external database) and "
    "AUTHSVC_HTTP_PORT=0 (a free /metrics port per worker: the default 8080 may be taken on a shared machine)"
)
"""What every defaults server gets besides its configuration's settings, and why."""


def serve_argv() -> list[str]:
    """`authsvc serve` as `make run` runs it (the virtualenv's console script), on a free loopback port."""
    script = Path(sys.executable).with_name("authsvc")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]
    return [*command, "serve", "--host", "127.0.0.1", "--port", "0"]


def server_for(config: Config, database_url: str, kek: str, log_dir: Path) -> ServerProcess:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_KEK=kek, AUTHSVC_HTTP_PORT="0", **config.env)
    server = ServerProcess(f"authsvc ({config.key})", serve_argv(), env)
    server.log_file = log_dir / f"{config.key}.log"
    return server


@dataclass
class Observed:
    """What a defaults server ran with, read from the server itself after its rounds."""

    config: Config
    expected_workers: int
    """What the server's default asks for here: one per CPU this process (and so the server) may use."""
    workers: list[int] = field(default_factory=list)
    """Processes of the server listening on its gRPC port."""
    uvloop_workers: int = 0
    """Workers with uvloop's extension module mapped (/proc/PID/maps)."""
    levels: Counter[str] = field(default_factory=Counter)
    """Lines of its log by level."""
    access_lines: Counter[str] = field(default_factory=Counter)
    """Access-log lines by method."""
    log_bytes: int = 0
    stated: list[str] = field(default_factory=list)
    """What its start-up log says about its event loop or log level, when it says anything."""
    error: str | None = None

    @property
    def event_loop(self) -> str:
        n = len(self.workers)
        if not n:
            return "unknown (no worker found)"
        if self.uvloop_workers == n:
            return f"uvloop (its extension loaded in {'the worker' if n == 1 else f'each of the {n} workers'})"
        if self.uvloop_workers == 0:
            return "asyncio (uvloop not loaded in any worker)"
        return f"mixed: uvloop loaded in {self.uvloop_workers} of {n} workers"

    @property
    def log_level(self) -> str:
        """The level the log shows the server ran at (its lowest level present), with the evidence."""
        access = sum(self.access_lines.values())
        for level in ("DEBUG", "INFO"):
            if self.levels[level]:
                return f"{level} ({self.levels[level]:,} {level} lines, {access:,} of them access-log lines)"
        total = sum(self.levels.values())
        return f"WARNING or above (no INFO or DEBUG line, no access-log line; {total:,} lines in all)"


async def wait_for_workers(server: ServerProcess, expected: int, within: float = 60) -> list[int]:
    """The server's processes that listen on its gRPC port, once `expected` do (or `within` seconds passed).

    Health/Check answers SERVING as soon as one worker is up; a window started then would send every
    connection to that one, as the others do not listen yet.
    """
    deadline = time.monotonic() + within
    while True:
        listening = [pid for pid in process_tree(server.pid) if server.port in listening_ports([pid])]
        if len(listening) >= expected or time.monotonic() > deadline:
            return sorted(listening)
        await asyncio.sleep(0.05)


def uvloop_loaded(pid: int) -> bool:
    """Whether uvloop's extension module is mapped into the process."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any("/uvloop/" in line for line in f)
    except OSError:
        return False


_STATED_LOOP = re.compile(r"\b(uvloop|asyncio)\b", re.IGNORECASE)
_STATED_LEVEL = re.compile(r"\blog(?:ging)?[ _-]level\b\W*(DEBUG|INFO|WARNING|ERROR)\b", re.IGNORECASE)
_ACCESS = '"logger":"authsvc.access"'
_METHOD = re.compile(r'"method":"([^"]*)"')
_LEVEL = re.compile(r'"level":"([A-Z]+)"')


def read_log(path: Path, observed: Observed) -> None:
    """Counts the log's lines by level and its access-log lines by method, and keeps what its other lines say
    about the event loop or the log level (field names or words: the bench does not know how a build says it)."""
    with contextlib.suppress(OSError):
        observed.log_bytes = path.stat().st_size
    try:
        f = open(path, errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            if _ACCESS in line:  # the bulk of the log: read without a JSON parse
                level, method = _LEVEL.search(line), _METHOD.search(line)
                observed.levels[level.group(1) if level else "?"] += 1
                observed.access_lines[method.group(1) if method else "?"] += 1
                continue
            try:
                record = json.loads(line)
            except ValueError:
                observed.levels["not JSON"] += 1
                continue
            if not isinstance(record, dict):
                continue
            observed.levels[str(record.get("level", "?"))] += 1
            observed.stated.extend(_stated(record))


def _stated(record: dict[str, Any]) -> list[str]:
    said = [
        f"{key}={value}"
        for key, value in record.items()
        if ("loop" in key.lower() or key.lower() in ("log_level", "loglevel")) and isinstance(value, str | int)
    ]
    message = str(record.get("message", ""))
    if _STATED_LOOP.search(message) or _STATED_LEVEL.search(message):
        said.append(f"“{message[:160]}”")
    if not said:
        return []
    where = f"worker {record['worker']}" if "worker" in record else str(record.get("logger", "?"))
    return [f"{', '.join(said)} ({where})"]


async def observe(config: Config, server: ServerProcess, expected_workers: int) -> Observed:
    """What `server` ran with: read after its rounds, so that the log holds the calls' lines too."""
    observed = Observed(config, expected_workers)
    try:
        observed.workers = await wait_for_workers(server, expected_workers, within=5)
        observed.uvloop_workers = sum(uvloop_loaded(pid) for pid in observed.workers)
    except OSError as exc:
        observed.error = f"could not read its processes: {exc}"
    if server.log_file is not None:
        read_log(server.log_file, observed)
    return observed


def expected_workers() -> int:
    """The server's default worker count here (authsvc.workers.worker_count with AUTHSVC_WORKERS unset): the
    server inherits this process's CPU affinity."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.asynccontextmanager
async def servers(database_url: str, kek: str, log_dir: Path) -> AsyncIterator[list[ServerProcess]]:
    """Every configuration's server, started (each with all its workers listening), stopped on exit."""
    started: list[ServerProcess] = []
    try:
        for config in CONFIGS:
            server = server_for(config, database_url, kek, log_dir)
            started.append(server)
            await server.start()
            await wait_for_workers(server, expected_workers())
        yield started
    finally:
        for server in started:
            await server.stop()


async def run(bench: Bench) -> list[Observed]:
    """VerifyToken ÷ Health/Check of the same server, for every configuration, in interleaved rounds on a database
    of their own; then what each server really ran with."""
    async with fresh_database(bench.pg, "defaults") as url:
        await migrate(url)
        app = await create_app(url, "bench-defaults")
        verify = verify_specs(app, repeated_tokens(bench, app), bench)["repeated"]
        async with servers(url, BENCH_KEK, bench.tmp) as started:
            pairs = list(zip(CONFIGS, started, strict=True))
            await measure_interleaved(
                bench,
                [
                    scenario
                    for config, server in pairs
                    for scenario in (
                        (config.check_row(), server, spread(health_spec, bench.opts.generators)),
                        (config.verify_row(), server, spread(verify, bench.opts.generators)),
                    )
                ],
            )
            workers = expected_workers()
            observed = [await observe(config, server, workers) for config, server in pairs]
    for o in observed:
        log(f"({o.config.key}): {len(o.workers)} workers, event loop {o.event_loop}, log level {o.log_level}")
    return observed


def targets(bench: Bench) -> list[Target]:
    """Each configuration's VerifyToken ÷ Health/Check target, the median of its ratios round by round."""
    return [
        bench.paired_target(
            f"VerifyToken HS256 repeated calls/s ÷ Health/Check calls/s of the same server, {config.title}",
            (f"{config.key}-b-rep", "calls_per_s"),
            (f"{config.key}-a", "calls_per_s"),
            TARGET,
            True,
            f"settings: {config.env_text}",
        )
        for config in CONFIGS
    ]


def section(
    observed: Sequence[Observed] | None,
    round_ratios: Callable[[str, str, str], list[float]],
    placement: str,
    failure: str | None,
) -> list[str]:
    """The report's section on the defaults rows; `round_ratios(num, den, figure)`: a figure of row `num` ÷ the
    same of row `den`, round by round."""
    lines = ["## `authsvc serve` as `make run` starts it (defaults)", ""]
    if failure is not None or not observed:
        return [*lines, f"Not measured: {failure or 'see failures'}.", ""]
    lines += [
        "A server of its own for each configuration, on a database of its own, both running: `authsvc serve "
        "--host 127.0.0.1 --port 0` (the virtualenv's `authsvc`, as `make run` runs it) with "
        f"{COMMON_ENV_TEXT}, and nothing else set but the configuration's own settings below — "
        "no AUTHSVC_WORKERS, so the server starts its default number of workers. Its stdout, the JSON log, "
        "goes to a file, as a log collector would take it. Health/Check and VerifyToken of the same 100 repeated "
        f"HS256 tokens as (b), the same calls in flight as every row but over {CONNECTIONS} connections (see "
        "below), in interleaved rounds (make run's Check, Verify, then "
        "tuned Check, Verify; again); each ratio is VerifyToken ÷ Health/Check of the same server, round by "
        f"round. {placement}",
        "",
        "What each server ran with is read from the server: workers are its processes listening on the gRPC "
        "port, the event loop is whether uvloop's extension is loaded in each (`/proc/PID/maps`), the log "
        "level is the lowest level in its log, and the last column is what its start-up log says about either.",
        "",
        "| configuration | settings it set | workers | event loop | log level | log written | "
        "VerifyToken ÷ Health/Check calls/s (median of the rounds) | range (each round) | target | verdict | "
        "server CPU µs per VerifyToken ÷ per Check (median; range) | start-up log says |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for o in observed:
        c = o.config
        r = round_ratios(f"{c.key}-b-rep", f"{c.key}-a", "calls_per_s")
        cpu = round_ratios(f"{c.key}-b-rep", f"{c.key}-a", "server_cpu_us")
        cpu_text = "—" if not cpu else f"{statistics.median(cpu):.2f}; {min(cpu):.2f}-{max(cpu):.2f}"
        median = statistics.median(r) if r else None
        spread = "—" if not r else f"{min(r):.2f}-{max(r):.2f} ({', '.join(f'{x:.2f}' for x in r)})"
        verdict = "not measured" if median is None else ("**met**" if median >= TARGET else "**not met**")
        workers = str(len(o.workers))
        if len(o.workers) != o.expected_workers:
            workers += f" (default here: {o.expected_workers})"
        lines.append(
            f"| {c.title} | {c.env_text} | {workers} | {o.event_loop} | {o.log_level} | "
            f"{o.log_bytes / 1e6:.1f} MB | {'—' if median is None else f'{median:.2f}'} | {spread} | "
            f"≥ {TARGET:g} | {verdict} | {cpu_text} | {'; '.join(dict.fromkeys(o.stated)) or 'nothing about either'} |"
        )
    lines += [
        "",
        "The CPU ratio moves less than calls/s when other jobs share the machine: a server that spends all its "
        "CPU on calls reaches 1 ÷ that ratio in calls/s. Connections: the workers share the port "
        f"(SO_REUSEPORT) and the kernel hashes each connection to one of them; these rows open {CONNECTIONS} so "
        "that every worker gets some in every window (with the bench's 4 and two workers, one window in eight "
        "has them all on one worker, a server cheaper per call). The notes under the results table give, for "
        "each window, each server process's share of the server's CPU.",
        "",
    ]
    for o in observed:
        if o.access_lines:
            by_method = ", ".join(f"{m} {n:,}" for m, n in o.access_lines.most_common())
            lines.append(f"- {o.config.title}: access-log lines by method (warm-ups included): {by_method}.")
        if o.error:
            lines.append(f"- {o.config.title}: {o.error}.")
    lines.append("")
    return lines
