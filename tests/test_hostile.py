"""Hostile requests: undecodable bytes, claims at every limit, swapped credentials, oversize HTTP requests.

Each gets a typed answer (a status with an ErrorInfo reason, or an HTTP status), never a crash, and no secret
reaches the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import jwt
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from authsvc import keys
from authsvc.server import RunningServer
from authsvc.v1 import admin_service_pb2, auth_service_pb2
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.support import backend, expect_failure, failure

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
        "grpc_type": "unary",
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
    assert server.metrics.registry.get_sample_value("grpc_server_handled_total", labels) == handled + 1


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
    stranger = keys.load(algorithm, keys.generate(algorithm)).private_key
    forged = jwt.encode({"user_id": "alice"}, stranger, algorithm=algorithm, headers={"kid": app.key_id})
    found = await expect_failure(stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, forged)))
    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
    # The backend's own credentials keep working: the API secret, and a server token signed with it.
    await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))
    server_token = jwt.encode({"server": True}, app.api_secret, algorithm="HS256")
    await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, server_token))
