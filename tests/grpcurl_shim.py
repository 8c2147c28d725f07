"""A stand-in for the subset of grpcurl the README uses, driven purely by server reflection.

grpcurl is a Go binary that the project's dependencies do not bring, so where none is on PATH the README test
runs the README's commands with this on PATH as `grpcurl` (with a real grpcurl on PATH, it runs that). Like
grpcurl it knows nothing of authsvc: it learns every type through the reflection service, reads the request as
protojson, and prints the reply as protojson the way grpcurl does with reflection: the proto's field names
(`user_id`: the descriptors a server reflects carry no json_name), false and empty values left out.
Supported: `-plaintext` (else TLS, as grpcurl: `-cacert FILE` for the roots, `-cert FILE -key FILE` for a
client certificate), `-H 'name: value'`, `-d JSON`, and the verbs `list`, `describe SYMBOL` (a service, a method
or a message) and `SERVICE/METHOD` (or `SERVICE.METHOD`).
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def _reflect(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    response: reflection_pb2.ServerReflectionResponse = next(iter(stub.ServerReflectionInfo(iter([request]))))
    if response.HasField("error_response"):
        raise LookupError(f"Symbol not found: {response.original_request.file_containing_symbol}")
    return response


def _pool_with(channel: grpc.Channel, symbol: str) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(response: reflection_pb2.ServerReflectionResponse) -> None:
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files.setdefault(proto.name, proto)

    add(_reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)))
    missing = [d for f in list(files.values()) for d in f.dependency if d not in files]
    while missing:
        add(_reflect(channel, reflection_pb2.ServerReflectionRequest(file_by_filename=missing.pop())))
        missing = [d for f in list(files.values()) for d in f.dependency if d not in files]

    added: set[str] = set()

    def add_file(name: str) -> None:
        if name in added:
            return
        for dependency in files[name].dependency:
            add_file(dependency)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add_file(name)
    return pool


def _signature(method: Any) -> str:
    return f"rpc {method.name} ( .{method.input_type.full_name} ) returns ( .{method.output_type.full_name} );"


def _describe(channel: grpc.Channel, symbol: str) -> int:
    # As grpcurl: one file_containing_symbol request for the symbol as given (a method's full name included),
    # then the symbol is looked up, by kind, in the files the server sent.
    try:
        pool = _pool_with(channel, symbol)
    except LookupError as exc:
        print(f"Failed to resolve symbol {symbol!r}: {exc}", file=sys.stderr)
        return 1
    try:
        service = pool.FindServiceByName(symbol)
    except KeyError:
        pass
    else:
        print(f"{symbol} is a service:")
        for method in service.methods:
            print("  " + _signature(method))
        return 0
    try:
        method = pool.FindMethodByName(symbol)
    except KeyError:
        pass
    else:
        print(f"{symbol} is a method:")
        print(_signature(method))
        return 0
    try:
        message = pool.FindMessageTypeByName(symbol)
    except KeyError:
        print(f"Failed to resolve symbol {symbol!r}: not a service, method or message", file=sys.stderr)
        return 1
    print(f"{symbol} is a message:")
    for field in message.fields:
        print(f"  {field.name} = {field.number};")
    return 0


def main(argv: list[str]) -> int:
    headers: list[tuple[str, str]] = []
    data = "{}"
    args = list(argv)
    positional: list[str] = []
    plaintext = False
    files: dict[str, bytes] = {}
    while args:
        arg = args.pop(0)
        if arg == "-plaintext":
            plaintext = True
        elif arg in ("-cacert", "-cert", "-key"):
            with open(args.pop(0), "rb") as file:
                files[arg] = file.read()
        elif arg == "-H":
            name, _, value = args.pop(0).partition(":")
            headers.append((name.strip().lower(), value.strip()))
        elif arg == "-d":
            data = args.pop(0)
        elif arg.startswith("-"):
            print(f"grpcurl shim: unsupported flag {arg}", file=sys.stderr)
            return 2
        else:
            positional.append(arg)
    target, verb, *rest = positional
    if plaintext:
        opened = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(files.get("-cacert"), files.get("-key"), files.get("-cert"))
        opened = grpc.secure_channel(target, credentials)
    with opened as channel:
        if verb == "list":
            response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
            for service in sorted(s.name for s in response.list_services_response.service):
                print(service)
            return 0
        if verb == "describe":
            return _describe(channel, rest[0])
        service_name, _, method_name = verb.replace("/", ".").rpartition(".")
        try:
            pool = _pool_with(channel, service_name)
        except LookupError as exc:
            print(f"Error invoking method {verb!r}: {exc}", file=sys.stderr)
            return 1
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(data, request_class())
        call: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            reply = call(request, metadata=tuple(headers))
        except grpc.RpcError as error:
            code = error.code()
            print(f"ERROR:\n  Code: {code.name}\n  Message: {error.details()}", file=sys.stderr)
            return 64 + code.value[0]
        print(json_format.MessageToJson(reply, indent=2, preserving_proto_field_name=True))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
