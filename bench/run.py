"""`make bench`: every scenario against real `authsvc serve` processes, side by side, in one report.

    .venv/bin/python -m bench.run [--duration SECONDS] [--quick] [--output docs/performance.md]

Scenarios (each: calls/s, p50 and p99 latency, server CPU µs per call): (a) the ceiling, Health/Check;
(b) VerifyToken HS256 with a repeated pool of 100 tokens and with a fresh token every call (and EdDSA when the
build has it); (c) VerifyTokens with 100 fresh tokens a call; (d) IssueToken; (e) RevokeUser; (f) a baseline
server (PyJWT + one query a call, bench/baseline_server.py) under the load of (b); (g) revocation propagation
between two processes; (h) one million revoked users: memory, start-up time and throughput; (m) memory of a
million revocations loaded at start, followed live and pruned, beside the manifests' limits (bench/scenarios/memory.py).

Load comes from separate processes (bench/load.py) to 127.0.0.1 only, for a bounded time. Everything runs in
fresh databases (on AUTHSVC_BENCH_DATABASE_URL's server, else an embedded PostgreSQL) that are dropped at the end,
and every process started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime
import importlib.util
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench import report  # noqa: E402
from bench.context import Bench, Options, Target, first_line, log  # noqa: E402
from bench.database import PostgresServer, fresh_database, postgres_server  # noqa: E402
from bench.proc import CLK_TCK, placement  # noqa: E402
from bench.scenarios import defaults, memory, propagation, revocations, throughput  # noqa: E402
from bench.scenarios.throughput import BATCH_SIZE, REPEATED_POOL  # noqa: E402
from bench.servers import (  # noqa: E402
    REPO,
    kill_all_children,
    running,
)
from bench.service import (  # noqa: E402
    LOG_LEVEL,
    authsvc_server,
    create_app,
    migrate,
)

MILLION = 1_000_000


# -- the run --


async def run(opts: Options) -> tuple[Bench, dict[str, Any]]:
    extra: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    try:
        return await _run(opts, tmp, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(opts: Options, tmp: Path, extra: dict[str, Any]) -> tuple[Bench, dict[str, Any]]:
    async with postgres_server() as pg:
        bench = Bench(opts, pg, tmp, int(time.time()) - 60, [], [], [])
        extra["postgres"] = pg
        log(f"PostgreSQL {pg.version} ({'embedded' if pg.embedded else 'AUTHSVC_BENCH_DATABASE_URL'})")
        async with fresh_database(pg, "main") as url:
            await migrate(url)
            verify_app = await create_app(url, "bench-verify")
            revoke_app = await create_app(url, "bench-revoke")
            async with running(authsvc_server("authsvc", url)) as server:
                extra["main_start"] = {"serving_after": server.serving_after, "log_line_after": server.log_line_after}
                extra["main_rss_after_start"] = server.memory()
                await throughput.run(bench, url, server, verify_app, revoke_app)
                if opts.selected("g"):
                    extra["propagation"] = await propagation.run(bench, url, server, verify_app)
                extra["main_rss_at_end"] = server.memory()
        try:
            if any(opts.selected(key) for key in defaults.ROW_KEYS):
                extra["defaults"] = await defaults.run(bench)
        except Exception as exc:
            extra["defaults_failure"] = first_line(exc)
            bench.failures.append(f"(defaults): {first_line(exc)}")
            log(f"(defaults) FAILED: {exc}")
        try:
            if opts.selected("h"):
                extra["million"] = await revocations.run(bench)
        except Exception as exc:
            bench.failures.append(f"(h) 1M revocations: {exc}")
            log(f"(h) FAILED: {exc}")
        try:
            if opts.selected("m"):
                extra["memory"] = await memory.run(pg, opts.revocations)
        except Exception as exc:
            bench.failures.append(f"(m) memory: {exc}")
            log(f"(m) FAILED: {exc}")
    return bench, extra


# -- the report --


def targets(bench: Bench, extra: dict[str, Any]) -> list[Target]:
    return [
        *throughput.targets(bench),
        *defaults.targets(bench),
        propagation.target(extra.get("propagation")),
        *revocations.targets(bench, extra.get("million")),
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
        *report.key_value_table({**report.machine(), **report.versions(pg.version)}, ("", "")),
        "",
        "## How it was measured",
        "",
        "- Servers (all but the defaults rows, which have a section of their own): `authsvc serve --host 127.0.0.1 "
        "--port 0` subprocesses with `AUTHSVC_WORKERS=1` (one process), "
        f"`AUTHSVC_LOG_LEVEL={LOG_LEVEL}`, `AUTHSVC_EVENT_LOOP="
        f"{'uvloop' if importlib.util.find_spec('uvloop') is not None else 'asyncio'}` (set explicitly, as the "
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
        *report.results_table(bench.rows),
        "",
    ]
    notes = [(r.label, n) for r in bench.rows for n in r.notes]
    if notes:
        lines += [f"- {label}: {note}" for label, note in notes] + [""]
    lines += ["## Targets", "", *report.targets_table(targets(bench, extra)), ""]
    lines += [
        *throughput.baseline_comparison(bench),
        "",
        "## Charts",
        "",
        "Calls per second (VerifyTokens carries 100 tokens a call) and p99 latency, per scenario:",
        "",
        *report.charts(bench.rows),
        "",
    ]
    if any(opts.selected(key) for key in defaults.ROW_KEYS):
        lines += defaults.section(
            extra.get("defaults"),
            lambda num, den, figure: bench.round_ratios((num, figure), (den, figure)),
            _placement_text(opts),
            extra.get("defaults_failure"),
        )
    lines += propagation.section(extra.get("propagation"))
    lines += revocations.section(extra.get("million"), bench.opts.revocations)
    if bench.opts.selected("m"):
        lines += memory.section(extra.get("memory"))
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
    server_cpus, gen_cpus = (",".join(map(str, sorted(c))) for c in opts.placement)
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
        server_cpus, gen_cpus = (",".join(map(str, sorted(c))) for c in opts.placement)
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


SCENARIO_KEYS = frozenset(
    {"a", "b", "b-rep", "b-rep-asyncio", "b-fresh", "b-eddsa", "b-eddsa-rep", "b-eddsa-fresh", "c", "d", "e"}
    | {"f", "f-rep", "f-fresh", "g", "h", "m"}
    | {"defaults", *defaults.ROW_KEYS}
)
"""What --only accepts: the row keys, and their parts before the first '-' (b selects every (b) row).
(g), (h) and (m) run whole."""


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Run every authsvc benchmark.")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of every scenario (~1 s each)")
    parser.add_argument(
        "--output",
        type=Path,
        help="write the markdown report here (default docs/performance.md; with --quick, no file unless given)",
    )
    parser.add_argument("--generators", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--channels", type=int, default=4, help="channels (connections) in all (default 4)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight in all (default 64)")
    parser.add_argument("--revocations", type=int, help="revoked users for (h) (default 1000000; --quick: 100000)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs of each scenario outside the interleaved rounds (d, e, f, EdDSA, asyncio), the best kept in the "
        "table (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds of (a), (b) HS256, (c) and (h), whose target ratios are medians over the rounds "
        "(default 5; --quick: 1)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the server and the generators share every core (default: the server on the first CPU, the "
        "generators on the others, when there are two or more)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        help="seconds in all to wait for other jobs to leave the CPU before runs (default 60; --quick: 10)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios to run, by row key (a, b-rep, b-fresh, c, d, e, f, g, h, defaults, ...); "
        "the report keeps only those; default: all",
    )
    args = parser.parse_args(argv)
    only = frozenset(k.strip() for k in args.only.split(",") if k.strip()) if args.only else None
    if only is not None and (unknown := sorted(only - SCENARIO_KEYS)):
        parser.error(f"--only: unknown scenario {', '.join(unknown)}; known: {', '.join(sorted(SCENARIO_KEYS))}")
    quick = bool(args.quick)
    duration = args.duration if args.duration is not None else (1.0 if quick else 5.0)
    if duration <= 0 or args.generators < 1 or args.channels < 1 or args.concurrency < 1:
        parser.error("--duration, --generators, --channels and --concurrency must be positive")
    if (args.repeat is not None and args.repeat < 1) or (args.rounds is not None and args.rounds < 1):
        parser.error("--repeat and --rounds must be at least 1")
    output = args.output
    if output is None and not quick and not args.only:
        output = REPO / "docs" / "performance.md"
    return Options(
        duration=duration,
        warmup=0.5 if quick else 1.0,
        quick=quick,
        generators=args.generators,
        channels=args.channels,
        concurrency=args.concurrency,
        fresh_tokens=30_000 if quick else 100_000,
        batch_tokens=30_000 if quick else 150_000,
        revoke_requests=10_000 if quick else 50_000,
        eddsa_fresh_tokens=2_000 if quick else 6_000,
        propagation_iterations=50 if quick else 200,
        revocations=args.revocations if args.revocations is not None else (100_000 if quick else MILLION),
        repeat=args.repeat if args.repeat is not None else (1 if quick else 3),
        rounds=args.rounds if args.rounds is not None else (1 if quick else 5),
        placement=None if args.no_pin else placement(),
        quiet_cores=0.3,
        quiet_budget=args.quiet_budget if args.quiet_budget is not None else (10.0 if quick else 60.0),
        output=output,
        only=only,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    atexit.register(kill_all_children)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        [os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable]
        + ["-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
    )
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()

    async def guarded() -> tuple[Bench, dict[str, Any]]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        # Bounded: the default run takes ~3 minutes; nothing may keep it going for ever.
        return await asyncio.wait_for(run(opts), 1800)

    try:
        bench, extra = asyncio.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; every process the bench started has been stopped")
        return 130
    finally:
        kill_all_children()
    text = render(bench, extra, command, started, time.monotonic() - clock)
    print(text)
    if opts.output is not None:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(text)
        log(f"report written to {opts.output}")
    if bench.failures:
        log(f"{len(bench.failures)} failure(s): " + "; ".join(bench.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
