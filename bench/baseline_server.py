"""The baseline of `make bench`: VerifyToken the way most tutorials write it, on the same stubs and database.

Per call: `jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})`, then ONE asyncpg
query for the user's revocation. The apps (API key → id, secret) are read once at start, as a tutorial's
config would hold them. Only VerifyToken is implemented (the other RPCs answer UNIMPLEMENTED); health is served
so the bench can tell when it is up. It prints "serving gRPC on HOST:PORT" once listening.

    python -m bench.baseline_server --database-url URL [--host 127.0.0.1] [--port 0] [--pool-size 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import asyncpg
import grpc
import jwt
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from authsvc.sealing import keyring_from
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc

REVOCATION_QUERY = "SELECT revoked_before FROM user_revocations WHERE app_id=$1 AND user_id=$2"


class BaselineAuthServicer(pb_grpc.AuthServiceServicer):
    """VerifyToken: PyJWT decode, one revocation query."""

    def __init__(self, pool: asyncpg.Pool, apps: dict[str, tuple[int, str]]) -> None:
        self._pool = pool
        self._apps = apps

    async def VerifyToken(self, request: pb.VerifyTokenRequest, context: Any) -> pb.VerifyTokenResponse:
        metadata = dict(context.invocation_metadata() or ())
        app = self._apps.get(metadata.get("x-api-key", ""))
        if app is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no app has this API key")
            raise AssertionError("unreachable")
        app_id, secret = app
        try:
            claims = jwt.decode(request.token, secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            return pb.VerifyTokenResponse(outcome=pb.VERIFY_OUTCOME_EXPIRED)
        except jwt.InvalidSignatureError:
            return pb.VerifyTokenResponse(outcome=pb.VERIFY_OUTCOME_INVALID_SIGNATURE)
        except jwt.InvalidTokenError:
            return pb.VerifyTokenResponse(outcome=pb.VERIFY_OUTCOME_MALFORMED)
        user_id = claims.get("user_id")
        if not isinstance(user_id, str):
            return pb.VerifyTokenResponse(outcome=pb.VERIFY_OUTCOME_MALFORMED)
        iat = claims.get("iat")
        issued_at = None
        if isinstance(iat, int | float):
            issued_at = timestamp_pb2.Timestamp()
            issued_at.FromMicroseconds(int(iat * 1_000_000))
        revoked_before = await self._pool.fetchval(REVOCATION_QUERY, app_id, user_id)
        if revoked_before is not None and (not isinstance(iat, int | float) or iat < revoked_before.timestamp()):
            return pb.VerifyTokenResponse(outcome=pb.VERIFY_OUTCOME_REVOKED, user_id=user_id, issued_at=issued_at)
        return pb.VerifyTokenResponse(valid=True, outcome=pb.VERIFY_OUTCOME_VALID, user_id=user_id, issued_at=issued_at)


async def serve(database_url: str, host: str, port: int, pool_size: int) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size)
    try:
        # The apps' secrets are sealed at rest; the baseline opens them once, with authsvc's own store.
        keyring = keyring_from(os.environ.get("AUTHSVC_KEK"), None)
        if keyring is None:
            raise SystemExit("the baseline needs AUTHSVC_KEK to read the apps' secrets")
        apps = {app.api_key: (app.id, app.api_secret) for app in await Store(pool, keyring).list_apps()}
        server = grpc.aio.server()
        servicer = BaselineAuthServicer(pool, apps)  # type: ignore[abstract]  # the other RPCs: UNIMPLEMENTED
        pb_grpc.add_AuthServiceServicer_to_server(servicer, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        bound = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        print(f"baseline serving gRPC on {host}:{bound} ({len(apps)} apps)", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_server", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=10, help="asyncpg pool size (authsvc's default: 10)")
    args = parser.parse_args()
    asyncio.run(serve(args.database_url, args.host, args.port, args.pool_size))


if __name__ == "__main__":
    main()
