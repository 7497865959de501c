"""Sending encoded batches to one target, and what came of it: the OTLP delivery rules in one place.

A sender is synchronous and owns one connection (a keep-alive `http.client` connection, or a
gRPC channel); the exporter runs one thread per target, each with its own sender. `send()` never
raises for anything the network or the backend does: it returns a `SendResult` saying whether the
batch was accepted (possibly in part), should be sent again later, or was refused for good.

Classification (opentelemetry-proto docs/specification.md; docs/export.md):
- HTTP 2xx: accepted; the `ExportTraceServiceResponse` body's `partialSuccess` gives rejected
  spans, never retried. A 2xx whose body is not an `ExportTraceServiceResponse` (an HTML page
  from a wrong path, a proxy or a web UI) is accepted too, as OTLP says, with a `warning`.
  429, 502, 503, 504, a connection error, a dropped connection or a timeout: retry, after
  Retry-After when given. Any other status (a redirect too: none is followed): rejected, with
  the body's `google.rpc.Status` message (or its text). A URL or a header that cannot be sent:
  rejected, "client error".
- HTTP connections: one keep-alive connection a sender; a request that finds its reused
  connection closed by the server (an idle timeout) is sent again once on a new one, never a
  request that failed on a fresh connection.
- gRPC: `tfgw.export.grpc_send`, imported only for a grpc target.

The exporters' own calls are never traced: nothing here is instrumented, and they do not go
through the gateway.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import re
import select
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import SplitResult, quote, unquote, urlsplit

import orjson

from tfgw import __version__
from tfgw.export.encode import JSON, EncodedBatch
from tfgw.retry import Backoff, parse_retry_after
from tfgw.secrets import scrub
from tfgw.slices import give_way

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
    "gzipped",
    "sender_for",
]

USER_AGENT = f"tfgw/{__version__}"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE_HTTP = frozenset((429, 502, 503, 504))
#: how much of an error body or message a result keeps
MAX_MESSAGE = 500
#: gzip's fastest level: half the CPU of its default (6) for bodies about 15 % larger (a batch of
#: 1,080 gateway spans: 2.1 against 4.3 µs a span, 6.9 % against 6.0 % of the protobuf); the
#: exporter shares the gateway's cores
GZIP_LEVEL = 1
#: a body is compressed this much at a time, the CPU handed over between blocks (`tfgw.slices`):
#: at level 1 a 4 MiB batch is ~7 ms of compressing, ~0.1 ms a block
GZIP_BLOCK = 64 * 1024


def gzipped(body: bytes) -> bytes:
    """`gzip.compress(body, GZIP_LEVEL, mtime=0)`, the same bytes, compressed a block at a time
    with `give_way()` between blocks (zlib's stream makes no block boundaries without a flush)."""
    stream = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip header and trailer
    view, parts = memoryview(body), []
    for start in range(0, len(body), GZIP_BLOCK):
        parts.append(stream.compress(view[start : start + GZIP_BLOCK]))
        give_way()
    parts.append(stream.flush())
    return b"".join(parts)


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
    #: accepted, but the answer was not an OTLP one (`_not_otlp`): the endpoint may be wrong
    warning: str | None = None


class Sender(Protocol):
    def send(self, batch: EncodedBatch) -> SendResult: ...
    def close(self) -> None: ...


def sender_for(target: SenderTarget) -> HttpSender | GrpcSender:
    if target.protocol == "grpc":
        from tfgw.export.grpc_send import GrpcSender

        return GrpcSender(target)
    return HttpSender(target)


# -- HTTP ------------------------------------------------------------------------------------------

#: what a reused keep-alive connection raises when the server had closed it while it was idle
#: (RemoteDisconnected is a ConnectionResetError): then the request is sent again, once, on a new one
_STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)

_Phase = Literal["connect", "write", "read"]


class _ExchangeError(Exception):
    """An exchange failed in `phase`; the cause is the standard library's exception."""

    def __init__(self, phase: _Phase, cause: Exception) -> None:
        super().__init__(phase)
        self.phase: _Phase = phase
        self.cause = cause


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    retry_after: str | None
    body: bytes


class HttpSender:
    """POST to the target's URL: OTLP/HTTP, protobuf or JSON as the batch is encoded.

    One keep-alive `http.client` connection (TLS for https://, verified against the system's CAs
    or SSL_CERT_FILE), opened at the first send and again after the server closed it; no proxy
    from the environment, no redirect followed, the target's timeout for connecting and for each
    read and write. A failure's message names its phase as httpx did (ConnectError, ReadTimeout,
    ...)."""

    def __init__(self, target: SenderTarget) -> None:
        self.target = target
        self._conn: http.client.HTTPConnection | None = None
        self._tls: ssl.SSLContext | None = None
        self._url, self._unsendable = _split_url(target.endpoint)
        self._path = "/" if self._url is None else _target_path(self._url)
        self._headers = _without({"user-agent": USER_AGENT}, *target.headers) | dict(target.headers)
        if self._url is not None and (self._url.username or self._url.password):
            self._headers = _without(self._headers, "authorization") | {"authorization": _basic(self._url)}
        self._unsendable = self._unsendable or _unsendable_header(self._headers)

    def send(self, batch: EncodedBatch) -> SendResult:
        if not batch.spans:
            return SendResult("accepted", message="nothing to send")
        if self._unsendable is not None:
            return self._failed("client error", self._unsendable, "rejected", time.perf_counter())
        headers = {"content-type": batch.content_type}
        body = batch.body
        if self.target.compression == "gzip":
            body = gzipped(body)
            headers["content-encoding"] = "gzip"
        start = time.perf_counter()
        try:
            answer = self._post(body, _without(self._headers, *headers) | headers)
        except _ExchangeError as exc:
            self._drop()
            return self._failed(*_classify(exc), start)
        return self._answered(answer, (time.perf_counter() - start) * 1000)

    def _answered(self, answer: _Answer, latency: float) -> SendResult:
        status = str(answer.status)
        if 200 <= answer.status < 300:
            partial = _partial_success(answer.content_type, answer.body)
            if partial is None:
                warning = self._clean(_not_otlp(status, answer.content_type, answer.body))
                return SendResult("accepted", status=status, latency_ms=latency, warning=warning)
            rejected, message = partial
            return SendResult("accepted", rejected, self._clean(message), status=status, latency_ms=latency)
        message = self._clean(_error_message(answer.status, answer.content_type, answer.body))
        if answer.status in RETRYABLE_HTTP:
            retry_after = parse_retry_after(answer.retry_after)
            return SendResult("retry", 0, message, retry_after, status, latency)
        return SendResult("rejected", 0, message, status=status, latency_ms=latency)

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> HttpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, body: bytes, headers: dict[str, str]) -> _Answer:
        """One POST: on the open connection if the server has not closed it, else on a new one;
        sent again once on a new connection if the reused one turns out to be closed."""
        conn = self._conn
        reused = conn is not None and conn.sock is not None and not _closed_by_peer(conn.sock)
        if not reused:
            conn = self._connect()
        assert conn is not None
        try:
            return self._exchange(conn, body, headers)
        except _ExchangeError as exc:
            if not reused or not isinstance(exc.cause, _STALE_CONNECTION):
                raise
            self._drop()
        return self._exchange(self._connect(), body, headers)

    def _connect(self) -> http.client.HTTPConnection:
        self._drop()
        assert self._url is not None and self._url.hostname is not None
        host, port, timeout = self._url.hostname, self._url.port, self.target.timeout
        try:
            if self._url.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=self._tls
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.connect()
        except (OSError, ValueError) as exc:  # refused, unresolvable, a TLS handshake or certificate
            raise _ExchangeError("connect", exc) from exc
        self._conn = conn
        return conn

    def _exchange(self, conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> _Answer:
        """Send the request and read the whole answer (so the connection can be used again)."""
        phase: _Phase = "write"
        try:
            response = _request(conn, self._path, body, headers)
            phase = "read"
            if response is None:
                response = conn.getresponse()
            data = response.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise _ExchangeError(phase, exc) from exc
        if response.will_close:
            self._drop()
        encoding = (response.getheader("content-encoding") or "").strip().lower()
        return _Answer(
            response.status,
            response.getheader("content-type") or "",
            response.getheader("retry-after"),
            _decoded(data, encoding),
        )

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _failed(
        self, status: str, message: str, outcome: Literal["retry", "rejected"], start: float
    ) -> SendResult:
        latency = (time.perf_counter() - start) * 1000
        return SendResult(outcome, message=self._clean(message), status=status, latency_ms=latency)

    def _clean(self, message: str | None) -> str | None:
        return clean_message(message, self.target.secrets)


#: the names httpx gave these failures, kept so that logs and `otel status` read as before
_TIMEOUT_NAMES = {"connect": "ConnectTimeout", "write": "WriteTimeout", "read": "ReadTimeout"}
_ERROR_NAMES = {"connect": "ConnectError", "write": "WriteError", "read": "ReadError"}


def _classify(exc: _ExchangeError) -> tuple[str, str, Literal["retry", "rejected"]]:
    """(status, message, outcome) of a failed exchange."""
    cause, phase = exc.cause, exc.phase
    if isinstance(cause, TimeoutError):
        status, name = "timeout", _TIMEOUT_NAMES[phase]
    elif phase == "connect" and isinstance(cause, OSError):  # a certificate error is a ValueError too
        status, name = "connect error", "ConnectError"
    elif isinstance(cause, http.client.HTTPException):  # RemoteDisconnected, a bad status line...
        status, name = "transport error", "RemoteProtocolError"
    elif isinstance(cause, OSError) or phase == "read":
        status, name = "transport error", _ERROR_NAMES[phase]
    else:  # a ValueError before anything was sent: a header or a host name that cannot be sent
        status, name = "client error", "LocalProtocolError"
    message = f"{name}: {cause}" if str(cause) else f"{name}: {type(cause).__name__}"
    return status, message, "rejected" if status == "client error" else "retry"


def _request(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> http.client.HTTPResponse | None:
    """Write a POST: None once written, or the answer the server sent before it stopped reading
    it and closed the connection (413 Payload Too Large, say), which is the answer then."""
    try:
        conn.request("POST", path, body, headers)
    except ConnectionError:
        try:
            return conn.getresponse()
        except (OSError, ValueError, http.client.HTTPException):
            pass  # no answer: the write's error is the failure
        raise
    return None


def _split_url(endpoint: str) -> tuple[SplitResult | None, str | None]:
    """(the URL, None), or (None, why it cannot be sent to): only http:// and https:// URLs."""
    url = urlsplit(endpoint)
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        if not scheme:
            return None, "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol."
        return None, f"UnsupportedProtocol: Request URL has an unsupported protocol '{scheme}://'."
    try:
        url.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        return None, f"InvalidURL: {exc}"
    if not url.hostname:
        return None, "InvalidURL: the URL has no host"
    return url._replace(scheme=scheme), None


def _target_path(url: SplitResult) -> str:
    """The request target: the URL's path (percent-encoded where it is not yet) and query."""
    path = quote(url.path or "/", safe="/%:@!$&'()*+,;=-._~")
    return f"{path}?{url.query}" if url.query else path


def _basic(url: SplitResult) -> str:
    """Basic authorization from the URL's user and password, as httpx sent it."""
    userpass = f"{unquote(url.username or '')}:{unquote(url.password or '')}".encode()
    return "Basic " + base64.b64encode(userpass).decode()


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _unsendable_header(headers: Mapping[str, str]) -> str | None:
    """Why a header cannot be sent, naming it but never showing its value (often a secret)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            return f"LocalProtocolError: {name!r} is not a valid header name"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"LocalProtocolError: the value of header {name!r} has characters outside Latin-1"
        if any(c in value for c in "\r\n\0"):
            return f"LocalProtocolError: the value of header {name!r} has a line break or a NUL"
    return None


def _without(headers: Mapping[str, str], *names: str) -> dict[str, str]:
    """`headers` without `names`, compared case-insensitively (the request's own replace them)."""
    drop = {name.lower() for name in names}
    return {name: value for name, value in headers.items() if name.lower() not in drop}


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive connection the server closed (or wrote to, which it must not) is readable."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed on our side
        return True
    return bool(readable)


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without its gzip Content-Encoding (the request asks for none: a server may still),
    as it came if it does not decompress."""
    if encoding not in ("gzip", "x-gzip") or not body:
        return body
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error):
        return body


def _partial_success(content_type: str, body: bytes) -> tuple[int, str | None] | None:
    """(rejected spans, error message) of an `ExportTraceServiceResponse` body ((0, None) for an
    empty one); None when the body is not one: not JSON or protobuf as its content type says, or
    of another content type."""
    if not body:
        return 0, None
    if _is_json(content_type):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        partial = (data.get("partialSuccess") or {}) if isinstance(data, dict) else None
        if not isinstance(partial, dict):
            return None
        try:
            return int(partial.get("rejectedSpans") or 0), partial.get("errorMessage") or None
        except (TypeError, ValueError):
            return None
    if content_type and "protobuf" not in content_type.lower():
        return None
    # protobuf's runtime only for a body to read: a backend that took everything answers an empty one
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    try:
        decoded = ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return None
    partial_success = decoded.partial_success
    return partial_success.rejected_spans, partial_success.error_message or None


def _not_otlp(status: str, content_type: str, body: bytes) -> str:
    """The warning for a 2xx answer whose body is not an `ExportTraceServiceResponse`."""
    kind = content_type.split(";")[0].strip() or "no content-type"
    text = " ".join(body[:MAX_MESSAGE].decode(errors="replace").split())
    return (
        f"{status} with a body that is not an ExportTraceServiceResponse ({kind}, {len(body):,} bytes): "
        f"is the endpoint right? It begins: {text}"
    )


def _error_message(status: int, content_type: str, body: bytes) -> str:
    """The reason in an error body: a `google.rpc.Status` (protobuf or JSON), else the text, else
    the status and its standard reason phrase."""
    if _is_json(content_type):
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
    elif "protobuf" in content_type:
        from tfgw.export.rpc_status import decode_status  # protobuf's runtime: only for an error body

        rpc_status = decode_status(body)
        if rpc_status is not None and rpc_status.message:
            return rpc_status.message
    text = body.decode(errors="replace").strip()
    if text:
        return text
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {status} {phrase}".strip()


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == JSON


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
