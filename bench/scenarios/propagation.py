"""Scenario (g): how soon a revocation on one `authsvc serve` process is seen by another on the same database."""

from __future__ import annotations

import time
from typing import Any

import grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from bench.context import Bench, Target, log
from bench.load import CHANNEL_OPTIONS, mint_hs256
from bench.measure import percentile
from bench.servers import ServerProcess, running
from bench.service import AppCredentials, authsvc_server


async def run(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any] | None:
    """(g) from `server` (A) to a second server started on database `url` (B); None when it could not be measured."""
    try:
        async with running(authsvc_server("authsvc B", url)) as server_b:
            return await propagation(bench, server, server_b, app)
    except Exception as exc:
        bench.failures.append(f"(g) propagation: {exc}")
        log(f"(g) propagation FAILED: {exc}")
        return None


async def propagation(bench: Bench, a: ServerProcess, b: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    """(g): RevokeUser on A, then VerifyToken on B in a tight loop until REVOKED; latency from A's reply."""
    n = bench.opts.propagation_iterations
    users = [f"prop-{i}" for i in range(n)]
    tokens = mint_hs256(app.api_secret, users, int(time.time()) - 2)
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
            before = await stub_b.VerifyToken(request, metadata=app.verify_md, timeout=5)
            if before.outcome != pb.VERIFY_OUTCOME_VALID:
                not_valid_before += 1
                continue
            sent = time.perf_counter()
            await stub_a.RevokeUser(pb.RevokeUserRequest(user_ids=[user]), metadata=app.credential_md, timeout=10)
            replied = time.perf_counter()
            revoke_latencies.append(replied - sent)
            count = 0
            while True:
                answer = await stub_b.VerifyToken(request, metadata=app.verify_md, timeout=5)
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
        "p50_ms": _percentile_ms(ordered, 0.5),
        "p99_ms": _percentile_ms(ordered, 0.99),
        "max_ms": ordered[-1] * 1e3 if ordered else None,
        "revoke_p50_ms": _percentile_ms(revokes, 0.5),
        "polls_p50": sorted(polls)[len(polls) // 2] if polls else None,
        "first_poll_revoked": sum(1 for p in polls if p == 1),
    }
    if timeouts or not_valid_before:
        bench.failures.append(f"(g) propagation: {timeouts} timeouts, {not_valid_before} tokens not VALID before")
    log(f"(g) propagation: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    return result


def _percentile_ms(ordered_seconds: list[float], q: float) -> float | None:
    if not ordered_seconds:
        return None
    return percentile([round(x * 1e9) for x in ordered_seconds], q) / 1e6


def target(prop: dict[str, Any] | None) -> Target:
    return Target("(g) revocation propagation p99", None if prop is None else prop["p99_ms"], 25, False, " ms")


def section(prop: dict[str, Any] | None) -> list[str]:
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
