"""The report of `make bench` (docs/performance.md): the machine, the versions, how it was measured, every figure,
the targets, Mermaid charts, and each scenario's own section."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.context import Bench, Options, Row, Target
from bench.database import PostgresServer
from bench.proc import CLK_TCK
from bench.scenarios import defaults, local, memory, propagation, revocations, throughput
from bench.scenarios.throughput import BATCH_SIZE, REPEATED_POOL
from bench.servers import REPO
from bench.service import BENCH_LOOP, LOG_LEVEL


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
    }


def versions(postgres: str) -> dict[str, str]:
    import asyncpg
    import grpc
    import jwt
    from google.protobuf import __version__ as protobuf_version

    result = {
        "Python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
        "PyJWT": jwt.__version__,
        "asyncpg": asyncpg.__version__,
        "PostgreSQL": postgres,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "authsvc"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        result["authsvc"] = commit + (" + uncommitted changes in authsvc/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        result["authsvc"] = "unknown"
    return result


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def results_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| scenario | server | calls/s | tokens/s | p50 ms | p99 ms | server CPU µs/call | server CPU % | "
        "PostgreSQL CPU µs/call | generators CPU % | other CPU % | calls |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.label} | {r.server} | failed: {r.error} |  |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r.label} | {r.server} | {_num(r.calls_per_s)} | {_num(r.tokens_per_s)} | {_ms(r.p50_ms)} | "
            f"{_ms(r.p99_ms)} | {_num(r.server_cpu_us)} | {_num(r.server_cpu_pct)} | {_num(r.db_cpu_us)} | "
            f"{_num(r.gen_cpu_pct)} | {_num(r.other_cpu_pct)} | {r.calls:,} |"
        )
    return lines


def targets_table(targets: Sequence[Target]) -> list[str]:
    lines = ["| ratio or figure | this run | target | verdict |", "| --- | ---: | ---: | --- |"]
    for t in targets:
        sign = "≥" if t.higher_is_better else "≤"
        value = "—" if t.value is None else f"{t.value:.2f}{t.unit}"
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[t.met]
        detail = f" ({t.detail})" if t.detail else ""
        lines.append(f"| {t.name}{detail} | {value} | {sign} {t.threshold:g}{t.unit} | {verdict} |")
    return lines


def _chart(title: str, axis: str, rows: Sequence[tuple[str, float]]) -> list[str]:
    top = max((v for _, v in rows), default=1.0) * 1.1 or 1.0
    labels = ", ".join(f'"{label}"' for label, _ in rows)
    values = ", ".join(f"{v:.1f}" if v < 100 else f"{v:.0f}" for _, v in rows)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{labels}]",
        f'    y-axis "{axis}" 0 --> {top:.0f}' if top >= 10 else f'    y-axis "{axis}" 0 --> {top:.1f}',
        f"    bar [{values}]",
        "```",
    ]


def charts(rows: Sequence[Row]) -> list[str]:
    ok = [r for r in rows if r.error is None and r.calls_per_s is not None]
    throughput = [(r.chart_label, r.calls_per_s or 0.0) for r in ok]
    p99 = [(r.chart_label, r.p99_ms or 0.0) for r in ok]
    return [
        *_chart("Throughput per scenario (calls/s, higher is better)", "calls/s", throughput),
        "",
        *_chart("p99 latency per scenario (ms, lower is better)", "p99 ms", p99),
    ]


def key_value_table(values: dict[str, Any], header: tuple[str, str] = ("", "")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in values.items()]
    return lines


def targets(bench: Bench, extra: dict[str, Any]) -> list[Target]:
    return [
        *throughput.targets(bench),
        *defaults.targets(bench),
        propagation.target(extra.get("propagation")),
        *revocations.targets(bench, extra.get("million")),
        *local.targets(extra.get("local")),
    ]


def render(bench: Bench, extra: dict[str, Any], command: str, started: datetime.datetime, took: float) -> str:
    opts = bench.opts
    pg: PostgresServer = extra["postgres"]
    lines = [
        "# Performance",
        "",
        f"Figures from one run of `{command}` on {started:%Y-%m-%d %H:%M} UTC ({took / 60:.1f} min). "
        "`make bench` writes this file; run it again to refresh the figures on your machine.",
        "",
        "## Machine and versions",
        "",
        *key_value_table({**machine(), **versions(pg.version)}, ("", "")),
        "",
        "## How it was measured",
        "",
        "- Servers (all but the defaults rows, which have a section of their own): `authsvc serve --host 127.0.0.1 "
        "--port 0` subprocesses with `AUTHSVC_WORKERS=1` (one process), "
        f"`AUTHSVC_LOG_LEVEL={LOG_LEVEL}`, `AUTHSVC_EVENT_LOOP="
        f"{BENCH_LOOP}` (set explicitly, as the "
        "service's default `auto` does when uvloop is installed; one scenario runs the plain asyncio loop beside it), "
        "on a fresh database created for the run and dropped after it "
        f"({'an embedded PostgreSQL (pgserver)' if pg.embedded else 'the server AUTHSVC_BENCH_DATABASE_URL names'}).",
        f"- Log level: {LOG_LEVEL}. {access_log_note()}",
        f"- Load: {opts.generators} generator processes (`bench/load.py`, grpc.aio), "
        f"{max(1, opts.channels // opts.generators)} channels (TCP connections) and "
        f"{max(1, opts.concurrency // opts.generators)} calls in flight each — {opts.concurrency} in flight over "
        f"{opts.channels} connections in all. Requests are serialized before the window and sent as raw bytes. "
        f"Each scenario: {opts.warmup:g} s warm-up, then a {opts.duration:g} s measured window.",
        "- Latency: per call, from just before the call to its answer, in the generator; p50/p99 over every call "
        "of the window (all generators). At saturation, p50 ≈ calls in flight ÷ throughput (Little's law): "
        "latency here measures queueing as much as service time.",
        "- Server CPU: utime + stime of the server process (all threads) from `/proc/<pid>/stat`, read before and "
        f"after the window (resolution {1000 / CLK_TCK:.0f} ms), divided by the calls of the window. "
        "*Server CPU %* is of one core. *PostgreSQL CPU* is the postmaster and its backends (including exited ones) "
        "the same way; *other CPU* is the rest of the machine's busy time (`/proc/stat`) in the window.",
        f'- Tokens: `{{"user_id": ..., "iat": ...}}` HS256 with the app\'s API secret, as PyJWT makes them '
        f"(minted by the generator before the window, checked byte for byte against `jwt.encode`). *Repeated*: "
        f"the same {REPEATED_POOL} tokens cycled. *Fresh*: a token never sent before on every call "
        f"({opts.fresh_tokens:,} per generator). VerifyTokens: {BATCH_SIZE} fresh tokens per call "
        f"({opts.batch_tokens:,} per generator). RevokeUser: one user never revoked before per call.",
        "- Baseline (f): `bench/baseline_server.py`, a minimal grpc.aio server on the same stubs: "
        '`jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})` and one asyncpg query '
        "(`SELECT revoked_before FROM user_revocations WHERE app_id=$1 AND user_id=$2`, pool of 10) per call; "
        "same load, same tokens as (b).",
        *contention_notes(bench),
        "",
        "## Results",
        "",
        *results_table(bench.rows),
        "",
    ]
    notes = [(r.label, n) for r in bench.rows for n in r.notes]
    if notes:
        lines += [f"- {label}: {note}" for label, note in notes] + [""]
    lines += ["## Targets", "", *targets_table(targets(bench, extra)), ""]
    lines += [
        *throughput.baseline_comparison(bench),
        "",
        "## Charts",
        "",
        "Calls per second (VerifyTokens carries 100 tokens a call) and p99 latency, per scenario:",
        "",
        *charts(bench.rows),
        "",
    ]
    if any(opts.selected(key) for key in defaults.ROW_KEYS):
        lines += defaults.section(
            extra.get("defaults"),
            lambda num, den, figure: bench.round_ratios((num, figure), (den, figure)),
            _placement_text(opts),
            extra.get("defaults_failure"),
        )
    if opts.selected("g"):
        lines += propagation.section(extra.get("propagation"))
    if opts.selected("h"):
        lines += revocations.section(extra.get("million"), bench.opts.revocations)
    if bench.opts.selected("m"):
        lines += memory.section(extra.get("memory"))
    lines += local.section(extra.get("local"))
    lines += ["## Not measured, and other notes", ""]
    lines += [f"- {note}" for note in bench.notes]
    main_start = extra.get("main_start")
    if main_start:
        line_note = (
            f"{main_start['log_line_after']:.2f} s to its 'serving gRPC' line"
            if main_start["log_line_after"] is not None
            else f"no 'serving gRPC' line at {LOG_LEVEL}: the port was read from its listening socket"
        )
        lines.append(
            f"- The main server answered SERVING {main_start['serving_after']:.2f} s after its process started "
            f"— {line_note}; RSS {extra['main_rss_after_start']['VmRSS'] / 1024:.1f} MiB after start, "
            f"{extra['main_rss_at_end']['VmRSS'] / 1024:.1f} MiB after every scenario."
            if "main_rss_at_end" in extra
            else f"- The main server answered SERVING {main_start['serving_after']:.2f} s after its process started."
        )
    if bench.findings:
        lines += ["", "**Findings:**", ""] + [f"- {f}" for f in bench.findings]
    if bench.failures:
        lines += ["", "**Failures in this run** (the bench could not measure these, or got wrong answers):", ""]
        lines += [f"- {f}" for f in bench.failures]
    lines.append("")
    return "\n".join(lines)


def _placement_text(opts: Options) -> str:
    if opts.placement is None:
        return "The server's processes and the generators shared every core (--no-pin)."
    server_cpus, gen_cpus = (_cpu_list(c) for c in opts.placement)
    return (
        f"As for every row, each window ran the server's processes (all its workers) on CPU {server_cpus} alone "
        f"and the generators on CPU {gen_cpus}; `--no-pin` lets them share every core."
    )


def contention_notes(bench: Bench) -> list[str]:
    """What shared the CPU with the server during the run, from the run's own readings."""
    opts = bench.opts
    ceiling = bench.row("a")
    others = sorted(r.other_cpu_pct for r in bench.rows if r.error is None and r.other_cpu_pct is not None)
    lines = [
        f"- (a), (b) HS256 and (c) ran in {opts.rounds} interleaved rounds (a, b repeated, b fresh, c; then again), "
        "and each target ratio between them is the median of its ratios round by round, so both sides of a ratio "
        f"saw the same background load; so did the two servers of (h). Every other scenario ran {opts.repeat} "
        "time(s). The table keeps each scenario's run with the most calls/s (every run's calls/s is in the notes "
        "under the table). Before each run the bench waited for "
        "the machine to go idle "
        f"(under {opts.quiet_cores * 100:.0f}% of a core busy), {opts.quiet_budget:g} s at most in all; it waited "
        f"{bench.quiet_waited:.0f} s in this run.",
    ]
    if opts.placement is not None:
        server_cpus, gen_cpus = (_cpu_list(c) for c in opts.placement)
        at_ceiling = (
            f" At the ceiling the server used {ceiling.server_cpu_pct:.0f}% of its core and the generators "
            f"{ceiling.gen_cpu_pct:.0f}% of theirs."
            if ceiling is not None and ceiling.server_cpu_pct is not None and ceiling.gen_cpu_pct is not None
            else ""
        )
        lines.append(
            f"- **Placement**: during each measured window the server process ran on CPU {server_cpus} alone and "
            f"the load generators on CPU {gen_cpus} (`sched_setaffinity`; PostgreSQL and everything else "
            "anywhere), as if the load came from other machines: the generators' own work, which grows with the "
            "size of requests and answers, then takes no CPU from the server. `--no-pin` lets them share every "
            f"core.{at_ceiling}"
        )
    elif ceiling is not None and ceiling.server_cpu_pct is not None and ceiling.gen_cpu_pct is not None:
        bound = (
            "so the single-process server, at about one full core, was the bottleneck"
            if ceiling.server_cpu_pct >= 85
            else "so the server was not saturated: the generators or other jobs held the run back"
        )
        lines.append(
            f"- **The load generators share the machine's {os.cpu_count()} cores with the server** (and with "
            f"PostgreSQL). At the ceiling they used {ceiling.gen_cpu_pct:.0f}% of a core while the server used "
            f"{ceiling.server_cpu_pct:.0f}%, {bound}. A generator process on the other core keeps them apart only "
            "while nothing else runs."
        )
    if others:
        lines.append(
            f"- **Other jobs ran on this machine during the run**: *other CPU %* (busy time in `/proc/stat` not "
            f"charged to the server, the generators or PostgreSQL; it includes kernel networking time) was "
            f"{others[len(others) // 2]:.0f}% of a core in the median window, {others[-1]:.0f}% at most. They take "
            "CPU from the server and the generators, so calls/s and latency move by tens of percent from run to "
            "run; *server CPU µs/call* moves least, and the CPU ratio is the steadiest of the targets."
        )
    return lines


def access_log_note() -> str:
    try:
        from authsvc import logs
    except ImportError:
        return "This build has no per-call logging."
    if hasattr(logs, "log_call"):
        return (
            "At INFO this build writes one access-log line per call (`authsvc.logs.log_call`); WARNING keeps "
            "that out of the figures, as a production deployment that ships no access log would."
        )
    return "This build has no per-call access log."


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus)))
