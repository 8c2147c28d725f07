"""Hostile requests: undecodable bytes, claims at every limit, swapped credentials, oversize HTTP requests.

Each gets a typed answer (a status with an ErrorInfo reason, or an HTTP status), never a crash, and no secret
reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import math
import random
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from authsvc import http as authsvc_http
from authsvc import jws, keys, tokens
from authsvc.server import RunningServer
from authsvc.v1 import admin_service_pb2, admin_service_pb2_grpc, auth_service_pb2, auth_service_pb2_grpc
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.processes import clean_env, serve
from tests.support import api_key_only, backend, expect_failure, failure, newest_kid

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

METHODS: list[MethodDescriptor] = [
    method
    for module in (auth_service_pb2, admin_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _first_string_field(method: MethodDescriptor) -> int | None:
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return int(field.number)
    return None


def _nested_claims(depth: int) -> bytes:
    """An IssueTokenRequest whose claims nest `depth` objects deep (beyond what the protobuf parser takes)."""
    value = b""
    for _ in range(depth):
        # Struct{fields: {"a": Value{struct_value: <inner>}}}: map entry (key 1, value 2), Value.struct_value is 5.
        struct_value = _string_field(5, value)
        entry = _string_field(1, b"a") + _string_field(2, struct_value)
        value = _string_field(1, entry)
    return _string_field(1, b"alice") + _string_field(4, value)


def _undecodable(method: MethodDescriptor) -> list[tuple[str, bytes]]:
    cases = [
        ("truncated varint", b"\x08\xff\xff"),
        ("length beyond the message", b"\x0a\x7fabc"),
        ("invalid wire type", b"\x0f\x00"),
    ]
    if (number := _first_string_field(method)) is not None:
        cases.append(("string field not UTF-8", _string_field(number, b"al\xff\xfece")))
    if method.input_type.full_name == pb.IssueTokenRequest.DESCRIPTOR.full_name:
        cases.append(("claims nested 40 deep", _nested_claims(40)))
    return cases


UNDECODABLE = [
    pytest.param(method, data, id=f"{method.name}-{label}")
    for method in METHODS
    for label, data in _undecodable(method)
]


@pytest.mark.parametrize(("method", "data"), UNDECODABLE)
async def test_an_undecodable_request_is_invalid_argument_malformed_request(
    channel: grpc.aio.Channel, server: RunningServer, method: MethodDescriptor, data: bytes
) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        path, request_serializer=None, response_deserializer=None
    )
    labels = {
        "grpc_type": "server_stream" if method.server_streaming else "unary",  # WatchState streams its answer
        "grpc_service": method.containing_service.full_name,
        "grpc_method": method.name,
        "grpc_code": "INVALID_ARGUMENT",
    }
    handled = server.metrics.registry.get_sample_value("grpc_server_handled_total", labels) or 0.0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(data, metadata=(("x-api-key", "kunknown"), ("x-request-id", "hostile-1")), timeout=30)
    error = raised.value
    found = failure(error)
    assert (found.code, found.reason, found.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        "authsvc",
    )
    for internal in ("DecodeError", "class", "upb", "Traceback", "google.protobuf"):
        assert internal not in found.message
    # Observed like any call: the request id comes back, and the failure is counted under its code.
    assert ("x-request-id", "hostile-1") in list(error.trailing_metadata() or ())
    # The server counts the call once its handler has returned, which may be a moment after the client has
    # the status: polled, bounded.
    async with asyncio.timeout(10):
        while server.metrics.registry.get_sample_value("grpc_server_handled_total", labels) != handled + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_an_undecodable_message_in_a_request_stream_is_malformed_request(channel: grpc.aio.Channel) -> None:
    # Server reflection (what grpcurl uses) reads a stream of requests: each is decoded inside the handler.
    call: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call(iter([b"\x08\xff\xff"]), timeout=30):
            pass
    found = failure(raised.value)
    assert (found.code, found.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


@pytest.mark.parametrize("algorithm", [keys.EDDSA, keys.ES256])
async def test_an_asymmetric_apps_user_token_as_credential_is_user_token_not_allowed(
    stub: AuthServiceAsyncStub, new_app: NewApp, algorithm: str
) -> None:
    app = await new_app(algorithm=algorithm)
    user_token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    found = await expect_failure(
        stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, user_token))
    )
    assert (found.code, found.reason) == (grpc.StatusCode.PERMISSION_DENIED, "USER_TOKEN_NOT_ALLOWED")
    # Signed with a key the app does not have, under the app's own kid: still not a credential at all.
    stranger = keys.generate(algorithm)
    forged = jwt.encode({"user_id": "alice"}, stranger, algorithm=algorithm, headers={"kid": newest_kid(app)})
    found = await expect_failure(stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, forged)))
    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
    # The backend's own credentials keep working: the API secret, and a server token signed with it.
    await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))
    server_token = jwt.encode({"server": True}, app.api_secret, algorithm="HS256")
    await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, server_token))


def _depth(value: Any) -> int:
    """How deep a JSON value nests: 0 for a scalar, 1 for an object or array of scalars."""
    if isinstance(value, dict):
        return 1 + max((_depth(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(child) for child in value), default=0)
    return 0


def _as_carried(value: Any) -> Any:
    """The value as a token carries it after the trip through protobuf: numbers are doubles, and whole ones
    within 2**53 go back to integers."""
    if isinstance(value, dict):
        return {key: _as_carried(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_as_carried(child) for child in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(text for child in value.values() for text in _strings(child))]
    if isinstance(value, list):
        return [text for child in value for text in _strings(child)]
    return [value] if isinstance(value, str) else []


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict | list):
        return [n for child in (value.values() if isinstance(value, dict) else value) for n in _numbers(child)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


NUMBERS = [0, -0.0, 1, -1, 7, 2**31, -(2**31) - 1, 2**53 - 1, 2**53, 2**53 + 1, 2**63, -(2**64), 10**20, 0.5, -2.25,
           1 / 3, 1e-7, 5e-324, 2.2250738585072014e-308, 1e16, 1.7976931348623157e308, -1.7976931348623157e308,
           123456789.125]  # fmt: skip
ALPHABETS = [
    "abcxyz019",
    "é ñ ü ß",
    "日本語中文한국어",
    "😀🎉🧪𝄞",
    '"\\/\b\f\n\r\t\u001f\u007f',
    "\u2028\u2029\ufeff\ufffd\U0010ffff",
]


def _text(rng: random.Random, length: int) -> str:
    alphabet = rng.choice(ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(length))


def _scalar(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(NUMBERS)
    if kind == 1:
        return rng.uniform(-1e6, 1e6) if rng.random() < 0.5 else rng.randrange(-(10**9), 10**9)
    if kind == 2:
        return _text(rng, rng.randrange(0, 12))
    return rng.choice([True, False, None])


def _nested(rng: random.Random, depth: int) -> Any:
    """A value exactly `depth` levels deep, of objects and arrays mixed."""
    if depth == 0:
        return _scalar(rng)
    siblings = [_scalar(rng) for _ in range(rng.randrange(0, 3))]
    inner = _nested(rng, depth - 1)
    if rng.random() < 0.5:
        return [*siblings, inner]
    return {**{f"s{i}": value for i, value in enumerate(siblings)}, _text(rng, 3) or "k": inner}


def _claims(rng: random.Random, case: int) -> dict[str, Any]:
    shape = case % 5
    if shape == 0:  # nesting around the limit (the claims object is level 1, as the token's payload is)
        return {"deep": _nested(rng, rng.randrange(28, 36) - 1)}
    if shape == 1:  # size around the limit
        claims: dict[str, Any] = {"pad": "", "n": rng.choice(NUMBERS)}
        alphabet = rng.choice(ALPHABETS[:4])
        target = tokens.MAX_CLAIMS_BYTES + rng.randrange(-6, 7)
        while len(json.dumps(_as_carried(claims), separators=(",", ":"), ensure_ascii=False).encode()) < target:
            claims["pad"] += rng.choice(alphabet)
        return claims
    if shape == 2:  # many keys
        return {f"k{i}": _scalar(rng) for i in range(rng.randrange(50, 400))}
    if shape == 3:  # every kind of number, in lists too
        return {"numbers": list(NUMBERS), "one": rng.choice(NUMBERS), "mixed": [_scalar(rng) for _ in range(20)]}
    # unicode everywhere, keys included, now and then a NUL
    claims = {_text(rng, rng.randrange(1, 8)): _nested(rng, rng.randrange(0, 4)) for _ in range(rng.randrange(1, 10))}
    if rng.random() < 0.2:
        claims["nul"] = "a\x00b"
    return {key: value for key, value in claims.items() if key not in tokens.RESERVED_CLAIMS}


async def test_every_token_issue_token_returns_verifies_valid(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    # Issue and verify share their limits: claims within the documented ones are accepted and verify VALID with
    # the same claims; all others are refused with a reason, never minted into a token that verifies MALFORMED.
    apps = [await new_app("prop"), await new_app("prop-ed", algorithm=keys.EDDSA)]
    rng = random.Random(20240611)
    accepted = refused = 0
    for case in range(400):
        app = apps[case % len(apps)]
        claims = _claims(rng, case)
        carried = _as_carried(claims)
        size = len(json.dumps(carried, separators=(",", ":"), ensure_ascii=False).encode())
        within = (
            size <= tokens.MAX_CLAIMS_BYTES
            and _depth(carried) <= jws.MAX_JSON_DEPTH
            and not any("\x00" in text for text in _strings(carried))
        )
        request = pb.IssueTokenRequest(user_id="alice")
        request.claims.update(claims)
        try:
            issued = await stub.IssueToken(request, metadata=backend(app))
        except grpc.aio.AioRpcError as error:
            found = failure(error)
            assert not within, f"case {case}: {found.reason} {found.message} for claims within the limits"
            assert found.code == grpc.StatusCode.INVALID_ARGUMENT, (case, found)
            assert found.reason in {"CLAIMS_TOO_LARGE", "INVALID_CLAIMS", "MALFORMED_REQUEST"}, (case, found)
            refused += 1
            continue
        assert within, f"case {case}: claims beyond the limits (size {size}, depth {_depth(carried)}) were accepted"
        verified = await stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=api_key_only(app))
        assert verified.outcome == pb.VERIFY_OUTCOME_VALID, f"case {case}: {pb.VerifyOutcome.Name(verified.outcome)}"
        answered = json_format.MessageToDict(verified.claims)
        assert {key: answered[key] for key in carried} == carried, f"case {case}"
        accepted += 1
    assert accepted > 150 and refused > 50, (accepted, refused)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
async def test_a_claim_that_json_cannot_carry_is_invalid_claims(
    stub: AuthServiceAsyncStub, new_app: NewApp, number: float
) -> None:
    app = await new_app()
    request = pb.IssueTokenRequest(user_id="alice")
    request.claims.fields["x"].number_value = number
    found = await expect_failure(stub.IssueToken(request, metadata=backend(app)))
    assert (found.code, found.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CLAIMS")


async def test_no_credential_sent_in_any_header_reaches_the_access_log(
    database_url: str, new_app: NewApp, tmp_path: Path
) -> None:
    app = await new_app("swapped-headers")
    operator_token = secrets.token_hex(32)  # `openssl rand -hex 32`: lowercase hex, the shape of an API key
    # Every call's line counts below, successful ones too: no access-log rate limit.
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_OPERATOR_TOKENS=f"ops:{operator_token}",
        AUTHSVC_ACCESS_LOG_RATE="1000000",
    )
    async with serve(env, tmp_path, workers=1) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            user_token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
            credentials = {
                "api-secret": app.api_secret,
                "server-token": jwt.encode({"server": True}, app.api_secret, algorithm="HS256"),
                "user-token": user_token,
                "operator-token": operator_token,
                "unknown-key": "k" + secrets.token_hex(8),
                "real-key": app.api_key,
            }
            for credential in credentials.values():
                swapped = (("x-api-key", credential), ("authorization", f"Bearer {app.api_key}"))
                for call in (
                    stub.VerifyToken(pb.VerifyTokenRequest(token=user_token), metadata=swapped),
                    stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=swapped),
                    stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, credential)),
                    admin.ListApps(admin_pb.ListAppsRequest(), metadata=(("authorization", f"Bearer {credential}"),)),
                    admin.ListApps(admin_pb.ListAppsRequest(), metadata=(("x-api-key", credential),)),
                ):
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await call
            secret_ones = ("api-secret", "server-token", "user-token", "operator-token")
            for name in secret_ones:
                # A credential sent as the request id is not echoed back (nor logged): a fresh id stands for it.
                call = stub.VerifyToken(
                    pb.VerifyTokenRequest(token=user_token),
                    metadata=(*api_key_only(app), ("x-request-id", credentials[name])),
                )
                await call
                echoed = dict(await call.trailing_metadata() or ())["x-request-id"]
                assert echoed != credentials[name] and len(echoed) == 16, name
            await stub.VerifyToken(
                pb.VerifyTokenRequest(token=user_token), metadata=(*api_key_only(app), ("x-request-id", "last"))
            )
        await served.wait_for(lambda records: any(r.get("request_id") == "last" for r in records))

    access = [r for r in served.records if r.get("logger") == "authsvc.access"]
    assert len(access) == 1 + 6 * 5 + 4 + 1
    logged_keys = {record["api_key"] for record in access if record.get("api_key") is not None}
    fingerprints = {
        f"sha256:{hashlib.sha256(c.encode()).hexdigest()[:8]}" for n, c in credentials.items() if n != "real-key"
    }
    assert logged_keys == {app.api_key, *fingerprints}
    output = served.output
    for name, credential in credentials.items():
        if name != "real-key":
            assert credential not in output, f"{name} was logged"
            for part in credential.split("."):
                assert part not in output, f"a piece of {name} was logged"
    assert "Bearer" not in output


def _http_get(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        pytest.param("/metrics", [("X-Fill", "a" * 8000)], 200, id="a-header-line-of-8000-bytes"),
        pytest.param("/metrics", [(f"X-H{i}", "a" * 300) for i in range(99)], 200, id="99-headers-of-300-bytes"),
        pytest.param("/metrics?" + "a" * 1_000_000, [], 414, id="a-1MB-request-line"),
        pytest.param("/metrics?" + "a" * 9000, [], 414, id="a-9000-byte-request-line"),
        pytest.param("/metrics", [("X-Big", "a" * 1_000_000)], 431, id="a-1MB-header"),
        pytest.param("/metrics", [("X-Big", "a" * 9000)], 431, id="a-9000-byte-header"),
        pytest.param("/metrics", [(f"X-H{i}", "a") for i in range(101)], 431, id="101-headers"),
        pytest.param("/metrics", [(f"X-H{i}", "a" * 1000) for i in range(40)], 431, id="40KB-of-headers"),
    ],
)
async def test_the_http_port_answers_an_oversize_request_with_its_status(
    server: RunningServer, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    # http.client sends the whole request before it reads the answer: the server must take it all, not reset.
    answered, body = await asyncio.to_thread(_http_get, server.http_port, path, headers)
    assert answered == status, body[:200]
    if status != 200:
        assert body.endswith(b"too long\n") or body.endswith(b"too large\n")


async def test_the_http_port_closes_connections_beyond_its_cap(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authsvc_http, "_MAX_CONNECTIONS", 3)
    held = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(3)]
    try:
        for _, writer in held:
            writer.write(b"GET /metrics HTTP/1.1\r\n")  # a request that never ends: each holds its place
            await writer.drain()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # closed at once, long before the read timeout
        writer.close()
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.1)
    answered, _ = await asyncio.to_thread(_http_get, server.http_port, "/metrics", [])
    assert answered == 200  # room again once they are gone
