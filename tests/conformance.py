"""The conformance vectors (conformance/vectors.json): rebuilding their apps on a real server, and comparing verdicts.

Shared by the generator (tests/generate_conformance.py, `make conformance`) and the runs of the file
(tests/test_conformance.py). The file's format is described in conformance/README.md; the `setup` of each app is
this module's own format:

    {"algorithm": "HS256", "api_secret": "...", "secret_kid": "...", "key_pair": {"kid": "...", "pem": "..."} | null,
     "steps": [{"action": "revoke_users", "at": <µs>, "user_ids": [...], "revoke_before": <µs>}, ...]}

Each step runs with the server's clock set to its `at`. Revocations go through the real RPCs; key material the
admin API would generate itself (the app's first secret and key pair, a rotated-in secret or key pair) is the
vector's own, written through the storage layer as the admin RPC writes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from authsvc import apps, wire
from authsvc.audit import SYSTEM
from authsvc.client import LocalVerifier, Verification
from authsvc.clock import Micros, from_datetime, to_datetime
from authsvc.state import State
from authsvc.storage.audit import audit
from authsvc.storage.base import record
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2 as pb

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

VECTORS = Path(__file__).resolve().parent.parent / "conformance" / "vectors.json"
"""The file, at the repository root."""

FORMAT = 1

OUTCOME_PREFIX = "VERIFY_OUTCOME_"
SCOPE_PREFIX = "REVOCATION_SCOPE_"
ACTION_PREFIX = "CLIENT_ACTION_"

OUTCOMES = tuple(
    name.removeprefix(OUTCOME_PREFIX)
    for name in pb.VerifyOutcome.keys()
    if not name.endswith(("_UNSPECIFIED", "_UNAVAILABLE"))
)
"""Every VerifyOutcome but UNSPECIFIED and UNAVAILABLE (which no verdict on a token is): the file must have a case of
each, an outcome added to the proto included."""

RULE_PATTERN = re.compile(
    r"TOKEN_MODEL (step [1-7]|Apps|User tokens|Revocation|Development mode): \S.* -> ([A-Z_]+)\b.*"
)
"""What a case's `rule` looks like: the TOKEN_MODEL step (or section) it checks, what it checks, and after `->` the
outcome the rule calls for."""

RULES = (*(f"step {n}" for n in range(1, 8)), "Apps", "User tokens", "Revocation", "Development mode")
"""Every step and section of shared/TOKEN_MODEL.md about verification: the file must name each."""

WAIT = 30.0
"""Seconds a rebuild waits for the server's state to show a change before it fails."""


def called_for(rule: str) -> str | None:
    """The outcome a case's rule calls for (the word after `->`), or None when the rule is not of RULE_PATTERN."""
    match = RULE_PATTERN.fullmatch(rule)
    return None if match is None else match.group(2)


def load(path: Path = VECTORS) -> dict[str, Any]:
    """The vectors file, parsed; ValueError when its format is not this module's."""
    vectors: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if vectors.get("format") != FORMAT:
        raise ValueError(f"{path}: format {vectors.get('format')!r}, expected {FORMAT}")
    return vectors


def backend(api_key: str, secret: str) -> tuple[tuple[str, str], ...]:
    """Call metadata of an app's backend."""
    return (("x-api-key", api_key), ("authorization", f"Bearer {secret}"))


def timestamp(micros: Micros) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(to_datetime(micros))
    return stamp


@dataclass
class Server:
    """The parts of a running server a rebuild works with."""

    store: Store
    state: State
    stub: AuthServiceAsyncStub
    set_clock: Callable[[Micros], None]


async def _wait_for_app(state: State, api_key: str) -> App:
    async with asyncio.timeout(WAIT):
        while True:
            await state.catch_up()
            app = state.app(api_key)
            if app is not None:
                return app
            await asyncio.sleep(0.01)


async def _rotate_secret(store: Store, app: App, step: Mapping[str, Any]) -> int:
    """apps.rotate_api_secret with the vector's secret and the old secrets' expiry at a fixed time: the rows
    Store.rotate_secret writes (which computes the expiry from the database's clock)."""
    async with store._connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE app_keys SET expires_at = least(coalesce(expires_at, 'infinity'), $2)"
            " WHERE app_id = $1 AND kind = 'secret' AND retired_at IS NULL",
            app.id,
            to_datetime(step["expires_at"]),
        )
        await store._insert_key(conn, app.id, app.api_key, step["kid"], "secret", "HS256", step["secret"])
        overlap = (step["expires_at"] - step["at"]) / 1e6
        await audit(conn, SYSTEM, "api_secret.rotated", app.id, {"key_id": step["kid"], "overlap_seconds": overlap})
        version: int = await record(conn, app.id, "app")
        return version


async def rebuild(
    server: Server, spec: Mapping[str, Any], after_step: Callable[[int], Awaitable[None]] | None = None
) -> App:
    """Creates the app of a vectors file entry on the server and runs its setup steps; returns the app as the
    server's state holds it afterwards. `after_step(version)` runs after the creation and after each step, with
    the state version the server is at."""
    setup = spec["setup"]
    key_pair = setup.get("key_pair")
    await server.store.create_app(
        api_key=spec["api_key"],
        name=f"conformance {spec['name']}",
        api_secret=setup["api_secret"],
        key_id=setup["secret_kid"],
        algorithm=setup["algorithm"],
        token_ttl_seconds=None,
        auth_checks_disabled=False,
        require_iat=False,
        key_pair=None if key_pair is None else (key_pair["kid"], key_pair["pem"]),
        actor=SYSTEM,
    )
    app = await _wait_for_app(server.state, spec["api_key"])
    if after_step is not None:
        await after_step(server.state.version)
    for step in setup["steps"]:
        server.set_clock(step["at"])
        await _run_step(server, app, step)
        await server.state.catch_up()
        app = await _wait_for_app(server.state, spec["api_key"])
        if after_step is not None:
            await after_step(server.state.version)
    return app


async def _run_step(server: Server, app: App, step: Mapping[str, Any]) -> None:
    action, stub, metadata = step["action"], server.stub, backend(app.api_key, app.api_secret)
    if action == "revoke_users":
        await stub.RevokeUser(
            pb.RevokeUserRequest(user_ids=step["user_ids"], revoke_before=timestamp(step["revoke_before"])),
            metadata=metadata,
        )
    elif action == "revoke_app":
        await stub.RevokeApp(pb.RevokeAppRequest(revoke_before=timestamp(step["revoke_before"])), metadata=metadata)
    elif action == "clear_users":
        await stub.ClearRevocation(
            pb.ClearRevocationRequest(users=pb.UserIds(user_ids=step["user_ids"])), metadata=metadata
        )
    elif action == "clear_app":
        await stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=metadata)
    elif action == "revoke_token":
        await stub.RevokeToken(pb.RevokeTokenRequest(jti=step["jti"]), metadata=metadata)
    elif action == "clear_tokens":
        await stub.ClearRevocation(pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=step["jtis"])), metadata=metadata)
    elif action == "update":
        await apps.update_app(server.store, app, **step["changes"], actor=SYSTEM)
    elif action == "rotate_secret":
        await _rotate_secret(server.store, app, step)
    elif action == "add_key_pair":
        await server.store.add_key_pair(
            app, key_id=step["kid"], private_pem=step["pem"], signs_from=step["signs_from"], actor=SYSTEM
        )
    elif action == "retire_key":
        await apps.retire_key(server.store, app, step["kid"], now=step["at"], actor=SYSTEM)
    else:
        raise ValueError(f"unknown setup step {action!r}")


# The verdicts, as the file holds them.


def expectation(response: pb.VerifyTokenResponse) -> dict[str, Any]:
    """What VerifyToken answered, in the file's terms."""
    return {
        "outcome": pb.VerifyOutcome.Name(response.outcome).removeprefix(OUTCOME_PREFIX),
        "user_id": response.user_id or None,
        "issued_at": wire.micros(response.issued_at, "issued_at") if response.HasField("issued_at") else None,
        "expires_at": wire.micros(response.expires_at, "expires_at") if response.HasField("expires_at") else None,
        "dev_token": response.dev_token,
        "claims": wire.plain_claims(response.claims) if response.HasField("claims") else None,
        "revoked_by": pb.RevocationScope.Name(response.revoked_by).removeprefix(SCOPE_PREFIX)
        if response.revoked_by
        else None,
        "revoked_before": wire.micros(response.revoked_before, "revoked_before")
        if response.HasField("revoked_before")
        else None,
        "valid_from": wire.micros(response.valid_from, "valid_from") if response.HasField("valid_from") else None,
        "client_action": pb.ClientAction.Name(response.client_action).removeprefix(ACTION_PREFIX)
        if response.client_action
        else None,
    }


def local_verdict(result: Verification) -> dict[str, Any]:
    """A LocalVerifier's answer, in the file's terms."""
    return {
        "outcome": result.outcome.name,
        "user_id": result.user_id,
        "issued_at": None if result.issued_at is None else from_datetime(result.issued_at),
        "expires_at": None if result.expires_at is None else from_datetime(result.expires_at),
        "dev_token": result.dev_token,
        "claims": result.claims or None,
        "revoked_by": None if result.revoked_by is None else result.revoked_by.name,
        "revoked_before": None if result.revoked_before is None else from_datetime(result.revoked_before),
        "valid_from": None if result.valid_from is None else from_datetime(result.valid_from),
        "client_action": None if result.client_action is None else result.client_action.name,
    }


def _canonical(value: Any) -> str:
    """JSON text that tells apart what JSON does (true from 1, "1" from 1) and nothing more (1 and 1.0 are one
    number, as in JavaScript)."""

    def plain(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer() and abs(item) < 2**53:
            return int(item)
        if isinstance(item, dict):
            return {key: plain(child) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [plain(child) for child in item]
        return item

    return json.dumps(plain(value), sort_keys=True, default=str)


def differences(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Each field of `expected` that `got` answers otherwise, as `field: expected X, got Y`."""
    return [
        f"{field}: expected {_canonical(value)}, got {_canonical(got.get(field))}"
        for field, value in expected.items()
        if field not in got or _canonical(got[field]) != _canonical(value)
    ]


def mismatch(case: Mapping[str, Any], implementation: str, got: Mapping[str, Any]) -> str | None:
    """None when `got` is the case's expected verdict, else a message naming the case, the implementation, and
    expected against got for each field that differs."""
    diffs = differences(case["expect"], got)
    if not diffs:
        return None
    return f"{case['name']} [{implementation}] at now={case['now']}: " + "; ".join(diffs)


def decode_stream(messages: Sequence[str]) -> list[pb.WatchStateResponse]:
    """A stream of the file: base64 of serialized WatchStateResponse messages."""
    return [pb.WatchStateResponse.FromString(base64.b64decode(message)) for message in messages]


class _CaseClock:
    """A LocalVerifier's clock, set to each case's `now`."""

    def __init__(self) -> None:
        self.now: Micros = 0

    def __call__(self) -> Micros:
        return self.now


def local_verdicts(spec: Mapping[str, Any], stream: str, cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each case's verdict from a fresh LocalVerifier of the app, fed one of its streams (`changes` or
    `snapshot`) with its own message handler, its clock at the case's `now`."""
    clock = _CaseClock()
    verifier = LocalVerifier(
        "127.0.0.1:1",  # never dialled: the messages come from the file
        spec["api_key"],
        "conformance",
        hs256_secret=list(spec["hs256_secrets"]),
        clock=clock,
        metrics=False,
    )
    for message in decode_stream(spec["streams"][stream]):
        verifier._receive(message)
    verdicts = []
    for case in cases:
        clock.now = case["now"]
        verdicts.append(local_verdict(verifier.verify(case["token"])))
    return verdicts
