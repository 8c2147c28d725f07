"""WatchState's cost: the size of its messages, and the CPU and memory idle watchers add to a server.

    .venv/bin/python -m bench.watchers [--watchers 1000] [--window 10] [--revoked 100000]

One `authsvc serve` process (one worker) on a fresh database: AUTHSVC_BENCH_DATABASE_URL names a PostgreSQL
server to make it on (dropped at the end), else an embedded one is started. First the sizes: a snapshot of an app
with `--revoked` user revocations, a change revoking 1 and 1,000 users, clearing 1,000, revoking and clearing one
token, a heartbeat, and the snapshot again with 1,000 token revocations. Then the
idle cost: the server's CPU time (utime + stime, /proc) over `--window` seconds at rest with no watcher, then
with `--watchers` streams open on another app (spread over one connection per 100 streams, each stream read by
this process), and its RSS (VmRSS) before and after. Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as `python bench/watchers.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import grpc  # noqa: E402

from authsvc.v1 import auth_service_pb2 as pb  # noqa: E402
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc  # noqa: E402

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

AUTHSVC = [sys.executable, "-m", "authsvc"]
_SERVING = re.compile(r"authsvc serving gRPC on \S+:(\d+)")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A fresh database on AUTHSVC_BENCH_DATABASE_URL's server (or an embedded one), dropped at the end."""
    embedded = None
    server_url = os.environ.get("AUTHSVC_BENCH_DATABASE_URL")
    if not server_url:
        import pgserver

        embedded = pgserver.get_server(Path(tempfile.mkdtemp(prefix="authsvc-bench-pg-")), cleanup_mode="delete")
        server_url = embedded.get_uri()
    name = f"authsvc_watchbench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            embedded.cleanup()


async def run(argv: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:])} failed: {err.decode()}")
    return out.decode()


@contextlib.asynccontextmanager
async def server(env: dict[str, str]) -> AsyncIterator[tuple[int, int]]:
    """`authsvc serve` (one worker); yields its pid and gRPC port."""
    process = await asyncio.create_subprocess_exec(
        *AUTHSVC, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--workers", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    port = 0
    while not port:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise SystemExit("authsvc serve ended before serving")
        if match := _SERVING.search(line):
            port = int(match.group(1))

    async def drain(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    reader = asyncio.create_task(drain(process.stdout))
    try:
        yield process.pid, port
    finally:
        process.terminate()
        await process.wait()
        reader.cancel()


def metadata(app: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", app["api_key"]), ("authorization", f"Bearer {app['api_secret']}"))


async def sizes(stub: AuthServiceAsyncStub, app: dict[str, str], revoked: int) -> list[tuple[str, str]]:
    for start in range(0, revoked, 1000):
        users = [f"user{n:09d}" for n in range(start, min(start + 1000, revoked))]
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=users), metadata=metadata(app))
    call = stub.WatchState(pb.WatchStateRequest(), metadata=metadata(app))
    chunks, total, started = 0, 0, time.perf_counter()
    async for message in call:
        chunks, total = chunks + 1, total + message.ByteSize()
        if message.snapshot.last:
            break
    loaded = time.perf_counter() - started
    rows = [(f"snapshot, {revoked:,} revoked users", f"{total:,} B in {chunks} chunk(s), read in {loaded:.2f} s")]

    async def change(request: object, what: str, rpc: str) -> None:
        await getattr(stub, rpc)(request, metadata=metadata(app))
        async for message in call:
            if message.WhichOneof("event") == "change":
                rows.append((what, f"{message.ByteSize():,} B"))
                return

    await change(pb.RevokeUserRequest(user_ids=["alice"]), "change: 1 user revoked", "RevokeUser")
    thousand = [f"member{n:06d}" for n in range(1000)]
    await change(pb.RevokeUserRequest(user_ids=thousand), "change: 1,000 users revoked (ids of 12 chars)", "RevokeUser")
    cleared = pb.ClearRevocationRequest(users=pb.UserIds(user_ids=thousand))
    await change(cleared, "change: 1,000 users cleared", "ClearRevocation")
    await change(pb.RevokeAppRequest(), "change: app settings (HS256, one secret)", "RevokeApp")
    jti = "j" * 22  # the length of the jti authsvc mints (128 random bits, base64url)
    await change(pb.RevokeTokenRequest(jti=jti), "change: 1 token revoked (a jti of 22 chars)", "RevokeToken")
    await change(
        pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=[jti])), "change: 1 token cleared", "ClearRevocation"
    )
    async for message in call:
        if message.WhichOneof("event") == "heartbeat":
            rows.append(("heartbeat", f"{message.ByteSize():,} B"))
            break
    call.cancel()
    # A snapshot again, with 1,000 token revocations besides the users': what each revoked token adds.
    for n in range(1000):
        await stub.RevokeToken(pb.RevokeTokenRequest(jti=f"{n:022d}"), metadata=metadata(app))
    with_tokens = 0
    async for message in stub.WatchState(pb.WatchStateRequest(), metadata=metadata(app)):
        with_tokens += message.ByteSize()
        if message.snapshot.last:
            break
    rows.append(("snapshot, the same + 1,000 revoked tokens (jtis of 22 chars)", f"{with_tokens:,} B"))
    return rows


async def idle_cost(
    pid: int, target: str, app: dict[str, str], watchers: int, window: float, readings: dict[str, float] | None = None
) -> list[tuple[str, str]]:
    """The rows of the idle cost; `readings`, when given, gets the figures as numbers (CPU in % of a core, MiB)."""
    await asyncio.sleep(3)  # start-up and the size runs settle
    rss_before, cpu_before = rss_mib(pid), cpu_seconds(pid)
    await asyncio.sleep(window)
    at_rest = (cpu_seconds(pid) - cpu_before) / window
    channels = [grpc.aio.insecure_channel(target) for _ in range((watchers + 99) // 100)]
    stubs = [pb_grpc.AuthServiceStub(channel) for channel in channels]
    loaded = asyncio.Event()
    ready = 0

    async def watcher(n: int) -> None:
        nonlocal ready
        call = stubs[n % len(stubs)].WatchState(pb.WatchStateRequest(), metadata=metadata(app))
        async for message in call:
            if message.snapshot.last:
                ready += 1
                if ready == watchers:
                    loaded.set()

    tasks = [asyncio.create_task(watcher(n)) for n in range(watchers)]
    await asyncio.wait_for(loaded.wait(), 120)
    await asyncio.sleep(3)
    cpu_before = cpu_seconds(pid)
    await asyncio.sleep(window)
    with_watchers = (cpu_seconds(pid) - cpu_before) / window
    rss_after = rss_mib(pid)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()
    if readings is not None:
        readings.update(
            cpu_rest=at_rest * 100, cpu_with=with_watchers * 100, rss_before_mib=rss_before, rss_after_mib=rss_after
        )
    return [
        ("server CPU at rest, no watcher", f"{at_rest:.1%} of a core"),
        (f"server CPU at rest, {watchers:,} idle watchers", f"{with_watchers:.1%} of a core"),
        (f"server RSS: no watcher → {watchers:,} watchers", f"{rss_before:.1f} → {rss_after:.1f} MiB"),
        ("per watcher", f"{(rss_after - rss_before) * 1024 / watchers:.1f} KiB"),
    ]


async def main(args: argparse.Namespace) -> None:
    async with database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        env.update(
            AUTHSVC_DATABASE_URL=url,
            AUTHSVC_KEK=base64.b64encode(os.urandom(32)).decode(),
            AUTHSVC_LOG_LEVEL="INFO",
        )
        await run([*AUTHSVC, "migrate"], env)
        sized = json.loads(await run([*AUTHSVC, "apps", "create", "sized", "--format", "json"], env))
        idle = json.loads(await run([*AUTHSVC, "apps", "create", "idle", "--format", "json"], env))
        async with server(env) as (pid, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            rows = await sizes(pb_grpc.AuthServiceStub(channel), sized, args.revoked)
            rows += await idle_cost(pid, f"127.0.0.1:{port}", idle, args.watchers, args.window)
    print("| what | measured |\n| --- | --- |")
    for what, value in rows:
        print(f"| {what} | {value} |")
    print(f"\n`{' '.join(['.venv/bin/python -m bench.watchers', *sys.argv[1:]])}`")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds each CPU reading lasts")
    parser.add_argument("--revoked", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
