"""Fake OTLP receivers: real servers on loopback that record every export request.

    with OtlpHttpReceiver() as rx:          # POST rx.url (…/v1/traces): protobuf or JSON, gzip or not
        ...
        rx.wait_for(5)                      # the 5 spans accepted so far, or AssertionError
    with OtlpGrpcReceiver() as rx:          # TraceService/Export on rx.endpoint (127.0.0.1:port)
        ...
    rx.metrics()                            # both also take OTLP metrics (POST /v1/metrics,
                                            # MetricsService/Export): the accepted requests, decoded

Each serves from a background thread and records every request in `.requests` (a `Received`:
lowercased headers or gRPC metadata, content type and encoding, the body as received, the
decoded `ExportTraceServiceRequest` as an OTLP/JSON-like dict with hex ids, and what was
answered). `.spans` holds the spans of the requests that were answered with success, flattened,
in the same OTLP/JSON shape, so `otlp.spans_of()`-style code and whole-dict asserts apply.

Behaviour is programmable from the test thread, in the order the calls were made:
`fail_next(...)` (an error status, `times` requests in a row, with Retry-After or RetryInfo),
`partial_success(rejected, message)`, `delay(seconds)`, `down()` / `up()` (stop listening on the
port, refusing connections, and listen again on the same one), `reset()`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import grpc
import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tfgw.export.rpc_status import DETAILS_KEY, encode_status
from tfgw.tracing import otlp

__all__ = [
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "Received",
    "canonical",
    "decode_request",
    "encode_request",
]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
METRICS_PATHS = ("/v1/metrics", "MetricsService/Export")
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


# -- OTLP/JSON ⇄ protobuf, the slow and obviously right way --------------------------------------


def decode_request(message: ExportTraceServiceRequest) -> dict[str, Any]:
    """A request as OTLP/JSON: json_format's proto3 JSON with the ids turned from base64 to hex."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _convert_ids(data, lambda v: base64.b64decode(v).hex())
    return data


def encode_request(data: dict[str, Any]) -> ExportTraceServiceRequest:
    """An OTLP/JSON request (hex ids) as protobuf; raises json_format.ParseError if it is not one."""
    copy = orjson.loads(orjson.dumps(data))
    _convert_ids(copy, lambda v: base64.b64encode(bytes.fromhex(v)).decode())
    message = ExportTraceServiceRequest()
    json_format.ParseDict(copy, message)
    return message


def canonical(value: Any) -> Any:
    """OTLP/JSON `value` as it comes back from a trip through protobuf (`decode_request`): no
    empty lists, ids in lower case, int64 as decimal strings."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item == []:
                continue
            if key in ID_FIELDS:
                item = item.lower()
            elif key == "intValue":
                item = str(item)
            out[key] = canonical(item)
        return out
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def _convert_ids(data: dict[str, Any], convert: Any) -> None:
    for rs in data.get("resourceSpans") or ():
        for ss in rs.get("scopeSpans") or ():
            for span in ss.get("spans") or ():
                for item in (span, *(span.get("links") or ())):
                    for key in ID_FIELDS:
                        if item.get(key):
                            item[key] = convert(item[key])


# -- what is recorded and programmed ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One export request as the receiver saw it."""

    protocol: str  # http/protobuf | http/json | grpc
    path: str  # the HTTP path, or the gRPC method
    headers: dict[str, str]  # lowercased names; for gRPC the invocation metadata
    content_type: str | None
    content_encoding: str | None  # HTTP Content-Encoding (gRPC's own compression is not visible)
    body: bytes  # as received (compressed if it was sent so; for gRPC, the decompressed message)
    request: dict[str, Any] | None  # decoded, OTLP/JSON-like; None if it could not be decoded
    status: str  # what was answered: "200", "503", "OK", "UNAVAILABLE", ...

    @property
    def accepted(self) -> bool:
        return self.status in ("200", "OK")

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for rs in (self.request or {}).get("resourceSpans") or ()
            for ss in rs.get("scopeSpans") or ()
            for span in ss.get("spans") or ()
        ]

    @property
    def resources(self) -> list[dict[str, Any]]:
        """The decoded attributes of each `ResourceSpans`' resource."""
        return [
            otlp.decode_attributes((rs.get("resource") or {}).get("attributes") or ())
            for rs in (self.request or {}).get("resourceSpans") or ()
        ]


@dataclass
class _Failure:
    status: Any  # an HTTP status (int) or a grpc.StatusCode
    message: str | None
    body: bytes | dict[str, Any] | None
    retry_after: float | str | None
    remaining: int


@dataclass
class _Behaviour:
    failures: list[_Failure] = field(default_factory=list)
    partial: list[tuple[int, str]] = field(default_factory=list)
    delay: float = 0.0


class _Recorder:
    """What both receivers share: the records, the programmed behaviour, waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._behaviour = _Behaviour()
        self._port = 0

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def spans(self) -> list[dict[str, Any]]:
        """Every span of every request answered with success, in arrival order."""
        return [span for request in self.requests if request.accepted for span in request.spans]

    def metrics(self) -> list[dict[str, Any]]:
        """Every accepted OTLP metrics request, decoded (`MessageToDict`), in arrival order."""
        return [r.request or {} for r in self.requests if r.accepted and r.path.endswith(METRICS_PATHS)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The accepted spans once there are at least `count`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(spans)} spans received in {timeout} s, expected {count}")
            time.sleep(0.005)

    def partial_success(self, rejected: int, message: str = "", times: int = 1) -> None:
        """Answer the next `times` successful requests with a partial success."""
        with self._lock:
            self._behaviour.partial += [(rejected, message)] * times

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before answering anything (0 to stop)."""
        with self._lock:
            self._behaviour.delay = seconds

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._behaviour = _Behaviour()

    def _program(self, failure: _Failure) -> None:
        with self._lock:
            self._behaviour.failures.append(failure)

    def _next(self) -> tuple[float, _Failure | None, tuple[int, str] | None]:
        """The delay, and the failure or partial success the next answer carries."""
        with self._lock:
            behaviour = self._behaviour
            failure = behaviour.failures[0] if behaviour.failures else None
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    behaviour.failures.pop(0)
                return behaviour.delay, failure, None
            partial = behaviour.partial.pop(0) if behaviour.partial else None
            return behaviour.delay, None, partial

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)


# -- OTLP/HTTP -----------------------------------------------------------------------------------


class OtlpHttpReceiver(_Recorder):
    """POST /v1/traces, protobuf or JSON, plain or gzip, as the OTLP/HTTP specification says."""

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The full OTLP/HTTP traces URL."""
        return f"{self.base_url}/v1/traces"

    endpoint = url

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("OtlpHttpReceiver is already running")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="otlp-http", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or self._error is not None:
            raise RuntimeError("OtlpHttpReceiver did not start") from self._error

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | str | None = None,
        body: bytes | dict[str, Any] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` requests with `status`. `body` None gives a `google.rpc.Status`
        (protobuf or JSON, as the request) with `message`; a dict is sent as JSON, bytes as
        text/plain. `retry_after` (seconds, or an HTTP-date string) becomes Retry-After."""
        self._program(_Failure(status, message, body, retry_after, times))

    def down(self) -> None:
        """Close the listening socket and every open connection: connections are refused."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen(self._port))

    def _call(self, coroutine: Any) -> None:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("OtlpHttpReceiver is not running")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:
            self._error = exc
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self._listen(0)
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._close()

    async def _listen(self, port: int) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._export)
        app.router.add_post("/v1/metrics", self._export_metrics)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _export(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = request.content_type
        encoding = headers.get("content-encoding")
        is_json = content_type == JSON
        decoded: dict[str, Any] | None = None
        problem = None
        try:
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            if is_json:
                decoded = decode_request(encode_request(orjson.loads(body)))
            elif content_type == PROTOBUF:
                decoded = decode_request(ExportTraceServiceRequest.FromString(body))
            else:
                problem = (415, f"unsupported content type {content_type!r}")
        except (OSError, EOFError, ValueError, DecodeError, json_format.ParseError) as exc:
            problem = (400, f"cannot decode the request: {exc}")

        delay, failure, partial = self._next()
        if delay:
            await asyncio.sleep(delay)
        if problem is not None:
            failure = _Failure(problem[0], problem[1], None, None, 1)
        if failure is not None:
            response = _http_failure(failure, is_json)
        else:
            answer = ExportTraceServiceResponse()
            if partial is not None:
                answer.partial_success.rejected_spans = partial[0]
                answer.partial_success.error_message = partial[1]
            if is_json:
                data = json_format.MessageToDict(answer)  # int64 rejectedSpans as a string
                response = web.Response(body=orjson.dumps(data), content_type=JSON)
            else:
                response = web.Response(body=answer.SerializeToString(), content_type=PROTOBUF)
        self._record(
            Received(
                protocol="http/json" if is_json else "http/protobuf",
                path=request.path,
                headers=headers,
                content_type=content_type,
                content_encoding=encoding,
                body=raw,
                request=decoded,
                status=str(response.status),
            )
        )
        return response

    async def _export_metrics(self, request: web.Request) -> web.StreamResponse:
        """OTLP/HTTP metrics, protobuf, plain or gzip: decoded and answered with success."""
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        encoding = headers.get("content-encoding")
        body = gzip.decompress(raw) if encoding == "gzip" else raw
        decoded = json_format.MessageToDict(ExportMetricsServiceRequest.FromString(body))
        self._record(
            Received(
                "http/protobuf", request.path, headers, request.content_type, encoding, raw, decoded, "200"
            )
        )
        answer = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type=PROTOBUF)


def _http_failure(failure: _Failure, is_json: bool) -> web.Response:
    status = int(failure.status)
    message = failure.message or f"fake receiver error {status}"
    if isinstance(failure.body, bytes):
        response = web.Response(status=status, body=failure.body, content_type="text/plain")
    elif isinstance(failure.body, dict):
        response = web.Response(status=status, body=orjson.dumps(failure.body), content_type=JSON)
    elif is_json:
        code = _rpc_code(status)
        response = web.Response(
            status=status, body=orjson.dumps({"code": code, "message": message}), content_type=JSON
        )
    else:
        response = web.Response(
            status=status, body=encode_status(_rpc_code(status), message), content_type=PROTOBUF
        )
    if failure.retry_after is not None:
        response.headers["Retry-After"] = str(failure.retry_after)
    return response


def _rpc_code(http_status: int) -> int:
    """The google.rpc.Code an HTTP status maps to (the usual gRPC-HTTP mapping)."""
    codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 413: 11, 429: 8, 501: 12, 502: 14, 503: 14, 504: 4}
    return codes.get(http_status, 13 if http_status >= 500 else 2)


# -- OTLP/gRPC -----------------------------------------------------------------------------------


class OtlpGrpcReceiver(_Recorder):
    """TraceService/Export on an insecure gRPC server. `gzip=False` makes the server refuse
    gzip-compressed messages (UNIMPLEMENTED): how a test sees that a client compressed."""

    def __init__(self, *, gzip: bool = True, max_receive_bytes: int | None = None) -> None:
        super().__init__()
        self._gzip = gzip
        self._max_receive = max_receive_bytes
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """host:port, as a gRPC target is written."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("OtlpGrpcReceiver is already running")
        self._listen(0)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(timeout=10)

    def down(self) -> None:
        """Stop the server: connections to the port are refused."""
        self.stop()

    def up(self) -> None:
        """Serve again, on the same port."""
        if self._server is None:
            self._listen(self.port)

    def fail_next(
        self,
        code: grpc.StatusCode,
        message: str = "",
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `times` requests with `code` and `message`; with `retry_after`, a
        `google.rpc.Status` holding a `RetryInfo` goes in the trailing metadata."""
        self._program(_Failure(code, message, None, retry_after, times))

    def _listen(self, port: int) -> None:
        options: list[tuple[str, Any]] = []
        if not self._gzip:
            options.append(("grpc.compression_enabled_algorithms_bitset", 1))  # identity only
        if self._max_receive is not None:
            options.append(("grpc.max_receive_message_length", self._max_receive))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        metrics = grpc.unary_unary_rpc_method_handler(self._export_metrics)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),
                grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": metrics}),
            )
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if not bound:
            raise RuntimeError(f"OtlpGrpcReceiver cannot listen on 127.0.0.1:{port}")
        server.start()
        self._server, self._port = server, bound

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {k.lower(): v for k, v in context.invocation_metadata()}
        decoded = None
        failure: _Failure | None = None
        try:
            decoded = decode_request(ExportTraceServiceRequest.FromString(body))
        except DecodeError as exc:
            failure = _Failure(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode the request: {exc}", None, None, 1
            )
        delay, programmed, partial = self._next()
        failure = failure or programmed
        if delay:
            time.sleep(delay)
        answer = ExportTraceServiceResponse()
        if failure is not None:
            code: grpc.StatusCode = failure.status
            if failure.retry_after is not None:
                details = encode_status(code.value[0], failure.message or "", float(failure.retry_after))
                context.set_trailing_metadata(((DETAILS_KEY, details),))
            context.set_code(code)
            context.set_details(failure.message or "")
            status = code.name
        else:
            if partial is not None:
                answer.partial_success.rejected_spans = partial[0]
                answer.partial_success.error_message = partial[1]
            status = "OK"
        self._record(
            Received(
                protocol="grpc",
                path=f"/{SERVICE}/Export",
                headers={k: v for k, v in metadata.items() if isinstance(v, str)},
                content_type="application/grpc",
                content_encoding=None,
                body=body,
                request=decoded,
                status=status,
            )
        )
        data: bytes = answer.SerializeToString()
        return data

    def _export_metrics(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        decoded = json_format.MessageToDict(ExportMetricsServiceRequest.FromString(body))
        path = f"/{METRICS_SERVICE}/Export"
        self._record(Received("grpc", path, metadata, "application/grpc", None, body, decoded, "OK"))
        data: bytes = ExportMetricsServiceResponse().SerializeToString()
        return data
