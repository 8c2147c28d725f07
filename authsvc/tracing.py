"""OpenTelemetry tracing of gRPC calls: off unless configured, the packages an optional extra (`authsvc[otel]`).

It is configured the OpenTelemetry way, by environment: tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`). Spans then go to that
collector over OTLP/gRPC (the exporter reads the other `OTEL_EXPORTER_OTLP_*` variables: headers, TLS,
timeout), named by `OTEL_SERVICE_NAME` (default `authsvc`) and sampled by `OTEL_TRACES_SAMPLER` (default:
follow the caller's sampling decision, else sample). A call joins the caller's trace when it carries a W3C
`traceparent` header; each call's access-log line then carries its `trace_id`.

Health checks and reflection are not traced (probes every few seconds would drown the traces). Each traced call
costs an interceptor layer (tens of microseconds on grpc.aio), which is why tracing is off by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import grpc

from authsvc import logs
from authsvc.errors import ConfigError

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configured(environ: Mapping[str, str] = os.environ) -> str | None:
    """The variable that turns tracing on, or None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return next((name for name in _ENDPOINTS if environ.get(name, "").strip()), None)


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Raises ConfigError (one line) when tracing is configured but the `otel` extra is not installed."""
    variable = configured(environ)
    if variable is None:
        return
    try:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
        import opentelemetry.instrumentation.grpc  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{variable} is set, but the OpenTelemetry packages are not installed: pip install 'authsvc[otel]'"
        ) from None


def provider_from_environment(environ: Mapping[str, str] = os.environ) -> Any | None:
    """A TracerProvider exporting over OTLP as the environment says, or None when tracing is off.

    Raises ConfigError (one line) when tracing is configured but the `otel` extra is not installed.
    """
    if configured(environ) is None:
        return None
    check(environ)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "authsvc")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def server_interceptor(provider: Any) -> grpc.aio.ServerInterceptor:
    """The interceptor that traces each call with `provider` (outermost, so the span is current in the handler and
    the access log), and makes the access log name each call's trace id."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    def trace_id() -> str | None:
        context = trace.get_current_span().get_span_context()
        return trace.format_trace_id(context.trace_id) if context.is_valid else None

    logs.trace_id_source = trace_id
    untraced = filters.any_of(filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection."))
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(untraced)
    )
    return interceptor
