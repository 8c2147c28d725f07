"""The gRPC server interceptor: it observes every call (metrics, access log) and turns errors into statuses."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc.callers import REQUEST_ID_HEADER, CallMetadata, current_call, read_metadata
from authsvc.errors import DOMAIN, AuthsvcError, InvalidArgument, ResourceExhausted, Unavailable
from authsvc.lifecycle import Drain
from authsvc.logs import (
    ApiKeyLookup,
    CredentialCheck,
    current_request_id,
    log_call,
    request_id,
)
from authsvc.metrics import MethodMetrics, Metrics

log = logging.getLogger(__name__)

_INTERNAL_MESSAGE = "internal error; it has been logged on the server"


def status_of(error: AuthsvcError) -> grpc.Status:
    """The gRPC status for an authsvc error, with a google.rpc.ErrorInfo naming its reason."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    retry_after = error.retry_after if isinstance(error, ResourceExhausted) else None
    if retry_after is not None:  # a rate limit: google.rpc.RetryInfo says when a retry may succeed
        retry = any_pb2.Any()
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(max(1, round(retry_after * 1e9)))
        retry.Pack(delay)
        details.append(retry)
    status = status_pb2.Status(code=grpc.StatusCode[error.status].value[0], message=error.message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _internal_status() -> grpc.Status:
    return status_of(AuthsvcError(_INTERNAL_MESSAGE, "INTERNAL"))


_SHUTTING_DOWN = "this server is shutting down; retry (another replica will answer)"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    # abort_with_status would replace the trailing metadata set before (the request id); keep it.
    kept = tuple(context.trailing_metadata() or ())
    await context.abort(status.code, status.details, kept + tuple(status.trailing_metadata))


_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED


class _Undecodable:
    """Stands for a request whose bytes did not decode: grpc would answer UNKNOWN, naming the parser's error."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _malformed_request() -> InvalidArgument:
    return InvalidArgument(
        "the request is not a valid protobuf message of this method's request type (corrupt bytes, a string "
        "that is not UTF-8, or messages nested too deeply)",
        "MALFORMED_REQUEST",
    )


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, stream: bool, metrics: MethodMetrics
) -> Callable[[bytes], Any] | None:
    """`deserializer`, turning a failure into something the observed handler answers as MALFORMED_REQUEST.

    grpc decodes a unary request before any handler runs, so there it returns a marker the wrapper checks; a
    streamed request decodes inside the handler's iteration, so there it raises the error itself.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        if stream:
            metrics.received += 1  # grpc_server_msg_received_total (a unary request counts as its call started)
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever a parser raises for hostile bytes
            if stream:
                raise _malformed_request() from None
            return _UNDECODABLE

    return deserialize


def _counting(serializer: Callable[[Any], bytes] | None, metrics: MethodMetrics) -> Callable[[Any], bytes] | None:
    """`serializer` of a response stream, counting each message sent (grpc_server_msg_sent_total)."""
    if serializer is None:
        return None

    def serialize(message: Any) -> bytes:
        metrics.sent += 1
        return serializer(message)

    return serialize


class _Method:
    """What the observer keeps per method: its metric children, log level, handler shape and deserializer."""

    __slots__ = ("metrics", "name", "level", "generator", "deserializer", "serializer", "known_api_key", "drain")

    def __init__(
        self,
        metrics: MethodMetrics,
        name: str,
        generator: bool,
        deserializer: Callable[[bytes], Any] | None,
        serializer: Callable[[Any], bytes] | None,
        known_api_key: ApiKeyLookup | None,
        drain: Drain | None,
    ) -> None:
        self.metrics = metrics
        self.name = name
        # Health probes (every few seconds per pod) and reflection would drown the call log at INFO.
        self.level = logging.DEBUG if name.startswith("grpc.") else logging.INFO
        self.generator = generator
        self.deserializer = deserializer
        self.serializer = serializer
        self.known_api_key = known_api_key
        self.drain = drain
        """The server's drain for a call that answers once (counted in flight, refused when stopping); None
        for a streaming answer, which lasts as long as its client wants."""


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call (authsvc.metrics), writes its one access-log line (authsvc.logs), and
    gives it a request id, sent back as `x-request-id` trailing metadata.

    It is also the one place where errors become statuses: an AuthsvcError becomes its status with a
    google.rpc.ErrorInfo, anything unexpected a bare INTERNAL (logged here, never sent). One wrapper, not two:
    each interceptor layer costs tens of microseconds a call on grpc.aio.

    `known_api_key` tells whether an `x-api-key` names an existing app: only such a key is logged as sent,
    anything else (a secret or token sent in its place) as a fingerprint; without it, every key is fingerprinted.
    `is_credential` tells a credential sent as `x-request-id`: it is replaced by a fresh id, never echoed or logged.
    """

    def __init__(
        self,
        metrics: Metrics,
        known_api_key: ApiKeyLookup | None = None,
        drain: Drain | None = None,
        is_credential: CredentialCheck | None = None,
    ) -> None:
        self._metrics = metrics
        self._known_api_key = known_api_key
        self._is_credential = is_credential
        self._drain = Drain() if drain is None else drain
        self._methods: dict[str, _Method] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = self._methods.get(handler_call_details.method) or self._new_method(handler_call_details, handler)
        call = read_metadata(handler_call_details.invocation_metadata)
        rid = request_id(call.request_id, call.api_key, self._is_credential)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _observed(handler.unary_unary, method, rid, call),
                request_deserializer=method.deserializer,
                response_serializer=method.serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _observed(handler.stream_unary, method, rid, call),
                request_deserializer=method.deserializer,
                response_serializer=method.serializer,
            )
        inner: Any = handler.unary_stream or handler.stream_stream
        wrapped = (_observed_generator if method.generator else _observed)(inner, method, rid, call)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                wrapped,
                request_deserializer=method.deserializer,
                response_serializer=method.serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            wrapped,
            request_deserializer=method.deserializer,
            response_serializer=method.serializer,
        )

    def _new_method(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler[Any, Any]) -> _Method:
        behavior = handler.unary_stream or handler.stream_stream
        metrics = self._metrics.method(details.method, handler)
        method = _Method(
            metrics,
            details.method.lstrip("/"),
            generator=behavior is not None and inspect.isasyncgenfunction(behavior),
            deserializer=_tolerant(handler.request_deserializer, handler.request_streaming, metrics),
            serializer=(
                _counting(handler.response_serializer, metrics)
                if handler.response_streaming
                else handler.response_serializer
            ),
            known_api_key=self._known_api_key,
            drain=self._drain if behavior is None else None,
        )
        self._methods[details.method] = method
        return method


def _finish(
    method: _Method,
    code: grpc.StatusCode,
    started: float,
    api_key: str | None,
    reason: str | None,
    context: grpc.aio.ServicerContext[Any, Any],
) -> None:
    seconds = perf_counter() - started
    metrics = method.metrics
    metrics.handled(code).inc()
    metrics.handling.observe(seconds)
    log_call(method.level, method.name, code.name, seconds, api_key, method.known_api_key, reason, context.peer)


def _observed(
    inner: Callable[[Any, Any], Awaitable[Any]], method: _Method, rid: str, call: CallMetadata
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """Wraps a behavior that returns its answer (unary and client-streaming, or writing with context.write)."""

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        token = current_request_id.set(rid)
        call_token = current_call.set(call)
        started = perf_counter()
        code = _UNKNOWN
        reason: str | None = None
        method.metrics.started.inc()
        drain = method.drain
        if drain is not None:
            drain.in_flight += 1
            drain.last_started = started
        try:
            # Trailing, not initial: it rides with the status; initial metadata would cost a write of its own.
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
            try:
                if drain is not None and drain.refusing:
                    raise Unavailable(_SHUTTING_DOWN, "SHUTTING_DOWN")
                if request is _UNDECODABLE:
                    raise _malformed_request()
                response = await inner(request, context)
            except AuthsvcError as error:
                code = grpc.StatusCode[error.status]
                reason = error.reason
                await _abort(context, status_of(error))
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                reason = "INTERNAL"
                log.exception("unexpected error in %s", method.name)
                await _abort(context, _internal_status())
            code = context.code() or _OK
            return response
        except grpc.aio.AbortError:
            code = context.code() or code
            raise
        except asyncio.CancelledError:
            code = _CANCELLED
            raise
        finally:
            if drain is not None:
                drain.in_flight -= 1
            _finish(method, code, started, call.api_key, reason, context)
            current_call.reset(call_token)
            current_request_id.reset(token)

    return observed


def _observed_generator(
    inner: Callable[[Any, Any], AsyncIterator[Any]], method: _Method, rid: str, call: CallMetadata
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    """Wraps a behavior that yields its answers (server- and bidi-streaming written as async generators)."""

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        # No reset: a generator may be closed from another context, and each call's task has a context of its own.
        current_request_id.set(rid)
        current_call.set(call)
        started = perf_counter()
        code = _UNKNOWN
        reason: str | None = None
        method.metrics.started.inc()
        try:
            # Trailing, not initial: it rides with the status; initial metadata would cost a write of its own.
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
            try:
                if request is _UNDECODABLE:
                    raise _malformed_request()
                async for response in inner(request, context):
                    yield response
            except AuthsvcError as error:
                code = grpc.StatusCode[error.status]
                reason = error.reason
                await _abort(context, status_of(error))
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                reason = "INTERNAL"
                log.exception("unexpected error in %s", method.name)
                await _abort(context, _internal_status())
            code = context.code() or _OK
        except grpc.aio.AbortError:
            code = context.code() or _UNKNOWN
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = _CANCELLED
            raise
        finally:
            _finish(method, code, started, call.api_key, reason, context)

    return observed
