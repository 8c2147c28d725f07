"""`make bench`: every scenario against real `authsvc serve` processes, side by side, in one report.

    .venv/bin/python -m bench.run [--quick] [--only KEYS] [--rounds N] [--no-pin] [--output docs/performance.md]

This module is the command line and the order of the run. The rest of bench/, by concern:

    scenarios/throughput.py   (a)-(f): Health/Check (the ceiling); VerifyToken HS256 with 100 repeated tokens and
                              a fresh token every call, on uvloop and asyncio, and EdDSA; VerifyTokens with 100
                              fresh tokens a call; IssueToken; RevokeUser; the baseline (baseline_server.py)
    scenarios/propagation.py  (g) revocation propagation between two processes
    scenarios/revocations.py  (h) one million revoked users: memory, start-up time and throughput
    scenarios/defaults.py     `authsvc serve` as `make run` starts it, and tuned beside it
    scenarios/memory.py       (m) memory of a million revocations: loaded at start, followed live, pruned
    scenarios/local.py        (l) LocalVerifier: rates beside VerifyToken, propagation to 100 watchers, memory,
                              and the server's cost of 1,000 idle watchers
    measure.py, load.py       one load measurement, repeated or in interleaved rounds; the generator processes
    report.py                 the report (docs/performance.md); each scenario module writes its own section
    context.py                the options, the rows and targets, the ratios between rows
    service.py, servers.py    authsvc's processes and CLI calls; starting, finding and stopping any process
    database.py, proc.py      the PostgreSQL server and its fresh databases; readings from /proc, CPU pinning

Load comes from separate processes (bench/load.py) to 127.0.0.1 only, for a bounded time. Everything runs in
fresh databases (on AUTHSVC_BENCH_DATABASE_URL's server, else an embedded PostgreSQL) that are dropped at the end,
and every process started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime
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
from bench.context import Bench, Options, first_line, log  # noqa: E402
from bench.database import fresh_database, postgres_server  # noqa: E402
from bench.proc import placement  # noqa: E402
from bench.scenarios import defaults, local, memory, propagation, revocations, throughput  # noqa: E402
from bench.servers import REPO, kill_all_children, running  # noqa: E402
from bench.service import authsvc_server, create_app, migrate  # noqa: E402

MILLION = 1_000_000


async def run(opts: Options) -> tuple[Bench, dict[str, Any]]:
    """Every selected scenario, in the report's order; the figures, and what the report needs besides them."""
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
                if any(opts.selected(key) for key in local.ROW_KEYS):
                    extra["local"] = await local.run(bench, url, server, verify_app)
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


SCENARIO_KEYS = frozenset(
    {"a", "b", "b-rep", "b-rep-asyncio", "b-fresh", "b-eddsa", "b-eddsa-rep", "b-eddsa-fresh", "c", "d", "e"}
    | {"f", "f-rep", "f-fresh", "g", "h", "m"}
    | {"defaults", *defaults.ROW_KEYS}
    | {"l", *local.ROW_KEYS}
)
"""What --only accepts: the row keys, and their leading parts (b selects every (b) row, b-eddsa both EdDSA rows).
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
    text = report.render(bench, extra, command, started, time.monotonic() - clock)
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
