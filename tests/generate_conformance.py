"""`make conformance`: writes conformance/vectors.json from a real server.

The server runs in this process as the test suite's does (tests/conftest.py): a fresh database on
AUTHSVC_TEST_DATABASE_URL (else an embedded PostgreSQL), the test settings (clock leeway 5 s), a clock moved by
hand. Each app of tests/conformance_cases.py is created with its fixed keys and its setup steps run while a
WatchState stream records what the server sends; then each case's token goes to VerifyToken with the server's
clock at the case's `now`, and the answer is the case's `expect`.

    make conformance        # or: .venv/bin/python -m tests.generate_conformance [--output PATH]

It exits non-zero, after writing the file, when an answer is not the one the case's rule calls for or when the
Python LocalVerifier, fed the recorded streams, answers otherwise than the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from authsvc import migrations
from authsvc.clock import Micros
from authsvc.config import Settings
from authsvc.server import new_state, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from tests import conformance
from tests.conformance_cases import LEEWAY, SECOND, T0, VectorApp, all_cases, vector_apps
from tests.conftest import TEST_KEYRING, new_database
from tests.support import FakeClock

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

ABOUT = (
    "Conformance vectors of the authsvc token model (shared/TOKEN_MODEL.md): each case is a token, an app and a "
    "time, with the verdict the real server's VerifyToken gave. The server, authsvc.client.LocalVerifier and the "
    "Node LocalVerifier must all give it. Written by `make conformance` (tests/generate_conformance.py); the keys "
    "are test keys, public on purpose. See conformance/README.md."
)


@contextlib.asynccontextmanager
async def postgres_url() -> AsyncIterator[str]:
    """AUTHSVC_TEST_DATABASE_URL, else an embedded PostgreSQL for this run."""
    url = os.environ.get("AUTHSVC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="authsvc-pg-")), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


class Recording:
    """A WatchState stream of one app, opened at the first read, and the messages read from it (base64 of each,
    heartbeats left out)."""

    def __init__(self, stub: AuthServiceAsyncStub, app: VectorApp, secret: str) -> None:
        self._stub, self._metadata = stub, conformance.backend(app.api_key, secret)
        self._call: Any = None
        self.messages: list[str] = []

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def upto(self, version: int) -> None:
        """Reads until the stream has sent everything up to state `version` (a whole snapshot, or its change)."""
        if self._call is None:
            self._call = self._stub.WatchState(pb.WatchStateRequest(), metadata=self._metadata)
        async with asyncio.timeout(conformance.WAIT):
            while True:
                message = await self._call.read()
                if not isinstance(message, pb.WatchStateResponse):
                    raise RuntimeError("the WatchState stream ended")
                kind = message.WhichOneof("event")
                if kind == "heartbeat":
                    continue
                self.messages.append(base64.b64encode(message.SerializeToString()).decode())
                if message.version >= version and (kind != "snapshot" or message.snapshot.last):
                    return


async def generate() -> dict[str, Any]:
    """The file's contents, from a server started for the purpose."""
    clock = FakeClock()
    settings = Settings(host="127.0.0.1", port=0, http_port=0, issuer="authsvc-test", clock_leeway=LEEWAY / SECOND)
    async with postgres_url() as server_url, new_database(server_url, "authsvc_conformance") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=5)
        store = Store(pool, TEST_KEYRING)
        state = new_state(store, url, settings)
        await state.start()
        running = await start_server(store, state, settings, clock)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub: AuthServiceAsyncStub = pb_grpc.AuthServiceStub(channel)
                return await record(store, state, stub, clock)
        finally:
            await running.stop(None)
            await state.stop()
            await pool.close()


async def record(store: Store, state: State, stub: AuthServiceAsyncStub, clock: FakeClock) -> dict[str, Any]:
    """The file's contents, from the server."""

    async def mint(app: VectorApp, user_id: str, at: Micros, secret: str | None = None, **fields: Any) -> str:
        clock.set(at)
        metadata = conformance.backend(app.api_key, secret or app.current_secret)
        response = await stub.IssueToken(pb.IssueTokenRequest(user_id=user_id, **fields), metadata=metadata)
        return response.token

    server = conformance.Server(store, state, stub, clock.set)
    apps = vector_apps()
    entries = []
    for app in apps.values():
        entry = app.entry()
        clock.set(T0)
        changes = Recording(stub, app, app.secret)
        await conformance.rebuild(server, entry, _after_step(app, changes, mint))
        changes.close()
        snapshot = Recording(stub, app, app.current_secret)
        await snapshot.upto(state.version)
        snapshot.close()
        entry["streams"] = {"changes": changes.messages, "snapshot": snapshot.messages}
        entries.append(entry)

    cases = []
    for case in await all_cases(apps, mint):
        clock.set(case.now)
        metadata = (("x-api-key", apps[case.app].api_key),)
        response = await stub.VerifyToken(pb.VerifyTokenRequest(token=case.token), metadata=metadata)
        cases.append(
            {
                "name": case.name,
                "rule": case.rule,
                "app": case.app,
                "token": case.token,
                "now": case.now,
                "expect": conformance.expectation(response),
            }
        )
    return {"format": conformance.FORMAT, "about": ABOUT, "apps": entries, "cases": cases}


def _after_step(
    app: VectorApp, changes: Recording, mint: Callable[..., Awaitable[str]]
) -> Callable[[int], Awaitable[None]]:
    first = True

    async def after_step(version: int) -> None:
        nonlocal first
        await changes.upto(version)
        if first:  # the app just created: tokens minted before any setup step
            first = False
            for user_id in app.mint_first:
                app.minted_first[user_id] = await mint(app, user_id, T0 + 500 * SECOND, secret=app.secret)

    return after_step


def check(document: dict[str, Any]) -> list[str]:
    """What is wrong with a freshly written file: duplicate names, answers not as the case's rule says (the text
    after `->`), and the Python LocalVerifier's disagreements with the server on either stream."""
    cases = document["cases"]
    names = [case["name"] for case in cases]
    problems = [f"duplicate case name {name}" for name in sorted({n for n in names if names.count(n) > 1})]
    for case in cases:
        called_for = case["rule"].rsplit("-> ", 1)[-1].split()[0]
        if called_for != case["expect"]["outcome"]:
            problems.append(
                f"{case['name']}: the rule calls for {called_for}, the server said {case['expect']['outcome']}"
            )
    for entry in document["apps"]:
        app_cases = [case for case in cases if case["app"] == entry["name"]]
        for stream in ("changes", "snapshot"):
            for case, got in zip(app_cases, conformance.local_verdicts(entry, stream, app_cases), strict=True):
                problem = conformance.mismatch(case, f"python LocalVerifier ({stream} stream)", got)
                if problem:
                    problems.append(problem)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description="Write conformance/vectors.json from a real server.")
    parser.add_argument(
        "--output", type=Path, default=conformance.VECTORS, help="where to write (default: %(default)s)"
    )
    output: Path = parser.parse_args().output
    document = asyncio.run(generate())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    problems = check(document)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    outcomes = sorted({case["expect"]["outcome"] for case in document["cases"]})
    print(f"wrote {output}: {len(document['apps'])} apps, {len(document['cases'])} cases ({', '.join(outcomes)})")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
