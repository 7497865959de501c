"""Senders against real OTLP receivers on loopback: what goes on the wire, and how every answer
is classified (accepted, retry, rejected)."""

from __future__ import annotations

import email.utils
import gzip
import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import orjson
import pytest

from tests.export.target_stub import ARIZE_HEADERS, KEY, MW_KEY, TargetStub
from tests.fakes.otlp import OtlpGrpcReceiver, OtlpHttpReceiver, canonical
from tests.samples import Request, trace_line
from tfgw.export import send as send_module
from tfgw.export.encode import EncodedBatch, batches, prepare
from tfgw.export.grpc_send import GrpcSender
from tfgw.export.send import HttpSender, SendResult, sender_for
from tfgw.tracing import otlp


@pytest.fixture(scope="module")
def http_rx() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def grpc_rx() -> Iterator[OtlpGrpcReceiver]:
    with OtlpGrpcReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    for name in ("http_rx", "grpc_rx"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


LINES = [trace_line(Request(1)), trace_line(Request(2, stream=True))]
SPANS = canonical([dict(span) for line in LINES for _, span in otlp.spans_of(line)])


def batch_for(target: TargetStub, lines: list[dict[str, Any]] = LINES) -> EncodedBatch:
    [batch] = batches([prepare(line, target) for line in lines], target.protocol)
    return batch


def send(target: TargetStub, batch: EncodedBatch | None = None) -> SendResult:
    with sender_for(target) as sender:
        return sender.send(batch or batch_for(target))


def outcome(result: SendResult) -> tuple[Any, ...]:
    """The result without its latency, which varies."""
    assert result.latency_ms >= 0
    return (result.outcome, result.rejected_spans, result.message, result.retry_after, result.status)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- what goes on the wire ---------------------------------------------------------------------------


def test_middleware_style_http_protobuf(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url, kind="middleware", headers={"authorization": MW_KEY}, project="shop")

    result = send(target)

    assert outcome(result) == ("accepted", 0, None, None, "200")
    [received] = http_rx.requests
    assert received.path == "/v1/traces"
    assert received.content_type == "application/x-protobuf" and received.content_encoding is None
    assert received.headers["authorization"] == MW_KEY
    assert received.headers["user-agent"] == "tfgw/0.1.0"
    assert received.spans == SPANS
    assert received.resources == [
        {"service.name": "tfgw", "service.version": "0.1.0", "openinference.project.name": "shop"}
    ]


def test_gzip_http(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url, compression="gzip")
    batch = batch_for(target)

    assert outcome(send(target, batch))[0] == "accepted"

    [received] = http_rx.requests
    assert received.content_encoding == "gzip"
    assert gzip.decompress(received.body) == batch.body
    assert received.spans == SPANS


def test_http_json(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url, protocol="http/json")
    http_rx.partial_success(2, "2 spans too old")

    result = send(target)

    assert outcome(result) == ("accepted", 2, "2 spans too old", None, "200")
    [received] = http_rx.requests
    assert received.content_type == "application/json" and received.protocol == "http/json"
    assert canonical(orjson.loads(received.body)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == SPANS
    assert received.spans == SPANS


def test_arize_style_grpc_metadata_and_project(grpc_rx: OtlpGrpcReceiver) -> None:
    target = TargetStub(
        grpc_rx.endpoint, kind="arize", protocol="grpc", headers=ARIZE_HEADERS, project="shop"
    )

    result = send(target)

    assert outcome(result) == ("accepted", 0, None, None, "OK")
    [received] = grpc_rx.requests
    assert {k: received.headers[k] for k in ARIZE_HEADERS} == ARIZE_HEADERS
    assert received.headers["user-agent"].startswith("tfgw/0.1.0 grpc-python/")
    assert received.spans == SPANS
    assert received.resources == [
        {
            "service.name": "tfgw",
            "service.version": "0.1.0",
            "openinference.project.name": "shop",
            "model_id": "shop",
        }
    ]


def test_grpc_gzip_is_on_the_wire() -> None:
    """A server that refuses gzip refuses the compressing sender only."""
    with OtlpGrpcReceiver(gzip=False) as rx:
        plain = TargetStub(rx.endpoint, protocol="grpc")
        gzipped = TargetStub(rx.endpoint, protocol="grpc", compression="gzip")

        assert outcome(send(gzipped)) == (
            "rejected", 0, "Compression algorithm 'gzip' is disabled.", None, "UNIMPLEMENTED"
        )  # fmt: skip
        assert outcome(send(plain))[0] == "accepted"
    with OtlpGrpcReceiver() as rx:
        assert outcome(send(TargetStub(rx.endpoint, protocol="grpc", compression="gzip")))[0] == "accepted"
        assert rx.spans == SPANS


def test_a_4_mib_batch_fits_grpc_default_limits(grpc_rx: OtlpGrpcReceiver) -> None:
    target = TargetStub(grpc_rx.endpoint, protocol="grpc")
    filler = {"key": "filler", "value": {"stringValue": "f" * 100_000}}
    lines = []
    for n in range(1, 60):
        line = trace_line(Request(n))
        line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(filler)
        lines.append(line)

    out = list(batches(lines, "grpc"))

    assert len(out) == 2 and len(out[0].body) > 4 * 1024 * 1024 - 120_000
    with sender_for(target) as sender:
        assert [sender.send(b).outcome for b in out] == ["accepted", "accepted"]
    assert len(grpc_rx.spans) == 59 * 4


def test_an_empty_batch_is_not_sent(http_rx: OtlpHttpReceiver, grpc_rx: OtlpGrpcReceiver) -> None:
    empty = EncodedBatch(0, b"", "application/x-protobuf", 1)
    for target in (TargetStub(http_rx.url), TargetStub(grpc_rx.endpoint, protocol="grpc")):
        assert outcome(send(target, empty)) == ("accepted", 0, "nothing to send", None, None)
    assert http_rx.requests == [] and grpc_rx.requests == []


# -- HTTP classification -----------------------------------------------------------------------------


def test_http_503_is_retried_then_accepted(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url)
    http_rx.fail_next(503)

    with HttpSender(target) as sender:
        first = sender.send(batch_for(target))
        second = sender.send(batch_for(target))

    assert outcome(first) == ("retry", 0, "fake receiver error 503", None, "503")
    assert outcome(second) == ("accepted", 0, None, None, "200")
    assert [r.status for r in http_rx.requests] == ["503", "200"]
    assert http_rx.spans == SPANS


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_http_retryable_statuses(http_rx: OtlpHttpReceiver, status: int) -> None:
    http_rx.fail_next(status, retry_after=7)

    assert outcome(send(TargetStub(http_rx.url))) == (
        "retry", 0, f"fake receiver error {status}", 7.0, str(status)
    )  # fmt: skip


def test_http_retry_after_as_a_date(http_rx: OtlpHttpReceiver) -> None:
    http_rx.fail_next(429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))

    result = send(TargetStub(http_rx.url))

    assert result.outcome == "retry" and result.retry_after is not None and 28 <= result.retry_after <= 30


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, None, "fake receiver error 400"),  # a protobuf google.rpc.Status
        (401, {"code": 16, "message": "bad api key"}, "bad api key"),
        (403, {"error": {"message": "forbidden space"}}, "forbidden space"),
        (404, b"404 page not found\n", "404 page not found"),
        (500, b"", "HTTP 500 Internal Server Error"),
        (413, b"too large", "too large"),
    ],
)
def test_http_other_statuses_are_rejected_with_the_reason(
    http_rx: OtlpHttpReceiver, status: int, body: Any, message: str
) -> None:
    http_rx.fail_next(status, body=body, retry_after=3)

    assert outcome(send(TargetStub(http_rx.url))) == ("rejected", 0, message, None, str(status))


def test_http_json_error_status(http_rx: OtlpHttpReceiver) -> None:
    http_rx.fail_next(400, message="invalid span id")

    result = send(TargetStub(http_rx.url, protocol="http/json"))

    assert outcome(result) == ("rejected", 0, "invalid span id", None, "400")


def test_http_error_messages_are_scrubbed_and_truncated(http_rx: OtlpHttpReceiver) -> None:
    http_rx.fail_next(401, body=f"key {KEY} is not valid here; ".encode() + b"x" * 1000)

    result = send(TargetStub(http_rx.url, secrets=(KEY,)))

    assert result.outcome == "rejected" and result.message is not None
    assert KEY not in result.message and result.message.startswith("key ak-…cdef is not valid here; xxx")
    assert len(result.message) == 500 and result.message.endswith("…")


def test_http_partial_success_protobuf(http_rx: OtlpHttpReceiver) -> None:
    http_rx.partial_success(3, "3 spans have no service.name")

    result = send(TargetStub(http_rx.url))

    assert outcome(result) == ("accepted", 3, "3 spans have no service.name", None, "200")


def test_a_2xx_that_is_not_an_otlp_answer_is_accepted_with_a_warning(http_rx: OtlpHttpReceiver) -> None:
    page = f"<html>\n<body>Sign in (key {KEY})</body>\n</html>".encode() + b"x" * 1000
    http_rx.fail_next(200, body=page)  # text/plain, as a web UI's page or a proxy's
    http_rx.fail_next(200, body={"error": "wrong path"})  # JSON, but not an ExportTraceServiceResponse
    http_rx.fail_next(200, body={"partialSuccess": "all of them"})
    target = TargetStub(http_rx.url, secrets=(KEY,))

    with sender_for(target) as sender:
        results = [sender.send(batch_for(target)) for _ in range(4)]

    assert [outcome(r) for r in results] == [("accepted", 0, None, None, "200")] * 4
    page_warning, json_warning, odd_warning, good = (r.warning for r in results)
    said = (
        f"200 with a body that is not an ExportTraceServiceResponse (text/plain, {len(page):,} bytes): "
        "is the endpoint right? It begins: <html> <body>Sign in (key ak-…cdef)</body> </html>"
    )  # the body's start, its blanks folded, its secrets masked, the whole cut at 500 characters
    assert page_warning == said + "x" * (499 - len(said)) + "…"
    assert (json_warning, odd_warning, good) == (
        None,  # an object: a receiver ignores fields it does not know, as OTLP/JSON says
        "200 with a body that is not an ExportTraceServiceResponse (application/json, 32 bytes): "
        'is the endpoint right? It begins: {"partialSuccess":"all of them"}',
        None,
    )


def test_http_connection_refused_is_retried(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url)
    with HttpSender(target) as sender:
        assert sender.send(batch_for(target)).outcome == "accepted"
        http_rx.down()
        try:
            refused = sender.send(batch_for(target))
        finally:
            http_rx.up()
        again = sender.send(batch_for(target))

    assert (refused.outcome, refused.status) == ("retry", "connect error")
    assert refused.message is not None and "ConnectError" in refused.message
    assert again.outcome == "accepted"


def test_http_timeout_is_retried(http_rx: OtlpHttpReceiver) -> None:
    http_rx.delay(1.0)

    result = send(TargetStub(http_rx.url, timeout=0.2))

    assert (result.outcome, result.status) == ("retry", "timeout")
    assert 150 <= result.latency_ms < 900


def test_an_unsendable_http_request_is_rejected_not_retried() -> None:
    result = send(TargetStub("ftp://127.0.0.1/v1/traces"))

    message = "UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'."
    assert outcome(result) == ("rejected", 0, message, None, "client error")


# -- gRPC classification -----------------------------------------------------------------------------


def test_grpc_unavailable_is_retried_then_accepted(grpc_rx: OtlpGrpcReceiver) -> None:
    target = TargetStub(grpc_rx.endpoint, protocol="grpc")
    grpc_rx.fail_next(grpc.StatusCode.UNAVAILABLE, "overloaded", times=2)

    with GrpcSender(target) as sender:
        results = [sender.send(batch_for(target)) for _ in range(3)]

    assert [outcome(r) for r in results] == [
        ("retry", 0, "overloaded", None, "UNAVAILABLE"),
        ("retry", 0, "overloaded", None, "UNAVAILABLE"),
        ("accepted", 0, None, None, "OK"),
    ]
    assert grpc_rx.spans == SPANS


@pytest.mark.parametrize(
    ("code", "retry_after", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, 2.5, ("retry", 2.5)),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0, ("retry", 1.0)),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, None, ("rejected", None)),
        (grpc.StatusCode.DEADLINE_EXCEEDED, None, ("retry", None)),
        (grpc.StatusCode.ABORTED, None, ("retry", None)),
        (grpc.StatusCode.DATA_LOSS, None, ("retry", None)),
        (grpc.StatusCode.INVALID_ARGUMENT, None, ("rejected", None)),
        (grpc.StatusCode.UNAUTHENTICATED, None, ("rejected", None)),
        (grpc.StatusCode.PERMISSION_DENIED, None, ("rejected", None)),
        (grpc.StatusCode.INTERNAL, None, ("rejected", None)),
    ],
)
def test_grpc_codes(
    grpc_rx: OtlpGrpcReceiver, code: grpc.StatusCode, retry_after: float | None, expected: tuple[Any, ...]
) -> None:
    grpc_rx.fail_next(code, f"said {code.name}", retry_after=retry_after)

    result = send(TargetStub(grpc_rx.endpoint, protocol="grpc"))

    assert outcome(result) == (expected[0], 0, f"said {code.name}", expected[1], code.name)


def test_grpc_invalid_argument_is_rejected_with_its_message_scrubbed(grpc_rx: OtlpGrpcReceiver) -> None:
    grpc_rx.fail_next(grpc.StatusCode.INVALID_ARGUMENT, f"span 3: bad trace id (key {KEY})")

    result = send(TargetStub(grpc_rx.endpoint, protocol="grpc", secrets=(KEY,)))

    assert outcome(result) == ("rejected", 0, "span 3: bad trace id (key ak-…cdef)", None, "INVALID_ARGUMENT")


def test_grpc_partial_success(grpc_rx: OtlpGrpcReceiver) -> None:
    grpc_rx.partial_success(1, "1 span over the attribute limit")

    result = send(TargetStub(grpc_rx.endpoint, protocol="grpc"))

    assert outcome(result) == ("accepted", 1, "1 span over the attribute limit", None, "OK")


def test_grpc_connection_refused_is_retried() -> None:
    result = send(TargetStub(f"127.0.0.1:{free_port()}", protocol="grpc"))

    assert (result.outcome, result.status) == ("retry", "UNAVAILABLE")
    assert result.message is not None and "127.0.0.1" in result.message


def test_grpc_receiver_down_then_up(grpc_rx: OtlpGrpcReceiver) -> None:
    target = TargetStub(grpc_rx.endpoint, protocol="grpc")
    with GrpcSender(target) as sender:
        grpc_rx.down()
        try:
            down = sender.send(batch_for(target))
        finally:
            grpc_rx.up()
        deadline = time.monotonic() + 5
        up = sender.send(batch_for(target))
        while up.outcome == "retry" and time.monotonic() < deadline:  # the channel reconnects
            time.sleep(0.05)
            up = sender.send(batch_for(target))

    assert (down.outcome, down.status) == ("retry", "UNAVAILABLE")
    assert up.outcome == "accepted"


def test_grpc_timeout_is_retried(grpc_rx: OtlpGrpcReceiver) -> None:
    grpc_rx.delay(0.6)

    result = send(TargetStub(grpc_rx.endpoint, protocol="grpc", timeout=0.2))

    assert (result.outcome, result.status) == ("retry", "DEADLINE_EXCEEDED")


def test_tls_by_default_for_grpc(grpc_rx: OtlpGrpcReceiver) -> None:
    """A TLS channel to a plaintext server fails the handshake: retried, never sent in clear."""
    result = send(TargetStub(grpc_rx.endpoint, protocol="grpc", insecure=False, timeout=1.0))

    assert (result.outcome, result.status) == ("retry", "UNAVAILABLE")
    assert grpc_rx.requests == []


def test_sender_for() -> None:
    for protocol, kind in (("grpc", GrpcSender), ("http/protobuf", HttpSender), ("http/json", HttpSender)):
        with sender_for(
            TargetStub("127.0.0.1:1" if protocol == "grpc" else "http://x", protocol=protocol)
        ) as s:
            assert type(s) is kind


# -- retry timing ------------------------------------------------------------------------------------


def test_the_public_surface() -> None:
    assert send_module.__all__ == [
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
