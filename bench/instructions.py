"""What a call costs the server in instructions, counted by callgrind: steadier than CPU seconds on a shared machine.

    .venv/bin/python -m bench.instructions [CALLS]

One `authsvc serve` (one worker, the bench's event loop, WARNING) runs under `valgrind --tool=callgrind` on a fresh
database (AUTHSVC_BENCH_DATABASE_URL's server, else an embedded PostgreSQL). After a warm-up, CALLS calls (default
600) of each kind, 16 in flight, each window counted apart (`callgrind_control --dump`): Health/Check (the ceiling
of bench (a)), VerifyToken of 100 HS256 tokens repeated, and VerifyToken of a fresh HS256 token every call, made as
bench (b) makes them (PyJWT, `{"user_id", "iat"}`). It prints the instructions per call of each, all threads of the
process included, and their ratios to the ceiling: bench (b)'s CPU targets, in instructions rather than seconds.
Instructions say nothing of cache misses or of time spent waiting; `make bench` measures seconds. They are not
fixed either: how many calls one turn of the event loop serves depends on timing, so runs differ by a few percent
(Health/Check once 7 % apart between two runs of the same tree while other jobs ran); compare trees run by run,
alternating, and look at the differences rather than at one run.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc
import jwt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from bench.database import fresh_database, postgres_server
from bench.servers import AUTHSVC
from bench.service import BENCH_LOOP, AppCredentials, authsvc_env, create_app, free_port, migrate

IN_FLIGHT = 16
POOL = 100


async def _calls(count: int, call: object) -> None:
    """`count` calls of `call(i)` (an async function), IN_FLIGHT at a time."""
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            await call(i)  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def _dump(pid: int, label: str) -> None:
    control = await asyncio.create_subprocess_exec(
        "callgrind_control",
        "--dump=" + label,
        str(pid),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, said = await asyncio.wait_for(control.communicate(), 120)  # it says "sending command ..." on stderr
    if control.returncode != 0:
        raise RuntimeError(f"callgrind_control --dump={label} {pid} failed: {said.decode().strip()}")


async def _serving(target: str, within: float) -> None:
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"authsvc under callgrind was not SERVING within {within:g} s")
            await asyncio.sleep(1)


async def _phases(target: str, pid: int, app: AppCredentials, count: int) -> None:
    metadata = app.verify_md
    now = int(time.time())

    def mint(prefix: str, n: int) -> list[str]:
        return [
            jwt.encode({"user_id": f"{prefix}{i}", "iat": now}, app.api_secret, algorithm="HS256") for i in range(n)
        ]

    pool, warm, fresh = mint("rep", POOL), mint("warm", count), mint("fresh", count)
    async with grpc.aio.insecure_channel(target) as channel:
        auth, health = pb_grpc.AuthServiceStub(channel), health_pb2_grpc.HealthStub(channel)

        async def verify(token: str) -> None:
            answer = await auth.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=metadata)
            if not answer.valid:
                raise RuntimeError(f"a bench token was refused: {pb.VerifyOutcome.Name(answer.outcome)}")

        async def check(_: int) -> None:
            await health.Check(health_pb2.HealthCheckRequest())

        async def repeated(i: int) -> None:
            await verify(pool[i % POOL])

        async def once(i: int) -> None:
            await verify(fresh[i])

        async def warming(i: int) -> None:
            await verify(warm[i])

        await _calls(3 * POOL, repeated)  # each pooled token seen more than once: kept by the verifier
        await _calls(count, warming)
        await _calls(count, check)
        await _dump(pid, "warm-up")
        for label, call in (("health", check), ("repeated", repeated), ("fresh", once)):
            await _calls(count, call)
            await _dump(pid, label)


def _totals(folder: Path, pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in folder.glob(f"cg.{pid}.out.*"):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: .*?dump (\S+)", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if label and total:
            found[label.group(1)] = int(total.group(1))
    return found


async def run(count: int) -> dict[str, int]:
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench.instructions needs {' and '.join(missing)} (Debian: apt-get install valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="authsvc-callgrind-"))
    async with postgres_server() as pg, fresh_database(pg, "instructions") as url:
        await migrate(url)
        app = await create_app(url, "bench-instructions")
        port = free_port()
        argv = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p.out", "--dump-instr=no",
            *AUTHSVC, "serve", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        env = authsvc_env(url, AUTHSVC_EVENT_LOOP=BENCH_LOOP)
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await _serving(f"127.0.0.1:{port}", 300)
            await _phases(f"127.0.0.1:{port}", process.pid, app, count)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 120)
            except TimeoutError:
                process.kill()
                await process.wait()
        totals = _totals(folder, process.pid)
    shutil.rmtree(folder, ignore_errors=True)
    return {label: totals[label] // count for label in ("health", "repeated", "fresh") if label in totals}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    per_call = asyncio.run(run(count))
    ceiling = per_call.get("health")
    print(f"instructions per call, {count} calls each, {IN_FLIGHT} in flight (callgrind, every thread of the server):")
    for label, title in (
        ("health", "Health/Check (the ceiling)"),
        ("repeated", "VerifyToken HS256, 100 tokens repeated"),
        ("fresh", "VerifyToken HS256, a fresh token every call"),
    ):
        value = per_call.get(label)
        ratio = f"{value / ceiling:.2f} × the ceiling" if value is not None and ceiling else ""
        print(f"  {title:45s} {value if value is not None else '—':>10}  {ratio}")


if __name__ == "__main__":
    main()
