"""Server reflection over a real channel: services, messages and method full names resolve, as grpcurl asks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authsvc.server import RunningServer

SHIM = Path(__file__).resolve().parent / "grpcurl_shim.py"


async def reflect(channel: grpc.aio.Channel, **request: str) -> reflection_pb2.ServerReflectionResponse:
    """One request on a ServerReflectionInfo stream, as grpcurl sends them."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = [r async for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))]
    assert len(responses) == 1
    return responses[0]


def files(response: reflection_pb2.ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    assert not response.HasField("error_response"), response.error_response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize(
    ("symbol", "file_name", "service", "method"),
    [
        ("authsvc.v1.AuthService.VerifyToken", "authsvc/v1/auth_service.proto", "AuthService", "VerifyToken"),
        ("authsvc.v1.AuthService.IssueToken", "authsvc/v1/auth_service.proto", "AuthService", "IssueToken"),
        ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto", "Health", "Check"),
    ],
)
async def test_a_method_full_name_resolves_to_the_file_of_its_service(
    channel: grpc.aio.Channel, symbol: str, file_name: str, service: str, method: str
) -> None:
    found = files(await reflect(channel, file_containing_symbol=symbol))
    # The file itself comes first, then what it imports.
    assert found[0].name == file_name
    services = {s.name: s for s in found[0].service}
    assert method in [m.name for m in services[service].method]


@pytest.mark.parametrize(
    "symbol", ["authsvc.v1.AuthService", "authsvc.v1.VerifyTokenRequest", "authsvc.v1.VerifyTokenRequest.token"]
)
async def test_services_messages_and_fields_still_resolve(channel: grpc.aio.Channel, symbol: str) -> None:
    assert files(await reflect(channel, file_containing_symbol=symbol))[0].name == "authsvc/v1/auth_service.proto"


@pytest.mark.parametrize(
    "symbol", ["authsvc.v1.AuthService.NoSuchMethod", "authsvc.v1.NoSuchService.VerifyToken", "nothing", ""]
)
async def test_an_unknown_symbol_is_not_found(channel: grpc.aio.Channel, symbol: str) -> None:
    response = await reflect(channel, file_containing_symbol=symbol)
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert response.original_request.file_containing_symbol == symbol


async def test_list_names_every_service(channel: grpc.aio.Channel) -> None:
    response = await reflect(channel, list_services="")
    assert sorted(s.name for s in response.list_services_response.service) == [
        "authsvc.v1.AdminService",
        "authsvc.v1.AuthService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]


async def grpcurl(server: RunningServer, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SHIM), "-plaintext", f"localhost:{server.port}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_grpcurl_describes_a_method_by_its_full_name(server: RunningServer) -> None:
    code, out, err = await grpcurl(server, "describe", "authsvc.v1.AuthService.VerifyToken")
    assert code == 0, err
    assert out.splitlines() == [
        "authsvc.v1.AuthService.VerifyToken is a method:",
        "rpc VerifyToken ( .authsvc.v1.VerifyTokenRequest ) returns ( .authsvc.v1.VerifyTokenResponse );",
    ]


async def test_grpcurl_reports_an_unknown_method(server: RunningServer) -> None:
    code, out, err = await grpcurl(server, "describe", "authsvc.v1.AuthService.NoSuchMethod")
    assert code == 1 and out == ""
    assert "Symbol not found: authsvc.v1.AuthService.NoSuchMethod" in err
