"""Sending to a gRPC target: `TraceService/Export` over one channel, the OTLP gRPC delivery rules.

Imported only when a target uses grpc (`tfgw.export.send.sender_for`): grpc costs an exporter
process about 26 MB of memory that an HTTP target does not need.

Classification: OK is accepted (+ partial success). CANCELLED, DEADLINE_EXCEEDED, ABORTED,
OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS: retry (after the server's RetryInfo when given).
RESOURCE_EXHAUSTED: retry only when the server sent RetryInfo. Anything else: rejected.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tfgw.export.encode import MAX_BATCH_BYTES, EncodedBatch
from tfgw.export.rpc_status import DETAILS_KEY, decode_status
from tfgw.export.send import EXPORT_METHOD, USER_AGENT, SenderTarget, SendResult, clean_message

__all__ = ["RETRYABLE_GRPC", "GrpcSender"]

RETRYABLE_GRPC = frozenset(
    (
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)


class GrpcSender:
    """`TraceService/Export` over one gRPC channel; the batch's protobuf is sent as it is."""

    def __init__(self, target: SenderTarget) -> None:
        self.target = target
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_BATCH_BYTES + 1024 * 1024),
            ("grpc.max_receive_message_length", MAX_BATCH_BYTES),
            ("grpc.primary_user_agent", USER_AGENT),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.enable_retries", 0),  # retrying is the exporter's, with backoff and a cursor
            # after an outage the channel reconnects on its own timer (gRPC's default grows to
            # 120 s): keep it in step with `tfgw.retry.Backoff`, so delivery resumes soon after the server
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 30_000),
        ]
        compression = grpc.Compression.Gzip if target.compression == "gzip" else None
        if target.insecure:
            self._channel = grpc.insecure_channel(target.endpoint, options=options, compression=compression)
        else:
            credentials = grpc.ssl_channel_credentials()  # the default root certificates
            self._channel = grpc.secure_channel(
                target.endpoint, credentials, options=options, compression=compression
            )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,  # the body is already serialized
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        # gRPC wants binary values for "-bin" keys, text for the others
        self._metadata = tuple(
            (k.lower(), v.encode() if k.lower().endswith("-bin") else v) for k, v in target.headers.items()
        )

    def send(self, batch: EncodedBatch) -> SendResult:
        if not batch.spans:
            return SendResult("accepted", message="nothing to send")
        start = time.perf_counter()
        try:
            response = self._export(batch.body, timeout=self.target.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            return self._failed(exc, (time.perf_counter() - start) * 1000)
        except (TypeError, ValueError) as exc:  # metadata gRPC refuses before sending anything
            message = self._clean(f"{type(exc).__name__}: {exc}")
            return SendResult("rejected", message=message, status="client error")
        latency = (time.perf_counter() - start) * 1000
        partial = response.partial_success
        message = self._clean(partial.error_message or None)
        return SendResult("accepted", partial.rejected_spans, message, status="OK", latency_ms=latency)

    def _failed(self, exc: grpc.RpcError, latency: float) -> SendResult:
        code: grpc.StatusCode = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = exc.details() if isinstance(exc, grpc.Call) else None
        trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
        retry_after = None
        for key, value in trailing or ():
            if key == DETAILS_KEY and isinstance(value, bytes):
                status = decode_status(value)
                if status is not None:
                    retry_after = status.retry_after
                    details = details or status.message
        message = self._clean(details or code.name)
        if code in RETRYABLE_GRPC or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None):
            return SendResult("retry", 0, message, retry_after, code.name, latency)
        return SendResult("rejected", 0, message, status=code.name, latency_ms=latency)

    def _clean(self, message: str | None) -> str | None:
        return clean_message(message, self.target.secrets)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
