"""The google.rpc.Status of a failed call, its google.rpc.ErrorInfo and RetryInfo, decoded with protobuf alone.

authsvc's error statuses carry a google.rpc.ErrorInfo (the reason), and a rate limit's a google.rpc.RetryInfo (when
to try again), in a google.rpc.Status sent as the `grpc-status-details-bin` trailer. The client decodes it with
these messages, declared here with the field numbers of google/rpc/status.proto and google/rpc/error_details.proto
in a descriptor pool of their own: so
`pip install authsvc` (the client) needs neither grpcio-status nor googleapis-common-protos, which the server
uses to send them, and nothing here clashes with those when both are installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
ERROR_INFO_TYPE: Final = "google.rpc.ErrorInfo"
RETRY_INFO_TYPE: Final = "google.rpc.RetryInfo"


def _messages() -> tuple[Any, Any, Any]:
    """The Status, ErrorInfo and RetryInfo message classes, in a private pool (the default pool may hold the real
    ones)."""
    fd = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="authsvc/client/google_rpc_status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    status = file.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=fd.TYPE_INT32, label=fd.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=fd.TYPE_MESSAGE, label=fd.LABEL_REPEATED, type_name=".google.protobuf.Any"
    )
    info = file.message_type.add(name="ErrorInfo")
    info.field.add(name="reason", number=1, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    info.field.add(name="domain", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    entry = info.nested_type.add(name="MetadataEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    info.field.add(
        name="metadata",
        number=3,
        type=fd.TYPE_MESSAGE,
        label=fd.LABEL_REPEATED,
        type_name=".google.rpc.ErrorInfo.MetadataEntry",
    )
    retry = file.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=fd.TYPE_MESSAGE,
        label=fd.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.ErrorInfo")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


_Status, _ErrorInfo, _RetryInfo = _messages()


@dataclass(frozen=True)
class StatusDetails:
    """What a failed call's rich status said: its message, the first ErrorInfo and the first RetryInfo it carried."""

    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    """Seconds to wait before a retry may succeed (RetryInfo.retry_delay), None when the status gave none."""


def decode(trailers: Any, code: int, message: str) -> StatusDetails | None:
    """The rich status in a failed call's trailing metadata, or None when there is none, it does not parse, or it
    disagrees with the call's own status code or message (as grpcio-status does: then the call is trusted)."""
    raw = next((value for key, value in trailers or () if key == STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return None
    try:
        status = _Status.FromString(raw)
    except Exception:  # protobuf's DecodeError: a trailer that is not a google.rpc.Status
        return None
    if status.code != code or status.message != message:
        return None
    info: Any = None
    retry_after: float | None = None
    for detail in status.details:
        kind = detail.type_url.rpartition("/")[2]
        try:
            if kind == ERROR_INFO_TYPE and info is None:
                info = _ErrorInfo.FromString(detail.value)
            elif kind == RETRY_INFO_TYPE and retry_after is None:
                retry = _RetryInfo.FromString(detail.value)
                delay = retry.retry_delay
                # Without a delay, or with a negative one, it says nothing usable.
                if retry.HasField("retry_delay") and delay.seconds >= 0 and delay.nanos >= 0:
                    retry_after = delay.seconds + delay.nanos / 1e9
        except Exception:  # a malformed detail: left out rather than a crash
            continue
    if info is None:
        return StatusDetails(status.message, retry_after=retry_after)
    return StatusDetails(status.message, info.reason, info.domain, dict(info.metadata), retry_after)
