"""Scenario (h): one million revoked users — memory, start-up time and VerifyToken throughput of a server that
loads them, beside one with none, each on a database of its own, both running."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import asyncpg
import grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from bench.context import Bench, Row, Target, log
from bench.database import fresh_database
from bench.load import mint_hs256
from bench.measure import SpecFor, measure_interleaved
from bench.proc import tree_cpu_seconds
from bench.scenarios.throughput import repeated_tokens, verify_specs
from bench.servers import ServerExited, ServerProcess
from bench.service import LOG_LEVEL, AppCredentials, authsvc_server, create_app, migrate


async def run(bench: Bench) -> dict[str, Any]:
    """(h): a server with no revocations and one with a million, each on a database of its own, both running;
    memory and start-up of each, and VerifyToken throughput measured in interleaved rounds."""
    out: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        servers: list[tuple[str, int, ServerProcess, dict[str, SpecFor]]] = []
        for label, count in (("empty", 0), ("revoked", bench.opts.revocations)):
            url = await stack.enter_async_context(fresh_database(bench.pg, f"1m{label[0]}"))
            await migrate(url)
            app = await create_app(url, "bench-1m")
            repeated = repeated_tokens(bench, app)
            if count:
                await _insert_revocations(url, app, count, out)
            server, state = await _start_million_server(bench, label, count, url)
            stack.push_async_callback(server.stop)
            if count:
                # The snapshot is really in memory: a revoked user's token is refused.
                token = mint_hs256(app.api_secret, ["bulk-7"], bench.iat)[0]
                async with grpc.aio.insecure_channel(server.target) as channel:
                    answer = await pb_grpc.AuthServiceStub(channel).VerifyToken(
                        pb.VerifyTokenRequest(token=token), metadata=app.verify_md, timeout=10
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
            state["after_load"] = server.memory()
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
        after_start=server.memory(),
        start_cpu=tree_cpu_seconds(server.pid),
        start_db_cpu=None if pg_before is None or (pg_now := bench.pg.cpu_seconds()) is None else pg_now - pg_before,
    )
    return server, state


def targets(bench: Bench, m: dict[str, Any] | None) -> list[Target]:
    """The targets on a million revocations: extra memory, load time, throughput beside the empty state's."""
    empty, full = (m or {}).get("empty"), (m or {}).get("revoked")
    extra_rss = load_time = ratio = None
    ratio_rounds = ""
    if empty and full:
        extra_rss = (full["after_load"]["VmRSS"] - empty["after_load"]["VmRSS"]) * 1024 / 1e6  # MB, not MiB
        load_time = full["serving_after"] - empty["serving_after"]
        ratio, ratio_rounds = bench.paired(("h-revoked", "calls_per_s"), ("h-empty", "calls_per_s"))
    n = f"{bench.opts.revocations:,} revocations"
    result = [
        Target(f"{n}: extra RSS per server process", extra_rss, 64, False, " MB", "VmRSS after start and load"),
        Target(f"{n}: load time", load_time, 3, False, " s", "start-up to SERVING, minus the empty state's"),
        Target(f"{n}: VerifyToken throughput ÷ empty state's", ratio, 0.95, True, detail=ratio_rounds),
    ]
    if full and full.get("default_settings_failed"):
        for t in result:
            note = "with AUTHSVC_DATABASE_TIMEOUT=60s: the default settings failed to start"
            t.detail = f"{t.detail}; {note}" if t.detail else note
    if full:
        result.append(
            Target(f"{n}: whole start-up to SERVING", full["serving_after"], 3, False, " s", "process start included")
        )
    return result


def section(m: dict[str, Any] | None, count: int) -> list[str]:
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
