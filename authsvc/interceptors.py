"""gRPC server interceptors: the one place where errors become gRPC statuses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc.errors import DOMAIN, AuthsvcError

log = logging.getLogger(__name__)

_INTERNAL_MESSAGE = "internal error; it has been logged on the server"


def status_of(error: AuthsvcError) -> grpc.Status:
    """The gRPC status for an authsvc error, with a google.rpc.ErrorInfo naming its reason."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _internal_status() -> grpc.Status:
    return status_of(AuthsvcError(_INTERNAL_MESSAGE, "INTERNAL"))


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns AuthsvcError into its status, and anything unexpected into a bare INTERNAL (logged here)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except AuthsvcError as error:
                await context.abort_with_status(status_of(error))
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                await context.abort_with_status(_internal_status())

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
