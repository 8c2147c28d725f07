"""OpenTelemetry tracing: off unless configured; when on, a span per call (joining the caller's trace) and the
trace id in the call's access-log line. Spans are checked with the SDK's in-memory exporter in process, and
through a real OTLP/gRPC collector (a TraceService on a real port) for `authsvc serve`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authsvc import logs, tracing
from authsvc.config import Settings
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp
from tests.processes import clean_env, serve
from tests.support import api_key_only, backend

if TYPE_CHECKING:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")


def test_tracing_is_off_unless_an_otlp_endpoint_is_configured() -> None:
    assert tracing.configured({}) is None
    assert tracing.provider_from_environment({}) is None
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}) is not None
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}) is None


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
async def traced_server(
    store: Store, state: State, settings: Settings
) -> AsyncIterator[tuple[RunningServer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = await start_server(store, state, settings, tracer_provider=provider)
    try:
        yield running, exporter
    finally:
        await running.stop(None)
        logs.trace_id_source = None
        provider.shutdown()


async def test_a_traced_call_joins_the_callers_trace_and_its_access_line_names_it(
    traced_server: tuple[RunningServer, InMemorySpanExporter], new_app: NewApp
) -> None:
    running, exporter = traced_server
    app = await new_app()
    lines = _Lines()
    access = logging.getLogger("authsvc.access")
    access.addHandler(lines)
    level = access.level
    access.setLevel(logging.DEBUG)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
            await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=(*api_key_only(app), TRACEPARENT))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.VerifyTokens(pb.VerifyTokensRequest(tokens=[]), metadata=(*api_key_only(app), TRACEPARENT))
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        access.removeHandler(lines)
        access.setLevel(level)

    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert names == [
        "/authsvc.v1.AuthService/IssueToken",
        "/authsvc.v1.AuthService/VerifyToken",
        "/authsvc.v1.AuthService/VerifyTokens",
    ], "one span per call; health checks are not traced"
    issue, verify, failed = spans
    assert issue.context is not None and verify.context is not None and failed.context is not None
    assert format(verify.context.trace_id, "032x") == TRACE_ID, "the call joins the caller's trace"
    assert verify.parent is not None and format(verify.parent.span_id, "016x") == PARENT_ID
    assert format(issue.context.trace_id, "032x") != TRACE_ID, "no traceparent: a trace of its own"
    assert failed.attributes is not None and failed.attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT

    by_method = [(line["method"], line.get("trace_id")) for line in lines.lines if "method" in line]
    assert by_method == [
        ("authsvc.v1.AuthService/IssueToken", format(issue.context.trace_id, "032x")),
        ("authsvc.v1.AuthService/VerifyToken", TRACE_ID),
        ("authsvc.v1.AuthService/VerifyTokens", TRACE_ID),
        ("grpc.health.v1.Health/Check", None),
    ]


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector: keeps every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.exported = asyncio.Event()

    async def Export(  # noqa: N802 (the generated method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        self.exported.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_serve_exports_spans_to_the_configured_otlp_collector(
    database_url: str, new_app: NewApp, tmp_path: Path
) -> None:
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = await new_app("traced")
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_SERVICE_NAME="authsvc-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        async with serve(env, tmp_path, workers=1) as served:
            async with grpc.aio.insecure_channel(served.target) as channel:
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=(*backend(app), TRACEPARENT))
            async with asyncio.timeout(30):
                await collector.exported.wait()
            await served.wait_for(lambda records: any(r.get("trace_id") == TRACE_ID for r in records))
    finally:
        await server.stop(None)
    span = collector.spans[0]
    assert span.name == "/authsvc.v1.AuthService/IssueToken"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert served.process.returncode == 0, served.output
