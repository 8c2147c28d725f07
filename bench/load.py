"""The load generator of `make bench`: one process, many unary calls in flight over several grpc.aio channels.

Run by bench/measure.py as `python -m bench.load`, never by hand. The protocol on stdin/stdout, one line each:

1. measure.py writes the spec (one JSON object, see `Spec`);
2. the generator builds every request up front (minting tokens if asked), opens its channels, starts
   `concurrency` call loops, warms up for `warmup` seconds, then prints `ready` and keeps the load going;
3. measure.py writes `go` once every generator is ready (and reads the server's CPU time); the generator records
   the calls that complete in the next `duration` seconds, stops, writes the latencies (int64 nanoseconds) to
   `latency_file` and prints one JSON object with its counts.

Requests are serialized once, before the window; the calls are made with raw bytes (no serializer, no
deserializer), and an answer is judged by its first bytes, so the generator spends its CPU on gRPC itself.
A generator that hears nothing on stdin (the bench gone) or outlives `max_seconds` stops by itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import jwt

from authsvc.v1 import auth_service_pb2 as pb

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
VERIFY_TOKEN = "/authsvc.v1.AuthService/VerifyToken"
VERIFY_TOKENS = "/authsvc.v1.AuthService/VerifyTokens"
ISSUE_TOKEN = "/authsvc.v1.AuthService/IssueToken"
REVOKE_USER = "/authsvc.v1.AuthService/RevokeUser"

# Field 1 (varint) = 1: HealthCheckResponse.status SERVING, VerifyTokenResponse.valid true. Protobuf writes
# fields in number order, so a valid verdict starts with these two bytes.
_FIELD1_TRUE = b"\x08\x01"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Without this, channels of one process with the same target share one subchannel (one TCP connection).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

_B64_HS256_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mint_hs256(secret: str, user_ids: Sequence[str], iat: int) -> list[str]:
    """HS256 tokens `{"user_id": ..., "iat": iat}` signed with `secret`, byte for byte what PyJWT makes.

    PyJWT takes ~60 µs a token here; this takes a tenth of it. The first tokens are checked against
    `jwt.encode`, and PyJWT mints them all if they differ.
    """
    key = secret.encode()
    sample = [jwt.encode({"user_id": u, "iat": iat}, secret, algorithm="HS256") for u in user_ids[:3]]
    tokens: list[str] = []
    append = tokens.append
    dumps = json.dumps
    for user_id in user_ids:
        payload = dumps({"user_id": user_id, "iat": iat}, separators=(",", ":")).encode()
        signing_input = _B64_HS256_HEADER + b"." + _b64(payload)
        signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
        append((signing_input + b"." + signature).decode())
    if tokens[: len(sample)] != sample:
        return [jwt.encode({"user_id": u, "iat": iat}, secret, algorithm="HS256") for u in user_ids]
    return tokens


async def issue_tokens(target: str, credential_md: Sequence[tuple[str, str]], user_ids: list[str]) -> list[str]:
    """Tokens minted by the server's IssueToken (for algorithms only the server can sign), 32 calls at a time."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            ISSUE_TOKEN,
            request_serializer=pb.IssueTokenRequest.SerializeToString,
            response_deserializer=pb.IssueTokenResponse.FromString,
        )
        tokens: list[str] = [""] * len(user_ids)
        cursor = itertools.count()

        async def one() -> None:
            while (i := next(cursor)) < len(user_ids):
                reply = await call(pb.IssueTokenRequest(user_id=user_ids[i]), metadata=credential_md, timeout=30)
                tokens[i] = reply.token

        await asyncio.gather(*(one() for _ in range(32)))
    return tokens


async def _tokens(spec: dict[str, Any], target: str) -> list[str]:
    source = spec["source"]
    if source == "list":
        return list(spec["tokens"])
    user_ids = [f"{spec['prefix']}{i}" for i in range(spec["count"])]
    if source == "mint":
        return mint_hs256(spec["secret"], user_ids, spec["iat"])
    if source == "issue":
        return await issue_tokens(target, [(k, v) for k, v in spec["metadata"]], user_ids)
    raise ValueError(f"unknown token source {source!r}")


def _check_any(_: bytes) -> bool:
    return True


def _check_field1_true(reply: bytes) -> bool:
    return reply.startswith(_FIELD1_TRUE)


def _check_all_valid(reply: bytes) -> bool:
    return all(result.valid for result in pb.VerifyTokensResponse.FromString(reply).results)


async def build_requests(spec: dict[str, Any]) -> tuple[str, list[bytes], Callable[[bytes], bool], int, int]:
    """(method, serialized requests, answer check, check 1 answer in N, tokens per call) for a spec."""
    kind = spec["kind"]
    target = spec["target"]
    if kind == "health":
        return HEALTH_CHECK, [b""], _check_field1_true, 1, 0  # HealthCheckRequest(service="") is empty
    if kind == "verify":
        tokens = await _tokens(spec["tokens"], target)
        requests = [pb.VerifyTokenRequest(token=t).SerializeToString() for t in tokens]
        return VERIFY_TOKEN, requests, _check_field1_true, 1, 1
    if kind == "verify_batch":
        tokens = await _tokens(spec["tokens"], target)
        size = spec["batch"]
        requests = [
            pb.VerifyTokensRequest(tokens=tokens[i : i + size]).SerializeToString()
            for i in range(0, len(tokens) - size + 1, size)
        ]
        # Parsing 100 verdicts costs the generator CPU the server needs: check one answer in 16.
        return VERIFY_TOKENS, requests, _check_all_valid, 16, size
    if kind == "issue":
        requests = [pb.IssueTokenRequest(user_id=f"{spec['prefix']}{i}").SerializeToString() for i in range(1000)]
        return ISSUE_TOKEN, requests, _check_any, 1, 0
    if kind == "revoke":
        requests = [
            pb.RevokeUserRequest(user_ids=[f"{spec['prefix']}{i}"]).SerializeToString() for i in range(spec["count"])
        ]
        return REVOKE_USER, requests, _check_any, 1, 0
    raise ValueError(f"unknown kind {kind!r}")


async def _read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(spec: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Runs the load the spec describes; returns the counts and the latencies (ns) of the window's calls."""
    prepare_started = time.perf_counter()
    method, requests, check, check_every, tokens_per_call = await build_requests(spec)
    prepare_seconds = time.perf_counter() - prepare_started
    target: str = spec["target"]
    metadata = tuple((k, v) for k, v in spec["metadata"])
    timeout = float(spec.get("call_timeout", 10.0))
    n_requests = len(requests)
    if n_requests == 0:
        raise ValueError("no requests to send")

    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(spec["channels"])]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), 30)
        calls: list[Any] = [ch.unary_unary(method) for ch in channels]

        latencies: list[int] = []
        record = latencies.append
        errors: Counter[str] = Counter()
        warmup_errors: Counter[str] = Counter()
        cursor = itertools.count()
        next_index = cursor.__next__
        now = time.perf_counter_ns
        recording = False
        running = True
        bad = 0
        checked = 0
        warmup_calls = 0

        async def worker(call: Any) -> None:
            nonlocal bad, checked, warmup_calls
            since_check = 0
            while running:
                request = requests[next_index() % n_requests]
                started = now()
                try:
                    reply = await call(request, metadata=metadata, timeout=timeout)
                except grpc.aio.AioRpcError as exc:
                    (errors if recording else warmup_errors)[exc.code().name] += 1
                    await asyncio.sleep(0.001)
                    continue
                if recording:
                    record(now() - started)
                    since_check += 1
                    if since_check >= check_every:
                        since_check = 0
                        checked += 1
                        if not check(reply):
                            bad += 1
                else:
                    warmup_calls += 1
                    if warmup_calls <= 64 and not check(reply):
                        bad += 1

        tasks = [asyncio.create_task(worker(calls[i % len(calls)])) for i in range(spec["concurrency"])]
        try:
            await asyncio.sleep(spec["warmup"])
            print("ready", flush=True)
            line = await _read_line()
            if line.strip() != "go":
                raise SystemExit("bench.load: the bench went away before 'go'")
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            window_started = now()
            recording = True
            await asyncio.sleep(spec["duration"])
            recording = False
            window_ns = now() - window_started
            usage_after = resource.getrusage(resource.RUSAGE_SELF)
            running = False
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout + 5)
        finally:
            running = False
            for task in tasks:
                task.cancel()
    finally:
        for ch in channels:
            await ch.close()

    used = next_index()
    cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    result = {
        "calls": len(latencies),
        "window_seconds": window_ns / 1e9,
        "errors": dict(errors),
        "warmup_errors": dict(warmup_errors),
        "warmup_calls": warmup_calls,
        "bad_answers": bad,
        "checked_answers": checked,
        "requests": n_requests,
        "requests_used": used,
        "wrapped": bool(spec.get("distinct")) and used > n_requests,
        "tokens_per_call": tokens_per_call,
        "cpu_seconds": cpu,
        "prepare_seconds": prepare_seconds,
    }
    return result, latencies


def main() -> None:
    spec = json.loads(sys.stdin.readline())

    async def bounded() -> tuple[dict[str, Any], list[int]]:
        return await asyncio.wait_for(run(spec), spec["max_seconds"])

    result, latencies = asyncio.run(bounded())
    with open(spec["latency_file"], "wb") as out:
        array("q", latencies).tofile(out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
