"""Server reflection (grpc.reflection.v1alpha) that also finds the file of a method's full name.

The stock servicer asks the descriptor pool for the file containing a symbol, and the pool knows services and
messages but not methods (grpc/grpc#34743), so `grpcurl describe authsvc.v1.AuthService.VerifyToken` fails.
grpcio-reflection 1.85 offers only v1alpha; grpcurl asks grpc.reflection.v1 first and falls back to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer as _StockServicer

SERVICE_NAME: str = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
"""The full name of the reflection service."""


class ReflectionServicer(_StockServicer):  # type: ignore[misc]
    """The aio reflection servicer, answering `file_containing_symbol` for `<service>.<method>` too."""

    def __init__(self, service_names: Iterable[str], pool: descriptor_pool.DescriptorPool | None = None) -> None:
        super().__init__(service_names, pool=pool)
        self._descriptors = descriptor_pool.Default() if pool is None else pool

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        # The hook the stock servicer dispatches to (grpcio-reflection is pinned; tests cover the override).
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response"):
            service_name, _, method_name = fully_qualified_name.rpartition(".")
            try:
                service = self._descriptors.FindServiceByName(service_name)
            except KeyError:
                return response
            if method_name in service.methods_by_name:
                return super()._file_containing_symbol(request, service_name)
        return response


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection for `service_names` (the reflection service's own name is added) on `server`."""
    names = (*service_names, SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(names), server)
