"""Sending encoded batches to one target, and what came of it: the OTLP delivery rules in one place.

A sender is synchronous and owns one connection (an httpx.Client with keep-alive, or a gRPC
channel); the exporter runs one thread per target, each with its own sender. `send()` never
raises for anything the network or the backend does: it returns a `SendResult` saying whether the
batch was accepted (possibly in part), should be sent again later, or was refused for good.

Classification (opentelemetry-proto docs/specification.md; docs/export.md):
- HTTP 2xx: accepted; the `ExportTraceServiceResponse` body's `partialSuccess` gives rejected
  spans, never retried. 429, 502, 503, 504, a connection error or a timeout: retry, after
  Retry-After when given. Any other status: rejected, with the body's `google.rpc.Status`
  message (or its text).
- gRPC: `tfgw.export.grpc_send`, imported only for a grpc target.

The exporters' own calls are never traced: nothing here is instrumented, and they do not go
through the gateway.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import httpx
import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tfgw import __version__
from tfgw.export.encode import JSON, EncodedBatch
from tfgw.export.rpc_status import decode_status
from tfgw.retry import Backoff, parse_retry_after
from tfgw.secrets import scrub

if TYPE_CHECKING:
    from tfgw.export.grpc_send import GrpcSender

__all__ = [
    "EXPORT_METHOD",
    "RETRYABLE_HTTP",
    "USER_AGENT",
    "Delivery",
    "HttpSender",
    "SendResult",
    "Sender",
    "SenderTarget",
    "clean_message",
    "deliver",
    "sender_for",
]

USER_AGENT = f"tfgw/{__version__}"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE_HTTP = frozenset((429, 502, 503, 504))
#: how much of an error body or message a result keeps
MAX_MESSAGE = 500
GZIP_LEVEL = 6


class SenderTarget(Protocol):
    """What a sender reads of a target (`tfgw.export.targets.ResolvedTarget` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def protocol(self) -> str: ...  # grpc | http/protobuf | http/json
    @property
    def endpoint(self) -> str: ...  # HTTP: the full URL; grpc: host:port
    @property
    def insecure(self) -> bool: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def compression(self) -> str | None: ...  # gzip | None
    @property
    def timeout(self) -> float: ...
    @property
    def secrets(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class SendResult:
    outcome: Literal["accepted", "retry", "rejected"]
    #: accepted in part: spans the backend refused (partial success); not to be sent again
    rejected_spans: int = 0
    #: the backend's reason, the partial success error_message, or the transport error
    message: str | None = None
    #: seconds the backend asked to wait (Retry-After, gRPC RetryInfo)
    retry_after: float | None = None
    #: "200", "503", "UNAVAILABLE", "connect error", "timeout", ...
    status: str | None = None
    latency_ms: float = 0.0


class Sender(Protocol):
    def send(self, batch: EncodedBatch) -> SendResult: ...
    def close(self) -> None: ...


def sender_for(target: SenderTarget) -> HttpSender | GrpcSender:
    if target.protocol == "grpc":
        from tfgw.export.grpc_send import GrpcSender

        return GrpcSender(target)
    return HttpSender(target)


# -- HTTP ------------------------------------------------------------------------------------------


class HttpSender:
    """POST to the target's URL: OTLP/HTTP, protobuf or JSON as the batch is encoded."""

    def __init__(self, target: SenderTarget, *, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        self._client = httpx.Client(
            headers={"user-agent": USER_AGENT, **target.headers},
            timeout=target.timeout,
            trust_env=False,  # no proxy from the environment: the target is what the config says
            follow_redirects=False,
            transport=transport,
        )

    def send(self, batch: EncodedBatch) -> SendResult:
        if not batch.spans:
            return SendResult("accepted", message="nothing to send")
        headers = {"content-type": batch.content_type}
        body = batch.body
        if self.target.compression == "gzip":
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers["content-encoding"] = "gzip"
        start = time.perf_counter()
        try:
            response = self._client.post(self.target.endpoint, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return self._failed("timeout", exc, start)
        except httpx.ConnectError as exc:
            return self._failed("connect error", exc, start)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # our request is unsendable
            return self._failed("client error", exc, start, "rejected")
        except httpx.TransportError as exc:  # the server closed the connection, a protocol error...
            return self._failed("transport error", exc, start)
        latency = (time.perf_counter() - start) * 1000
        status = str(response.status_code)
        if 200 <= response.status_code < 300:
            rejected, message = _partial_success(response)
            return SendResult("accepted", rejected, self._clean(message), status=status, latency_ms=latency)
        message = self._clean(_error_message(response))
        if response.status_code in RETRYABLE_HTTP:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return SendResult("retry", 0, message, retry_after, status, latency)
        return SendResult("rejected", 0, message, status=status, latency_ms=latency)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(
        self, status: str, exc: Exception, start: float, outcome: Literal["retry", "rejected"] = "retry"
    ) -> SendResult:
        latency = (time.perf_counter() - start) * 1000
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return SendResult(outcome, message=self._clean(text), status=status, latency_ms=latency)

    def _clean(self, message: str | None) -> str | None:
        return clean_message(message, self.target.secrets)


def _partial_success(response: httpx.Response) -> tuple[int, str | None]:
    """(rejected spans, error message) of an `ExportTraceServiceResponse` body, (0, None) when
    there is none or it cannot be read: the batch was accepted either way."""
    body = response.content
    if not body:
        return 0, None
    if _is_json(response):
        try:
            data = orjson.loads(body)
            partial = data.get("partialSuccess") or {}
            return int(partial.get("rejectedSpans") or 0), partial.get("errorMessage") or None
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return 0, None
    try:
        decoded = ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return 0, None
    partial_success = decoded.partial_success
    return partial_success.rejected_spans, partial_success.error_message or None


def _error_message(response: httpx.Response) -> str:
    """The reason in an error body: a `google.rpc.Status` (protobuf or JSON), else the text."""
    body = response.content
    if _is_json(response):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            message = data.get("message")
            if not isinstance(message, str):  # {"error": {"message": ...}} as many proxies answer
                error = data.get("error")
                message = error.get("message") if isinstance(error, dict) else None
            if isinstance(message, str) and message:
                return message
    elif "protobuf" in response.headers.get("content-type", ""):
        status = decode_status(body)
        if status is not None and status.message:
            return status.message
    text = body.decode(errors="replace").strip()
    return text or f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == JSON


def clean_message(message: str | None, secrets: tuple[str, ...]) -> str | None:
    """A message fit for logs and `otel status`: no secret in it, and not too long."""
    if not message:
        return None
    text = scrub(message.encode(errors="replace"), secrets).decode(errors="replace")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


# -- the delivery loop -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """How sending one batch ended: its last result, after how many attempts, and whether the
    caller asked to stop while it waited (then the batch was not delivered)."""

    result: SendResult
    attempts: int
    stopped: bool = False

    @property
    def gave_up(self) -> bool:
        """Still failing with a retryable error when the deadline came (or when stopped)."""
        return self.result.outcome == "retry"


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def deliver(
    sender: Sender,
    batch: EncodedBatch,
    backoff: Backoff,
    *,
    deadline: float | None = None,
    wait: Callable[[float], bool] = _sleep,
    on_retry: Callable[[SendResult], None] | None = None,
) -> Delivery:
    """Send `batch` until the backend accepts or rejects it, waiting `backoff` between retryable
    failures (Retry-After honoured), until `deadline` (`time.monotonic()`; None: for as long as it
    takes). `wait(seconds)` returns True to stop waiting at once (the exporter's stop event);
    `on_retry` sees each retryable failure before the wait."""
    attempts = 0
    while True:
        result = sender.send(batch)
        attempts += 1
        if result.outcome != "retry":
            backoff.reset()
            return Delivery(result, attempts)
        delay = backoff.next_delay(result.retry_after)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return Delivery(result, attempts)
            delay = min(delay, left)
        if on_retry is not None:
            on_retry(result)
        if wait(delay):
            return Delivery(result, attempts, stopped=True)
