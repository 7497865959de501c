"""`google.rpc.Status` and `google.rpc.RetryInfo`: what an OTLP server sends back with an error.

OTLP/HTTP error bodies are a protobuf (or JSON) `google.rpc.Status`; a gRPC server puts the same
message, with a `RetryInfo` among its details when it wants the client to wait, in the trailing
metadata key `grpc-status-details-bin`. The googleapis protos (googleapis-common-protos,
grpcio-status) are not among tfgw's dependencies, so the two messages are declared here, field
for field as in google/rpc/status.proto and google/rpc/error_details.proto, in a descriptor pool
of their own: they never clash with the real ones if those are installed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import DecodeError

__all__ = [
    "DETAILS_KEY",
    "RETRY_INFO_TYPE",
    "RetryInfo",
    "Status",
    "StatusDetails",
    "decode_status",
    "encode_status",
]

DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

_F = descriptor_pb2.FieldDescriptorProto


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2, duration_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    status = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto", package="google.rpc", syntax="proto3"
    )
    status.dependency.append("google/protobuf/any.proto")
    message = status.message_type.add(name="Status")
    message.field.add(name="code", number=1, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    message.field.add(name="message", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    message.field.add(
        name="details",
        number=3,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status)
    details = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/error_details.proto", package="google.rpc", syntax="proto3"
    )
    details.dependency.append("google/protobuf/duration.proto")
    retry = details.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(details)
    return pool


_POOL = _build_pool()
#: google.rpc.Status {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3}
Status: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("google.rpc.Status"))
#: google.rpc.RetryInfo {google.protobuf.Duration retry_delay = 1}
RetryInfo: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("google.rpc.RetryInfo"))


@dataclass(frozen=True, slots=True)
class StatusDetails:
    code: int
    message: str
    retry_after: float | None  # seconds, from a RetryInfo detail


def decode_status(data: bytes) -> StatusDetails | None:
    """A serialized `google.rpc.Status`, or None if `data` is not one."""
    try:
        status = Status.FromString(data)
    except DecodeError:
        return None
    retry_after = None
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] == "google.rpc.RetryInfo":
            try:
                delay = RetryInfo.FromString(detail.value).retry_delay
            except DecodeError:
                continue
            retry_after = max(0.0, delay.seconds + delay.nanos / 1e9)
    return StatusDetails(status.code, status.message, retry_after)


def encode_status(code: int, message: str, retry_after: float | None = None) -> bytes:
    """A serialized `google.rpc.Status`, with a `RetryInfo` detail when `retry_after` is given."""
    status = Status(code=code, message=message)
    if retry_after is not None:
        info = RetryInfo()
        info.retry_delay.seconds = int(retry_after)
        info.retry_delay.nanos = round((retry_after - int(retry_after)) * 1e9)
        detail = status.details.add()
        detail.type_url = RETRY_INFO_TYPE
        detail.value = info.SerializeToString()
    data: bytes = status.SerializeToString()
    return data
