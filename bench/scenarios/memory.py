"""(m) Memory of a million revocations: loaded at start, followed live, pruned; beside the manifests' limits.

    .venv/bin/python -m bench.scenarios.memory [--revocations N]     (make bench runs it as scenario m)

Three `authsvc serve` processes on one fresh database: a *writer* that takes the RevokeUser calls (1,000 users
a call), a *follower* that only follows them (LISTEN/NOTIFY and the change log), and, once they are all made, a
*loaded* one started on them (its start-up snapshot). Then the app gets a maximum token lifetime that makes
every revocation prunable: the processes' minute-by-minute pruning deletes them, one process deleting and all
following. RSS (VmRSS) of each server is read after start, after the revocations, and after the pruning; its
peak is VmHWM. The limits are those of the Kubernetes manifests (deploy/k8s), read from the files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/scenarios/memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg  # noqa: E402
import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

from authsvc.v1 import auth_service_pb2 as pb  # noqa: E402
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc  # noqa: E402
from bench.context import log  # noqa: E402
from bench.database import PostgresServer, fresh_database, postgres_server  # noqa: E402
from bench.load import mint_hs256  # noqa: E402
from bench.servers import REPO, ServerProcess, kill_all_children  # noqa: E402
from bench.service import AppCredentials, authsvc_cli, authsvc_server, create_app, migrate  # noqa: E402

USERS_PER_CALL = 1000
CALLS_IN_FLIGHT = 4
HOUR = 3600
_MEMORY_LIMIT = re.compile(r"limits:\s*\n(?:\s+\w+:.*\n)*?\s+memory:\s*(\S+)")


def manifest_limits() -> dict[str, str]:
    """The container memory limit of each deployment manifest under deploy/k8s, by file."""
    limits: dict[str, str] = {}
    for path in sorted((REPO / "deploy" / "k8s").rglob("deployment*.yaml")):
        if match := _MEMORY_LIMIT.search(path.read_text()):
            limits[str(path.relative_to(REPO))] = match.group(1)
    return limits


def _mib(kib: int) -> float:
    return kib / 1024


async def _revoke_all(target: str, app: AppCredentials, count: int, before: int) -> None:
    """`count` users revoked through RevokeUser, USERS_PER_CALL a call, CALLS_IN_FLIGHT at a time."""
    calls = asyncio.Queue[int]()
    for first in range(0, count, USERS_PER_CALL):
        calls.put_nowait(first)
    revoke_before = timestamp_pb2.Timestamp(seconds=before)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AuthServiceStub(channel)

        async def worker() -> None:
            while not calls.empty():
                first = calls.get_nowait()
                users = [f"m-{i}" for i in range(first, min(first + USERS_PER_CALL, count))]
                await stub.RevokeUser(
                    pb.RevokeUserRequest(user_ids=users, revoke_before=revoke_before),
                    metadata=app.credential_md,
                    timeout=60,
                )

        await asyncio.gather(*(worker() for _ in range(CALLS_IN_FLIGHT)))


async def _outcome(target: str, app: AppCredentials, token: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await pb_grpc.AuthServiceStub(channel).VerifyToken(
            pb.VerifyTokenRequest(token=token), metadata=app.verify_md, timeout=10
        )
    return int(answer.outcome)


def _state_version(server: ServerProcess) -> int:
    port = server.env["AUTHSVC_HTTP_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^authsvc_state_version(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{server.name}: no authsvc_state_version in /metrics")
    return int(float(match.group(1)))


async def _until(check: Any, what: str, within: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise RuntimeError(f"{what}: not within {within:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def run(pg: PostgresServer, count: int) -> dict[str, Any]:
    """Runs scenario (m) on a fresh database of `pg`; the figures, in KiB, by server and moment."""
    out: dict[str, Any] = {"count": count, "limits": manifest_limits(), "servers": {}}
    async with contextlib.AsyncExitStack() as stack, fresh_database(pg, "mem") as url:
        await migrate(url)
        app = await create_app(url, "bench-memory")
        servers: dict[str, ServerProcess] = {}

        async def start(label: str) -> ServerProcess:
            server = authsvc_server(f"authsvc ({label})", url)
            stack.push_async_callback(server.stop)
            await server.start()
            servers[label] = server
            out["servers"][label] = {"after_start": server.memory()}
            return server

        writer, follower = await start("writer"), await start("follower")
        now = int(time.time())
        # Revoked two hours back: prunable as soon as the app gets a one-hour maximum lifetime.
        revoked_token = mint_hs256(app.api_secret, [f"m-{count - 1}"], now - 3 * HOUR)[0]
        started = time.monotonic()
        await _revoke_all(writer.target, app, count, now - 2 * HOUR)
        out["revoke_seconds"] = time.monotonic() - started

        async def follower_has_them() -> bool:
            return await _outcome(follower.target, app, revoked_token) == pb.VERIFY_OUTCOME_REVOKED

        await _until(follower_has_them, "the follower applying the revocations", 120)
        await asyncio.sleep(1)
        for label in ("writer", "follower"):
            out["servers"][label]["after_revocations"] = servers[label].memory()
        await start("loaded")
        log(
            f"(m) {count:,} revocations in {out['revoke_seconds']:.1f}s; RSS "
            + ", ".join(f"{label} {_mib(s.memory()['VmRSS']):.1f} MiB" for label, s in servers.items())
        )
        code, _, err = await authsvc_cli(url, "apps", "update", app.api_key, "--max-token-lifetime", "1h")
        if code != 0:
            raise RuntimeError(f"authsvc apps update failed ({code}): {err.strip()}")
        conn = await asyncpg.connect(url)
        try:

            async def pruned_everywhere() -> bool:
                if await conn.fetchval("SELECT count(*) FROM user_revocations"):
                    return False
                version: int = await conn.fetchval("SELECT version FROM state_version")
                return all(_state_version(s) >= version for s in servers.values())

            # Each process tries to prune once a minute; one at a time does (an advisory lock), the others apply it.
            out["prune_seconds"] = await _until(pruned_everywhere, "pruning", 300)
        finally:
            await conn.close()
        await asyncio.sleep(1)
        for label, server in servers.items():
            out["servers"][label]["after_prune"] = server.memory()
        log(
            f"(m) pruned in {out['prune_seconds']:.0f}s; RSS "
            + ", ".join(
                f"{label} {_mib(m['VmRSS']):.1f} MiB (peak {_mib(m['VmHWM']):.1f})"
                for label in servers
                if (m := out["servers"][label]["after_prune"])
            )
        )
    return out


def section(m: dict[str, Any] | None) -> list[str]:
    """The report's section for scenario (m)."""
    if not m or "prune_seconds" not in m:
        return ["## Memory of revocations (m)", "", "Not measured (see failures).", ""]
    count = m["count"]
    lines = [f"## Memory of {count:,} revocations (m)", ""]
    s = m["servers"]
    lines += [
        f"Three servers on one fresh database. The *writer* took {count:,} revocations through RevokeUser "
        f"({USERS_PER_CALL:,} users a call, {CALLS_IN_FLIGHT} calls in flight, {m['revoke_seconds']:.1f} s); the "
        "*follower* applied them live from the change log; the *loaded* server started after them (start-up "
        "snapshot). Then the app got a one-hour maximum token lifetime, which made every revocation prunable, and "
        f"the servers' minute-by-minute pruning deleted them ({m['prune_seconds']:.0f} s until every server had "
        "applied it). RSS is VmRSS from `/proc/<pid>/status`, peak its VmHWM (since the process started), in MiB.",
        "",
        "| server | RSS after start | RSS with the revocations | RSS after pruning | peak RSS |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, title in (
        ("writer", "writer (took the RevokeUser calls)"),
        ("follower", "follower (followed them live)"),
        ("loaded", "loaded (started with them)"),
    ):
        figures = s[label]
        with_them = figures.get("after_revocations", figures["after_start"])
        lines.append(
            f"| {title} | {_mib(figures['after_start']['VmRSS']):.1f} | {_mib(with_them['VmRSS']):.1f} | "
            f"{_mib(figures['after_prune']['VmRSS']):.1f} | {_mib(figures['after_prune']['VmHWM']):.1f} |"
        )
    peak = max(_mib(s[label]["after_prune"]["VmHWM"]) for label in s)
    limits = ", ".join(f"`{path}` {limit}" for path, limit in m["limits"].items()) or "none found"
    lines += ["", f"Highest peak: {peak:.1f} MiB. Memory limits in the manifests: {limits}.", ""]
    return lines


async def _main(count: int) -> int:
    async with postgres_server() as pg:
        result = await run(pg, count)
    print("\n".join(section(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--revocations", type=int, default=1_000_000, help="revoked users (default 1000000)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args.revocations))
    finally:
        kill_all_children()


if __name__ == "__main__":
    sys.exit(main())
