"""Scenarios (a) to (f): calls/s, latency and server CPU per call of one `authsvc serve`, and of the baseline.

(a) Health/Check, the ceiling; (b) VerifyToken HS256 with 100 repeated tokens and with a fresh token every call;
(c) VerifyTokens with 100 fresh tokens a call — (a) to (c) in interleaved rounds, for the target ratios between
them; then (b) on the plain asyncio loop and with EdDSA tokens, (d) IssueToken, (e) RevokeUser, and (f) the
baseline server (bench/baseline_server.py) under the load of (b).
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, Row, Target, figure, first_line, log, ratio
from bench.load import issue_tokens, mint_hs256
from bench.measure import SpecFor, measure, measure_interleaved
from bench.servers import ServerProcess, running
from bench.service import AppCredentials, AppNotCreated, authsvc_server, baseline_server, create_app, uvloop_status

REPEATED_POOL = 100
BATCH_SIZE = 100


def health_spec(_: int) -> dict[str, Any]:
    """The load of (a): Health/Check, the ceiling."""
    return {"kind": "health", "metadata": []}


def repeated_tokens(bench: Bench, app: AppCredentials) -> list[str]:
    """The REPEATED_POOL HS256 tokens that the repeated loads of `app` cycle through."""
    return mint_hs256(app.api_secret, [f"rep-{i}" for i in range(REPEATED_POOL)], bench.iat)


def verify_specs(app: AppCredentials, repeated: list[str], bench: Bench) -> dict[str, SpecFor]:
    """The VerifyToken load of (b), reused unchanged for the baseline (f) and for (h)."""
    opts = bench.opts

    def fresh(i: int) -> dict[str, Any]:
        tokens = {"source": "mint", "secret": app.api_secret, "prefix": f"fresh-g{i}-", "count": opts.fresh_tokens}
        return {"kind": "verify", "distinct": True, "metadata": app.verify_md, "tokens": {**tokens, "iat": bench.iat}}

    return {"repeated": repeated_spec(app, repeated), "fresh": fresh}


def repeated_spec(app: AppCredentials, tokens: list[str]) -> SpecFor:
    """VerifyToken of `tokens` in turn, over and over."""
    return lambda _: {"kind": "verify", "metadata": app.verify_md, "tokens": {"source": "list", "tokens": tokens}}


def batch_spec(app: AppCredentials, bench: Bench) -> SpecFor:
    """The load of (c): VerifyTokens, BATCH_SIZE fresh tokens a call."""
    return lambda i: {
        "kind": "verify_batch",
        "distinct": True,
        "batch": BATCH_SIZE,
        "metadata": app.verify_md,
        "tokens": {
            "source": "mint",
            "secret": app.api_secret,
            "prefix": f"batch-g{i}-",
            "count": bench.opts.batch_tokens,
            "iat": bench.iat,
        },
    }


async def run(
    bench: Bench, url: str, server: ServerProcess, verify_app: AppCredentials, revoke_app: AppCredentials
) -> None:
    """Every scenario of (a) to (f) against `server`, the main one, on database `url`, in the report's order."""
    opts = bench.opts
    specs = verify_specs(verify_app, repeated_tokens(bench, verify_app), bench)
    # The targets are ratios between these four: measured in interleaved rounds (see targets()).
    await measure_interleaved(
        bench,
        [
            (Row("a", "(a) Health/Check — the ceiling", "a ceiling", "authsvc"), server, health_spec),
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
                batch_spec(verify_app, bench),
            ),
        ],
    )
    if opts.selected("b-rep-asyncio"):
        await asyncio_scenario(bench, url, specs["repeated"])
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
    async with running(baseline_server(url)) as baseline:
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


async def asyncio_scenario(bench: Bench, url: str, repeated: SpecFor) -> None:
    """(b) repeated on a server of its own that runs the plain asyncio loop, when the build has a loop setting."""
    loop_field, reason = uvloop_status()
    if loop_field is None:
        bench.notes.append(reason)
        log(reason)
        return
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
                repeated,
            )
    except Exception as exc:
        bench.failures.append(f"asyncio server: {first_line(exc)}")
        log(f"asyncio server FAILED: {exc}")


async def eddsa_scenarios(bench: Bench, server: ServerProcess, database_url: str) -> None:
    """(b) with EdDSA tokens, when `apps create --algorithm EdDSA` works in this build."""
    try:
        app = await create_app(database_url, "bench-eddsa", "--algorithm", "EdDSA")
    except AppNotCreated as exc:
        bench.notes.append(
            f"EdDSA: not supported by this build (`authsvc apps create NAME --algorithm EdDSA` said: {exc.said})"
        )
        log("EdDSA: not supported by this build")
        return
    repeated = await issue_tokens(server.target, app.credential_md, [f"ed-rep-{i}" for i in range(REPEATED_POOL)])
    await measure(
        bench,
        Row("b-eddsa-rep", "(b) VerifyToken EdDSA, repeated (100 tokens)", "b EdDSA rep", "authsvc"),
        server,
        repeated_spec(app, repeated),
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


def targets(bench: Bench) -> list[Target]:
    """The targets on ratios between (a), (b) HS256 and (c), each the median of its ratios round by round."""
    a, rep, fresh, batch = "a", "b-rep", "b-fresh", "c"
    calls, cpu, tokens = "calls_per_s", "server_cpu_us", "tokens_per_s"
    return [
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
            "VerifyTokens tokens/s ÷ VerifyToken calls/s", (batch, tokens), (fresh, calls), 10, True, "both fresh HS256"
        ),
        bench.paired_target(
            "VerifyTokens tokens/s ÷ VerifyToken calls/s", (batch, tokens), (rep, calls), 10, True, "vs repeated"
        ),
    ]


def baseline_comparison(bench: Bench) -> list[str]:
    """The report's table of the baseline (f) ÷ authsvc (b), figure by figure (no target)."""
    pairs = [(bench.row("f-rep"), bench.row("b-rep")), (bench.row("f-fresh"), bench.row("b-fresh"))]
    lines = [
        "Baseline (f) ÷ authsvc (b), same load and tokens (no target). Below 1 for calls/s, above 1 for CPU and "
        "latency: authsvc does better.",
        "",
        "| baseline ÷ authsvc | repeated tokens | fresh tokens |",
        "| --- | ---: | ---: |",
    ]
    for title, value in (
        ("calls/s", lambda r: figure(r, "calls_per_s")),
        ("server CPU µs/call", lambda r: figure(r, "server_cpu_us")),
        ("server + PostgreSQL CPU µs/call", _total_cpu),
        ("p99 latency", lambda r: figure(r, "p99_ms")),
    ):
        ratios = (ratio(value(base), value(row)) for base, row in pairs)
        lines.append(f"| {title} | " + " | ".join("—" if r is None else f"{r:.2f}" for r in ratios) + " |")
    return lines


def _total_cpu(row: Row | None) -> float | None:
    if row is None or row.server_cpu_us is None:
        return None
    return row.server_cpu_us + (row.db_cpu_us or 0.0)
