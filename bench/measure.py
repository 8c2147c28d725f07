"""One load measurement of `make bench`: generator processes (bench/load.py) against a server for one window,
the server's, PostgreSQL's and the machine's CPU read around it; repeated, or in interleaved rounds, the best kept."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from bench.context import Bench, Row, first_line, log
from bench.proc import CLK_TCK, machine_ticks, set_affinity, tree_cpu_by_process
from bench.servers import REPO, ServerProcess, clean_env, reap, register

SpecFor = Callable[[int], dict[str, Any]]
"""The load spec (bench/load.py's) of generator i of a scenario."""


def _open_for_writing(path: Path) -> IO[bytes]:
    return open(path, "wb")


def _read_latencies(path: Path) -> array[int]:
    values = array("q")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    return values


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return math.nan
    return float(sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))])


def _for_attempt(spec: dict[str, Any], attempt: int) -> dict[str, Any]:
    """The spec with its user-id prefixes made unique to the attempt, so a repeat never re-sends a fresh token."""
    spec = dict(spec)
    if "prefix" in spec:
        spec["prefix"] = f"{spec['prefix']}r{attempt}-"
    if isinstance(spec.get("tokens"), dict) and "prefix" in spec["tokens"]:
        spec["tokens"] = {**spec["tokens"], "prefix": f"{spec['tokens']['prefix']}r{attempt}-"}
    return spec


def _attempt_specs(spec_for: SpecFor, attempt: int) -> SpecFor:
    return lambda i: _for_attempt(spec_for(i), attempt)


async def wait_for_quiet(bench: Bench) -> float:
    """Waits (within what is left of the run's budget) until the machine is nearly idle; returns its busy cores.

    Other jobs on a 2-core machine skew every figure; a short wait for them to finish is cheaper than a bad row.
    """
    started = time.monotonic()
    while True:
        busy0, _ = machine_ticks()
        await asyncio.sleep(0.5)
        busy1, _ = machine_ticks()
        busy = (busy1 - busy0) / CLK_TCK / 0.5
        waited = time.monotonic() - started
        if busy < bench.opts.quiet_cores or bench.quiet_waited + waited >= bench.opts.quiet_budget:
            bench.quiet_waited += waited
            return busy


async def measure(bench: Bench, row: Row, server: ServerProcess, spec_for: SpecFor, *, always: bool = False) -> Row:
    """Runs the generators against `server` `repeat` times and keeps the run with the most calls/s in `row`.

    A failure is recorded in the row (one scenario's failure must not hide the others' figures). A row not
    selected by --only is skipped, unless `always` (a row that a selected scenario needs).
    """
    if not always and not bench.opts.selected(row.key):
        return row
    trials = [await _trial(bench, row, server, spec_for, attempt) for attempt in range(bench.opts.repeat)]
    return _keep_best(bench, row, trials)


Scenario = tuple[Row, ServerProcess, SpecFor]
"""A row, the server it measures, and its load."""


async def measure_interleaved(bench: Bench, scenarios: list[Scenario]) -> None:
    """Runs `rounds` rounds of every scenario, one trial of each per round, in turn.

    The ratios between them are then taken round by round (see `targets`): two scenarios measured seconds
    apart see the same background load, two measured minutes apart may not. The table keeps each row's best.
    """
    scenarios = [sc for sc in scenarios if bench.opts.selected(sc[0].key)]
    trials: dict[str, list[Row]] = {row.key: [] for row, _, _ in scenarios}
    for attempt in range(bench.opts.rounds):
        for row, server, spec_for in scenarios:
            trials[row.key].append(await _trial(bench, row, server, spec_for, attempt))
    for row, _, _ in scenarios:
        bench.rounds[row.key] = trials[row.key]
        _keep_best(bench, row, trials[row.key])


async def _trial(bench: Bench, row: Row, server: ServerProcess, spec_for: SpecFor, attempt: int) -> Row:
    trial = replace(row, notes=[])
    busy = await wait_for_quiet(bench)
    if busy >= bench.opts.quiet_cores:
        trial.notes.append(f"started while the machine was {busy * 100:.0f}% busy (of one core)")
    try:
        await _measure(bench, trial, server, _attempt_specs(spec_for, attempt))
    except Exception as exc:
        trial.error = first_line(exc)
        log(f"{row.label}: FAILED: {exc}")
    return trial


def _keep_best(bench: Bench, row: Row, trials: list[Row]) -> Row:
    ok = [t for t in trials if t.error is None and t.calls_per_s is not None]
    if not ok:
        best = trials[-1]
        bench.failures.append(f"{row.label}: {best.error}")
    else:
        best = max(ok, key=lambda t: t.calls_per_s or 0.0)
        if len(trials) > 1:
            runs = ", ".join("failed" if t.error else f"{t.calls_per_s:,.0f}" for t in trials)
            best.notes.insert(0, f"best of {len(trials)} runs (calls/s: {runs})")
    bench.rows.append(best)
    return best


async def _measure(bench: Bench, row: Row, server: ServerProcess, spec_for: SpecFor) -> None:
    opts = bench.opts
    n = opts.generators
    common: dict[str, Any] = {
        "target": server.target,
        "channels": max(1, opts.channels // n),
        "concurrency": max(1, opts.concurrency // n),
        "warmup": opts.warmup,
        "duration": opts.duration,
        "max_seconds": opts.warmup + opts.duration + 300,
    }
    generators: list[asyncio.subprocess.Process] = []
    err_paths: list[Path] = []
    lat_paths: list[Path] = []
    results: list[dict[str, Any]] = []
    log(f"{row.label}: {server.name} at {server.target}")
    try:
        for i in range(n):
            spec = {**common, **spec_for(i)}
            lat_paths.append(bench.tmp / f"{row.key}-{i}.lat")
            err_paths.append(bench.tmp / f"{row.key}-{i}.err")
            spec["latency_file"] = str(lat_paths[-1])
            with _open_for_writing(err_paths[-1]) as err:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.load",
                    cwd=REPO, env=clean_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=err, start_new_session=True,
                )  # fmt: skip
            register(process.pid, f"bench.load {row.key} {i}")
            generators.append(process)
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec).encode() + b"\n")
            await process.stdin.drain()

        def failure(i: int, what: str) -> RuntimeError:
            tail = _read_text(err_paths[i]).strip().splitlines()[-5:]
            return RuntimeError(f"generator {i} {what}: " + (" | ".join(tail) or "no output"))

        for i, process in enumerate(generators):
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), common["max_seconds"])
            if line.strip() != b"ready":
                raise failure(i, "did not get ready")
        if opts.placement is not None:  # the server on a core of its own, as if the load came from elsewhere
            set_affinity(server.pid, opts.placement[0])
            for process in generators:
                set_affinity(process.pid, opts.placement[1])
        by_process0 = tree_cpu_by_process(server.pid)
        db0 = bench.pg.cpu_seconds()
        busy0, _ = machine_ticks()
        t0 = time.monotonic()
        for process in generators:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
        await asyncio.gather(*(p.stdin.drain() for p in generators if p.stdin is not None))
        await asyncio.sleep(opts.duration)
        by_process1 = tree_cpu_by_process(server.pid)
        db1 = bench.pg.cpu_seconds()
        busy1, _ = machine_ticks()
        t1 = time.monotonic()
        for i, process in enumerate(generators):
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if not line.strip():
                raise failure(i, "gave no result")
            results.append(json.loads(line))
            await asyncio.wait_for(process.wait(), 30)
    finally:
        if opts.placement is not None:  # free again for what runs next (PostgreSQL work, the next scenario)
            set_affinity(server.pid, opts.placement[0] | opts.placement[1])
        for process in generators:
            await reap(process)

    latencies: list[int] = []
    for path in lat_paths:
        latencies.extend(_read_latencies(path))
    latencies.sort()
    wall = t1 - t0
    row.calls = sum(r["calls"] for r in results)
    row.window_s = sum(r["window_seconds"] for r in results) / len(results)
    if row.calls == 0:
        errors = {k: v for r in results for k, v in {**r["warmup_errors"], **r["errors"]}.items()}
        raise RuntimeError(f"no call succeeded in the window (errors: {errors or 'none'})")
    row.calls_per_s = sum(r["calls"] / r["window_seconds"] for r in results)
    per_call = results[0]["tokens_per_call"]
    if per_call:
        row.tokens_per_s = row.calls_per_s * per_call
    row.p50_ms = percentile(latencies, 0.50) / 1e6
    row.p99_ms = percentile(latencies, 0.99) / 1e6
    calls_in_wall = row.calls_per_s * wall
    used = sorted((t - by_process0.get(pid, 0.0) for pid, t in by_process1.items()), reverse=True)
    server_cpu = sum(used)
    if len(used) > 1 and server_cpu > 0:
        # Several workers share the port (SO_REUSEPORT): the kernel hashes each connection to one of them.
        row.notes.append(
            f"the server's {len(used)} processes took {', '.join(f'{u / server_cpu:.0%}' for u in used)} "
            "of its CPU in the window"
        )
    row.server_cpu_us = server_cpu / calls_in_wall * 1e6
    row.server_cpu_pct = server_cpu / wall * 100
    db_cpu = None if db0 is None or db1 is None else db1 - db0
    if db_cpu is not None:
        row.db_cpu_us = db_cpu / calls_in_wall * 1e6
    gen_cpu = sum(r["cpu_seconds"] for r in results)
    row.gen_cpu_pct = gen_cpu / row.window_s * 100
    machine_cpu = (busy1 - busy0) / CLK_TCK
    row.other_cpu_pct = (
        max(0.0, machine_cpu - server_cpu - gen_cpu * wall / row.window_s - (db_cpu or 0.0)) / wall * 100
    )

    errors_total = sum(sum(r["errors"].values()) for r in results)
    if errors_total:
        merged: dict[str, int] = {}
        for r in results:
            for code, count in r["errors"].items():
                merged[code] = merged.get(code, 0) + count
        row.notes.append(f"{errors_total} calls failed in the window: {merged}")
        bench.failures.append(f"{row.label}: {errors_total} calls failed: {merged}")
    bad = sum(r["bad_answers"] for r in results)
    if bad:
        row.notes.append(f"{bad} answers were not the expected outcome")
        bench.failures.append(f"{row.label}: {bad} answers were not the expected outcome")
    for i, r in enumerate(results):
        if r["wrapped"]:
            row.notes.append(
                f"generator {i} went through its {r['requests']:,} distinct requests "
                f"{r['requests_used'] / r['requests']:.1f} times"
            )
    log(
        f"{row.label}: {row.calls_per_s:,.0f} calls/s, p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, "
        f"server {row.server_cpu_us:,.0f} µs/call ({row.server_cpu_pct:.0f}% of a core), "
        f"generators {row.gen_cpu_pct:.0f}%, other {row.other_cpu_pct:.0f}%"
    )
