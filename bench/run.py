"""`make bench`: every scenario against real `authsvc serve` processes, side by side, in one report.

    .venv/bin/python -m bench.run [--duration SECONDS] [--quick] [--output docs/performance.md]

Scenarios (each: calls/s, p50 and p99 latency, server CPU µs per call): (a) the ceiling, Health/Check;
(b) VerifyToken HS256 with a repeated pool of 100 tokens and with a fresh token every call (and EdDSA when the
build has it); (c) VerifyTokens with 100 fresh tokens a call; (d) IssueToken; (e) RevokeUser; (f) a baseline
server (PyJWT + one query a call, bench/baseline_server.py) under the load of (b); (g) revocation propagation
between two processes; (h) one million revoked users: memory, start-up time and throughput; (m) memory of a
million revocations loaded at start, followed live and pruned, beside the manifests' limits (bench/memory.py).

Load comes from separate processes (bench/load.py) to 127.0.0.1 only, for a bounded time. Everything runs in
fresh databases (on AUTHSVC_BENCH_DATABASE_URL's server, else an embedded PostgreSQL) that are dropped at the end,
and every process started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import importlib.util
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import grpc  # noqa: E402

from authsvc.config import Settings  # noqa: E402
from authsvc.v1 import auth_service_pb2 as pb  # noqa: E402
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc  # noqa: E402
from bench import defaults, memory, report  # noqa: E402
from bench.context import Bench, Options, Row, Target, figure, first_line, log, ratio  # noqa: E402
from bench.database import PostgresServer, fresh_database, postgres_server  # noqa: E402
from bench.load import CHANNEL_OPTIONS, issue_tokens, mint_hs256  # noqa: E402
from bench.measure import SpecFor, measure, measure_interleaved, percentile  # noqa: E402
from bench.proc import CLK_TCK, memory_kib, placement, tree_cpu_seconds  # noqa: E402
from bench.servers import (  # noqa: E402
    REPO,
    ServerExited,
    ServerProcess,
    clean_env,
    json_object_with,
    kill_all_children,
    running,
)
from bench.service import (  # noqa: E402
    BENCH_KEK,
    LOG_LEVEL,
    AppCredentials,
    authsvc_cli,
    authsvc_server,
    create_app,
    migrate,
)

REPEATED_POOL = 100
BATCH_SIZE = 100
MILLION = 1_000_000


# -- scenarios --


def health_spec(_: int) -> dict[str, Any]:
    """The load of (a): Health/Check, the ceiling."""
    return {"kind": "health", "metadata": []}


def verify_specs(app: AppCredentials, repeated: list[str], bench: Bench) -> dict[str, SpecFor]:
    """The VerifyToken load of (b), reused unchanged for the baseline (f) and for (h)."""
    opts = bench.opts

    def rep(_: int) -> dict[str, Any]:
        return {"kind": "verify", "metadata": app.verify_md, "tokens": {"source": "list", "tokens": repeated}}

    def fresh(i: int) -> dict[str, Any]:
        tokens = {"source": "mint", "secret": app.api_secret, "prefix": f"fresh-g{i}-", "count": opts.fresh_tokens}
        return {"kind": "verify", "distinct": True, "metadata": app.verify_md, "tokens": {**tokens, "iat": bench.iat}}

    return {"repeated": rep, "fresh": fresh}


async def eddsa_scenarios(bench: Bench, server: ServerProcess, database_url: str) -> None:
    """(b) with EdDSA tokens, when `apps create --algorithm EdDSA` works in this build."""
    code, out, err = await authsvc_cli(
        database_url, "apps", "create", "bench-eddsa", "--algorithm", "EdDSA", "--format", "json"
    )
    created = json_object_with(out, "api_secret") if code == 0 else None
    if created is None:
        reason = (err.strip() or out.strip()).splitlines()[-1] if (err.strip() or out.strip()) else f"exit {code}"
        bench.notes.append(
            f"EdDSA: not supported by this build (`authsvc apps create NAME --algorithm EdDSA` said: {reason})"
        )
        log("EdDSA: not supported by this build")
        return
    app = AppCredentials(created["api_key"], created["api_secret"])
    credential = [(k, v) for k, v in app.credential_md]
    repeated = await issue_tokens(server.target, credential, [f"ed-rep-{i}" for i in range(REPEATED_POOL)])
    await measure(
        bench,
        Row("b-eddsa-rep", "(b) VerifyToken EdDSA, repeated (100 tokens)", "b EdDSA rep", "authsvc"),
        server,
        lambda _: {"kind": "verify", "metadata": app.verify_md, "tokens": {"source": "list", "tokens": repeated}},
    )
    await measure(
        bench,
        Row("b-eddsa-fresh", "(b) VerifyToken EdDSA, fresh token per call", "b EdDSA fresh", "authsvc"),
        server,
        lambda i: {
            "kind": "verify",
            "distinct": True,
            "metadata": app.verify_md,
            "tokens": {
                "source": "issue",
                "prefix": f"ed-fresh-g{i}-",
                "count": bench.opts.eddsa_fresh_tokens,
                "metadata": app.credential_md,
            },
        },
    )
    bench.notes.append(
        f"EdDSA fresh tokens were minted through IssueToken before the window "
        f"({bench.opts.eddsa_fresh_tokens:,} per generator)."
    )


async def propagation(bench: Bench, a: ServerProcess, b: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    """(g): RevokeUser on A, then VerifyToken on B in a tight loop until REVOKED; latency from A's reply."""
    n = bench.opts.propagation_iterations
    users = [f"prop-{i}" for i in range(n)]
    tokens = mint_hs256(app.api_secret, users, int(time.time()) - 2)
    verify_md = (("x-api-key", app.api_key),)
    credential_md = (*verify_md, ("authorization", f"Bearer {app.api_secret}"))
    latencies: list[float] = []
    revoke_latencies: list[float] = []
    polls: list[int] = []
    timeouts = 0
    not_valid_before = 0
    log(f"(g) propagation: {n} revocations on {a.target}, watched on {b.target}")
    async with (
        grpc.aio.insecure_channel(a.target, options=CHANNEL_OPTIONS) as channel_a,
        grpc.aio.insecure_channel(b.target, options=CHANNEL_OPTIONS) as channel_b,
    ):
        stub_a = pb_grpc.AuthServiceStub(channel_a)
        stub_b = pb_grpc.AuthServiceStub(channel_b)
        for user, token in zip(users, tokens, strict=True):
            request = pb.VerifyTokenRequest(token=token)
            before = await stub_b.VerifyToken(request, metadata=verify_md, timeout=5)
            if before.outcome != pb.VERIFY_OUTCOME_VALID:
                not_valid_before += 1
                continue
            sent = time.perf_counter()
            await stub_a.RevokeUser(pb.RevokeUserRequest(user_ids=[user]), metadata=credential_md, timeout=10)
            replied = time.perf_counter()
            revoke_latencies.append(replied - sent)
            count = 0
            while True:
                answer = await stub_b.VerifyToken(request, metadata=verify_md, timeout=5)
                count += 1
                if answer.outcome == pb.VERIFY_OUTCOME_REVOKED:
                    latencies.append(time.perf_counter() - replied)
                    polls.append(count)
                    break
                if time.perf_counter() - replied > 5:
                    timeouts += 1
                    break
    ordered = sorted(latencies)
    revokes = sorted(revoke_latencies)
    result = {
        "iterations": n,
        "observed": len(ordered),
        "timeouts (> 5 s)": timeouts,
        "not VALID on B before the revocation": not_valid_before,
        "p50_ms": percentile([round(x * 1e9) for x in ordered], 0.5) / 1e6 if ordered else None,
        "p99_ms": percentile([round(x * 1e9) for x in ordered], 0.99) / 1e6 if ordered else None,
        "max_ms": ordered[-1] * 1e3 if ordered else None,
        "revoke_p50_ms": percentile([round(x * 1e9) for x in revokes], 0.5) / 1e6 if revokes else None,
        "polls_p50": sorted(polls)[len(polls) // 2] if polls else None,
        "first_poll_revoked": sum(1 for p in polls if p == 1),
    }
    if timeouts or not_valid_before:
        bench.failures.append(f"(g) propagation: {timeouts} timeouts, {not_valid_before} tokens not VALID before")
    log(f"(g) propagation: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    return result


def _memory(server: ServerProcess) -> dict[str, int]:
    total = {"VmRSS": 0, "VmHWM": 0}
    for key, value in memory_kib(server.pid).items():
        total[key] += value
    return total


async def million(bench: Bench) -> dict[str, Any]:
    """(h): a server with no revocations and one with a million, each on a database of its own, both running;
    memory and start-up of each, and VerifyToken throughput measured in interleaved rounds."""
    out: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        servers: list[tuple[str, int, ServerProcess, dict[str, SpecFor]]] = []
        for label, count in (("empty", 0), ("revoked", bench.opts.revocations)):
            url = await stack.enter_async_context(fresh_database(bench.pg, f"1m{label[0]}"))
            await migrate(url)
            app = await create_app(url, "bench-1m")
            repeated = mint_hs256(app.api_secret, [f"rep-{i}" for i in range(REPEATED_POOL)], bench.iat)
            if count:
                await _insert_revocations(url, app, count, out)
            server, state = await _start_million_server(bench, label, count, url)
            stack.push_async_callback(server.stop)
            if count:
                # The snapshot is really in memory: a revoked user's token is refused.
                token = mint_hs256(app.api_secret, ["bulk-7"], bench.iat)[0]
                async with grpc.aio.insecure_channel(server.target) as channel:
                    answer = await pb_grpc.AuthServiceStub(channel).VerifyToken(
                        pb.VerifyTokenRequest(token=token), metadata=(("x-api-key", app.api_key),), timeout=10
                    )
                state["revoked_user_answer"] = pb.VerifyOutcome.Name(answer.outcome)
                if answer.outcome != pb.VERIFY_OUTCOME_REVOKED:
                    bench.failures.append(f"(h) a revoked user's token answered {state['revoked_user_answer']}")
            out[label] = state
            servers.append((label, count, server, verify_specs(app, repeated, bench)))
        await measure_interleaved(
            bench,
            [
                (
                    Row(
                        f"h-{tokens}{label}",
                        f"(h) VerifyToken HS256 {'fresh token per call' if tokens else 'repeated'}, "
                        f"{_revocations_title(count)}",
                        f"h {tokens}{label}",
                        "authsvc",
                    ),
                    server,
                    specs["fresh" if tokens else "repeated"],
                )
                # Fresh tokens are new users, asked about for the first time: no remembered answer (no target).
                for tokens in ("", "fresh-")
                for label, count, server, specs in servers
            ],
        )
        out["fresh_ratio"] = bench.paired(("h-fresh-revoked", "calls_per_s"), ("h-fresh-empty", "calls_per_s"))
        for label, _, server, _ in servers:
            state = out[label]
            state["after_load"] = _memory(server)
            best = bench.row(f"h-{label}")
            state["calls_per_s"] = best.calls_per_s if best is not None else None
            log(
                f"(h) {label}: SERVING after {server.serving_after:.2f}s, "
                f"RSS {state['after_load']['VmRSS'] / 1024:.1f} MiB after load"
            )
    return out


def _revocations_title(count: int) -> str:
    return "no revocations" if not count else f"{count:,} revoked users"


async def _insert_revocations(url: str, app: AppCredentials, count: int, out: dict[str, Any]) -> None:
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        app_id = await conn.fetchval("SELECT id FROM apps WHERE api_key = $1", app.api_key)
        await conn.execute(
            "INSERT INTO user_revocations (app_id, user_id, revoked_before)"
            " SELECT $1, 'bulk-' || g, now() FROM generate_series(1, $2::int) AS g",
            app_id,
            count,
        )
        out["insert_seconds"] = time.monotonic() - started
        out["rows"] = await conn.fetchval("SELECT count(*) FROM user_revocations WHERE app_id = $1", app_id)
    finally:
        await conn.close()
    log(f"(h) inserted {count:,} revocations in {out['insert_seconds']:.1f}s")


async def _start_million_server(bench: Bench, label: str, count: int, url: str) -> tuple[ServerProcess, dict[str, Any]]:
    server = authsvc_server(f"authsvc ({label})", url)
    state: dict[str, Any] = {}
    pg_before = bench.pg.cpu_seconds()
    try:
        await server.start()
    except ServerExited as exc:
        await server.stop()
        # The default AUTHSVC_DATABASE_TIMEOUT (5 s) bounds the start-up snapshot query too.
        state["default_settings_failed"] = str(exc)
        bench.findings.append(
            f"(h) with {count:,} revocations the server did not start with the default settings: {exc}"
        )
        log(f"(h) {label}: {exc}; again with AUTHSVC_DATABASE_TIMEOUT=60s")
        server = authsvc_server(f"authsvc ({label}, 60 s timeout)", url, AUTHSVC_DATABASE_TIMEOUT="60s")
        try:
            await server.start()
        except BaseException:
            await server.stop()
            raise
        state["settings"] = "AUTHSVC_DATABASE_TIMEOUT=60s"
    except BaseException:
        await server.stop()
        raise
    state.update(
        serving_after=server.serving_after,
        log_line_after=server.log_line_after,
        after_start=_memory(server),
        start_cpu=tree_cpu_seconds(server.pid),
        start_db_cpu=None if pg_before is None or (pg_now := bench.pg.cpu_seconds()) is None else pg_now - pg_before,
    )
    return server, state


async def defaults_scenario(bench: Bench) -> list[defaults.Observed]:
    """`defaults`: VerifyToken ÷ Health/Check of the same server, for `authsvc serve` as `make run` starts it and
    tuned beside it (bench/defaults.py), in interleaved rounds; then what each server really ran with."""
    async with fresh_database(bench.pg, "defaults") as url:
        await migrate(url)
        app = await create_app(url, "bench-defaults")
        repeated = mint_hs256(app.api_secret, [f"rep-{i}" for i in range(REPEATED_POOL)], bench.iat)
        verify = verify_specs(app, repeated, bench)["repeated"]
        async with defaults.servers(url, BENCH_KEK, bench.tmp) as servers:
            pairs = list(zip(defaults.CONFIGS, servers, strict=True))
            await measure_interleaved(
                bench,
                [
                    scenario
                    for config, server in pairs
                    for scenario in (
                        (config.check_row(), server, defaults.spread(health_spec, bench.opts.generators)),
                        (config.verify_row(), server, defaults.spread(verify, bench.opts.generators)),
                    )
                ],
            )
            workers = defaults.expected_workers()
            observed = [await defaults.observe(config, server, workers) for config, server in pairs]
    for o in observed:
        log(f"({o.config.key}): {len(o.workers)} workers, event loop {o.event_loop}, log level {o.log_level}")
    return observed


def uvloop_status() -> tuple[str | None, str]:
    """(settings field, reason): the server's event-loop option when uvloop can be tried, else why not."""
    loop_fields = [f.name for f in fields(Settings) if "loop" in f.name]
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if not loop_fields:
        return None, (
            "uvloop: not measured — authsvc.config.Settings has no event-loop option (no AUTHSVC_EVENT_LOOP or "
            f"similar) in this build; uvloop is {'importable' if has_uvloop else 'not installed'} in .venv"
        )
    if not has_uvloop:
        return None, f"uvloop: not measured — the server has `{loop_fields[0]}` but uvloop is not installed in .venv"
    return loop_fields[0], ""


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
            repeated = mint_hs256(verify_app.api_secret, [f"rep-{i}" for i in range(REPEATED_POOL)], bench.iat)
            specs = verify_specs(verify_app, repeated, bench)
            async with running(authsvc_server("authsvc", url)) as server:
                extra["main_start"] = {"serving_after": server.serving_after, "log_line_after": server.log_line_after}
                extra["main_rss_after_start"] = _memory(server)
                batch_spec = lambda i: {  # noqa: E731
                    "kind": "verify_batch",
                    "distinct": True,
                    "batch": BATCH_SIZE,
                    "metadata": verify_app.verify_md,
                    "tokens": {
                        "source": "mint",
                        "secret": verify_app.api_secret,
                        "prefix": f"batch-g{i}-",
                        "count": opts.batch_tokens,
                        "iat": bench.iat,
                    },
                }
                # The targets are ratios between these four: measured in interleaved rounds (see targets()).
                await measure_interleaved(
                    bench,
                    [
                        (
                            Row("a", "(a) Health/Check — the ceiling", "a ceiling", "authsvc"),
                            server,
                            health_spec,
                        ),
                        (
                            Row("b-rep", "(b) VerifyToken HS256, repeated (100 tokens)", "b rep", "authsvc"),
                            server,
                            specs["repeated"],
                        ),
                        (
                            Row("b-fresh", "(b) VerifyToken HS256, fresh token per call", "b fresh", "authsvc"),
                            server,
                            specs["fresh"],
                        ),
                        (
                            Row("c", "(c) VerifyTokens, 100 fresh HS256 tokens per call", "c batch", "authsvc"),
                            server,
                            batch_spec,
                        ),
                    ],
                )
                loop_field, reason = uvloop_status()
                if not opts.selected("b-rep-asyncio"):
                    pass
                elif loop_field is not None:
                    try:
                        async with running(
                            authsvc_server("authsvc (asyncio)", url, **{f"AUTHSVC_{loop_field.upper()}": "asyncio"})
                        ) as asyncio_server:
                            await measure(
                                bench,
                                Row(
                                    "b-rep-asyncio",
                                    "(b) VerifyToken HS256 repeated, plain asyncio loop (not uvloop)",
                                    "b rep asyncio",
                                    "authsvc",
                                ),
                                asyncio_server,
                                specs["repeated"],
                            )
                    except Exception as exc:
                        bench.failures.append(f"asyncio server: {first_line(exc)}")
                        log(f"asyncio server FAILED: {exc}")
                else:
                    bench.notes.append(reason)
                    log(reason)
                if opts.selected("b-eddsa-rep") or opts.selected("b-eddsa-fresh"):
                    await eddsa_scenarios(bench, server, url)
                await measure(
                    bench,
                    Row("d", "(d) IssueToken", "d issue", "authsvc"),
                    server,
                    lambda i: {"kind": "issue", "prefix": f"issue-g{i}-", "metadata": verify_app.credential_md},
                )
                await measure(
                    bench,
                    Row("e", "(e) RevokeUser, one new user per call", "e revoke", "authsvc"),
                    server,
                    lambda i: {
                        "kind": "revoke",
                        "distinct": True,
                        "prefix": f"rv-g{i}-",
                        "count": opts.revoke_requests,
                        "metadata": revoke_app.credential_md,
                    },
                )
                async with running(
                    ServerProcess(
                        "baseline",
                        [sys.executable, "-m", "bench.baseline_server", "--database-url", url, "--port", "0"],
                        clean_env(AUTHSVC_KEK=BENCH_KEK),
                    )
                ) as baseline:
                    await measure(
                        bench,
                        Row("f-rep", "(f) baseline VerifyToken, repeated (100 tokens)", "f base rep", "baseline"),
                        baseline,
                        specs["repeated"],
                    )
                    await measure(
                        bench,
                        Row("f-fresh", "(f) baseline VerifyToken, fresh token per call", "f base fresh", "baseline"),
                        baseline,
                        specs["fresh"],
                    )
                try:
                    if opts.selected("g"):
                        async with running(authsvc_server("authsvc B", url)) as server_b:
                            extra["propagation"] = await propagation(bench, server, server_b, verify_app)
                except Exception as exc:
                    bench.failures.append(f"(g) propagation: {exc}")
                    log(f"(g) propagation FAILED: {exc}")
                extra["main_rss_at_end"] = _memory(server)
        try:
            if any(opts.selected(key) for key in defaults.ROW_KEYS):
                extra["defaults"] = await defaults_scenario(bench)
        except Exception as exc:
            extra["defaults_failure"] = first_line(exc)
            bench.failures.append(f"(defaults): {first_line(exc)}")
            log(f"(defaults) FAILED: {exc}")
        try:
            if opts.selected("h"):
                extra["million"] = await million(bench)
        except Exception as exc:
            bench.failures.append(f"(h) 1M revocations: {exc}")
            log(f"(h) FAILED: {exc}")
        try:
            if opts.selected("m"):
                extra["memory"] = await memory.measure(pg, opts.revocations)
        except Exception as exc:
            bench.failures.append(f"(m) memory: {exc}")
            log(f"(m) FAILED: {exc}")
    return bench, extra


# -- the report --


def targets(bench: Bench, extra: dict[str, Any]) -> list[Target]:
    a, rep, fresh, batch = "a", "b-rep", "b-fresh", "c"
    calls, cpu, tokens = "calls_per_s", "server_cpu_us", "tokens_per_s"
    result = [
        bench.paired_target(
            "VerifyToken HS256 repeated calls/s ÷ ceiling calls/s", (rep, calls), (a, calls), 0.9, True
        ),
        bench.paired_target("VerifyToken HS256 fresh calls/s ÷ ceiling calls/s", (fresh, calls), (a, calls), 0.8, True),
        bench.paired_target(
            "server CPU per VerifyToken ÷ ceiling's", (rep, cpu), (a, cpu), 1.2, False, "repeated tokens"
        ),
        bench.paired_target(
            "server CPU per VerifyToken ÷ ceiling's", (fresh, cpu), (a, cpu), 1.2, False, "fresh tokens"
        ),
        bench.paired_target(
            "VerifyTokens tokens/s ÷ VerifyToken calls/s",
            (batch, tokens),
            (fresh, calls),
            10,
            True,
            "both fresh HS256",
        ),
        bench.paired_target(
            "VerifyTokens tokens/s ÷ VerifyToken calls/s", (batch, tokens), (rep, calls), 10, True, "vs repeated"
        ),
    ]
    result += [
        bench.paired_target(
            f"VerifyToken HS256 repeated calls/s ÷ Health/Check calls/s of the same server, {config.title}",
            (f"{config.key}-b-rep", calls),
            (f"{config.key}-a", calls),
            defaults.TARGET,
            True,
            f"settings: {config.env_text}",
        )
        for config in defaults.CONFIGS
    ]
    prop = extra.get("propagation")
    result.append(Target("(g) revocation propagation p99", prop and prop["p99_ms"], 25, False, " ms"))
    m = extra.get("million")
    empty, full = (m or {}).get("empty"), (m or {}).get("revoked")
    extra_rss = load_time = ratio = None
    ratio_rounds = ""
    if empty and full:
        extra_rss = (full["after_load"]["VmRSS"] - empty["after_load"]["VmRSS"]) * 1024 / 1e6  # MB, not MiB
        load_time = full["serving_after"] - empty["serving_after"]
        ratio, ratio_rounds = bench.paired(("h-revoked", "calls_per_s"), ("h-empty", "calls_per_s"))
    n = f"{bench.opts.revocations:,} revocations"
    result += [
        Target(f"{n}: extra RSS per server process", extra_rss, 64, False, " MB", "VmRSS after start and load"),
        Target(f"{n}: load time", load_time, 3, False, " s", "start-up to SERVING, minus the empty state's"),
        Target(f"{n}: VerifyToken throughput ÷ empty state's", ratio, 0.95, True, detail=ratio_rounds),
    ]
    if full and full.get("default_settings_failed"):
        for t in result[-3:]:
            note = "with AUTHSVC_DATABASE_TIMEOUT=60s: the default settings failed to start"
            t.detail = f"{t.detail}; {note}" if t.detail else note
    if full:
        result.append(
            Target(f"{n}: whole start-up to SERVING", full["serving_after"], 3, False, " s", "process start included")
        )
    return result


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
    base_rep, base_fresh = bench.row("f-rep"), bench.row("f-fresh")
    rep, fresh = bench.row("b-rep"), bench.row("b-fresh")
    lines += [
        "Baseline (f) ÷ authsvc (b), same load and tokens (no target). Below 1 for calls/s, above 1 for CPU and "
        "latency: authsvc does better.",
        "",
        "| baseline ÷ authsvc | repeated tokens | fresh tokens |",
        "| --- | ---: | ---: |",
        f"| calls/s | {_fmt_ratio(figure(base_rep, 'calls_per_s'), figure(rep, 'calls_per_s'))} | "
        f"{_fmt_ratio(figure(base_fresh, 'calls_per_s'), figure(fresh, 'calls_per_s'))} |",
        f"| server CPU µs/call | {_fmt_ratio(figure(base_rep, 'server_cpu_us'), figure(rep, 'server_cpu_us'))} | "
        f"{_fmt_ratio(figure(base_fresh, 'server_cpu_us'), figure(fresh, 'server_cpu_us'))} |",
        f"| server + PostgreSQL CPU µs/call | {_fmt_ratio(_total_cpu(base_rep), _total_cpu(rep))} | "
        f"{_fmt_ratio(_total_cpu(base_fresh), _total_cpu(fresh))} |",
        f"| p99 latency | {_fmt_ratio(figure(base_rep, 'p99_ms'), figure(rep, 'p99_ms'))} | "
        f"{_fmt_ratio(figure(base_fresh, 'p99_ms'), figure(fresh, 'p99_ms'))} |",
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
    lines += propagation_section(extra.get("propagation"))
    lines += million_section(extra.get("million"), bench.opts.revocations)
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


def _total_cpu(row: Row | None) -> float | None:
    if row is None or row.server_cpu_us is None:
        return None
    return row.server_cpu_us + (row.db_cpu_us or 0.0)


def _fmt_ratio(a: float | None, b: float | None) -> str:
    r = ratio(a, b)
    return "—" if r is None else f"{r:.2f}"


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


def propagation_section(prop: dict[str, Any] | None) -> list[str]:
    lines = ["## Revocation propagation between two processes (g)", ""]
    if prop is None:
        return [*lines, "Not measured (see failures).", ""]
    lines += [
        f"{prop['iterations']} iterations: RevokeUser on process A, then VerifyToken on process B in a tight loop "
        "(its own channel) until REVOKED; latency from RevokeUser's reply to B's first REVOKED answer.",
        "",
        "| p50 | p99 | max | RevokeUser p50 on A | B answered REVOKED on its first poll | timeouts |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_ms_or(prop['p50_ms'])} | {_ms_or(prop['p99_ms'])} | {_ms_or(prop['max_ms'])} | "
        f"{_ms_or(prop['revoke_p50_ms'])} | {prop['first_poll_revoked']} of {prop['observed']} | "
        f"{prop['timeouts (> 5 s)']} |",
        "",
    ]
    return lines


def _ms_or(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def million_section(m: dict[str, Any] | None, count: int) -> list[str]:
    lines = [f"## {count:,} revoked users (h)", ""]
    if not m or "empty" not in m or "revoked" not in m:
        return [*lines, "Not measured (see failures).", ""]
    lines += [
        "Two more fresh databases, one app each, and a server on each, both running: one with no revocations; "
        f"one whose database got {count:,} rows in `user_revocations` with one `INSERT ... SELECT generate_series` "
        f"({m['insert_seconds']:.1f} s, {m['rows']:,} rows) before its server started and loaded them in its "
        f"start-up snapshot (a revoked user's token then answered {m['revoked'].get('revoked_user_answer', '?')}). "
        "Their VerifyToken throughput was measured in interleaved rounds (empty, revoked; again), and the target "
        "ratio is the median of the round-by-round ratios.",
        "",
        *(
            [
                "With a fresh token per call (a user never asked about before each time, so the user id is hashed "
                "and searched for on every call instead of answered from the remembered answers), the throughput "
                f"with {count:,} revocations was {m['fresh_ratio'][0]:.2f} of the empty state's "
                f"({m['fresh_ratio'][1] or 'one round'}). No target: the target is for repeated tokens.",
                "",
            ]
            if m.get("fresh_ratio") and m["fresh_ratio"][0] is not None
            else []
        ),
        *(
            [
                f"**With the default settings the server did not start** ({m['revoked']['default_settings_failed']}); "
                "the figures below are with AUTHSVC_DATABASE_TIMEOUT=60s.",
                "",
            ]
            if m["revoked"].get("default_settings_failed")
            else []
        ),
        "| state | start-up to SERVING | server CPU by then | PostgreSQL CPU meanwhile | RSS after start | "
        "RSS after load | peak RSS | VerifyToken calls/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, title in (("empty", "no revocations"), ("revoked", f"{count:,} revocations")):
        s = m[key]
        db = "—" if s.get("start_db_cpu") is None else f"{s['start_db_cpu']:.2f} s"
        calls = "failed" if s.get("calls_per_s") is None else f"{s['calls_per_s']:,.0f}"
        lines.append(
            f"| {title} | {s['serving_after']:.2f} s | {s['start_cpu']:.2f} s | {db} | "
            f"{s['after_start']['VmRSS'] / 1024:.1f} MiB | {s['after_load']['VmRSS'] / 1024:.1f} MiB | "
            f"{s['after_load']['VmHWM'] / 1024:.1f} MiB | {calls} |"
        )
    lines += [
        "",
        "Start-up is from the process's start to the first SERVING answer of grpc.health.v1.Health/Check"
        + (
            f" (the 'serving gRPC' log line came after {m['revoked']['log_line_after']:.2f} s)."
            if m["revoked"].get("log_line_after") is not None
            else f" (no 'serving gRPC' log line is written at {LOG_LEVEL})."
        )
        + " RSS is VmRSS of the server process from "
        "`/proc/<pid>/status`, peak RSS its VmHWM (MiB; the target is in MB, 10⁶ bytes).",
        "",
    ]
    return lines


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
