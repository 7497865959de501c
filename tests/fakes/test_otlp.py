"""The fake OTLP receivers themselves, driven by plain httpx and grpc clients (not tfgw's senders)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import grpc
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.fakes.otlp import OtlpGrpcReceiver, OtlpHttpReceiver, canonical, encode_request
from tests.samples import Request, trace_line
from tfgw.export.rpc_status import DETAILS_KEY, decode_status
from tfgw.tracing import otlp

LINE = trace_line(Request(1, stream=True))
SPANS = canonical([dict(span) for _, span in otlp.spans_of(LINE)])
BODY = encode_request(LINE).SerializeToString()


@pytest.fixture
def http_rx() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as rx:
        yield rx


def test_http_records_protobuf_json_and_gzip(http_rx: OtlpHttpReceiver) -> None:
    with httpx.Client(headers={"X-Custom": "v"}) as client:
        plain = client.post(http_rx.url, content=BODY, headers={"content-type": "application/x-protobuf"})
        zipped = client.post(
            http_rx.url,
            content=gzip.compress(orjson.dumps(LINE)),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )

    assert (plain.status_code, plain.headers["content-type"], plain.content) == (
        200,
        "application/x-protobuf",
        b"",
    )
    assert (zipped.status_code, zipped.json()) == (200, {})
    first, second = http_rx.requests
    assert (first.protocol, first.content_type, first.content_encoding, first.body) == (
        "http/protobuf", "application/x-protobuf", None, BODY
    )  # fmt: skip
    assert (second.protocol, second.content_type, second.content_encoding) == (
        "http/json",
        "application/json",
        "gzip",
    )
    assert first.headers["x-custom"] == "v"
    assert first.request == second.request == canonical(LINE)
    assert first.resources == [
        {"service.name": "tfgw", "service.version": "0.1.0", "openinference.project.name": "default"}
    ]
    assert http_rx.wait_for(len(SPANS) * 2) == SPANS * 2


def test_http_programmed_answers(http_rx: OtlpHttpReceiver) -> None:
    http_rx.fail_next(503, times=2, retry_after=4)
    http_rx.fail_next(400, body=b"nope")
    http_rx.partial_success(1, "one too old")
    headers = {"content-type": "application/x-protobuf"}

    with httpx.Client() as client:
        answers = [client.post(http_rx.url, content=BODY, headers=headers) for _ in range(5)]
        bad = client.post(http_rx.url, content=b"\xff\xff", headers=headers)

    assert [(a.status_code, a.headers.get("retry-after")) for a in answers] == [
        (503, "4"), (503, "4"), (400, None), (200, None), (200, None)
    ]  # fmt: skip
    status = decode_status(answers[0].content)
    assert status is not None and (status.code, status.message) == (14, "fake receiver error 503")
    assert answers[2].text == "nope"
    partial = ExportTraceServiceResponse.FromString(answers[3].content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (1, "one too old")
    assert bad.status_code == 400 and b"cannot decode" in bad.content
    assert [r.status for r in http_rx.requests] == ["503", "503", "400", "200", "200", "400"]
    assert len(http_rx.spans) == 2 * len(SPANS), "only answered-with-success requests count"


def test_http_down_refuses_connections_and_up_listens_on_the_same_port(http_rx: OtlpHttpReceiver) -> None:
    url = http_rx.url
    with httpx.Client() as client:
        http_rx.down()
        with pytest.raises(httpx.ConnectError):
            client.post(url, content=BODY, headers={"content-type": "application/x-protobuf"})
        http_rx.up()
        assert (
            client.post(url, content=BODY, headers={"content-type": "application/x-protobuf"}).status_code
            == 200
        )
    assert http_rx.url == url


def test_wait_for_gives_up_at_the_deadline(http_rx: OtlpHttpReceiver) -> None:
    with pytest.raises(AssertionError, match=r"0 spans received in 0\.05 s, expected 1"):
        http_rx.wait_for(1, timeout=0.05)


def test_grpc_records_metadata_and_programmed_codes() -> None:
    with OtlpGrpcReceiver() as rx, grpc.insecure_channel(rx.endpoint) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        rx.fail_next(grpc.StatusCode.UNAVAILABLE, "busy", retry_after=1.5)
        rx.partial_success(2, "two")
        with pytest.raises(grpc.RpcError) as failed:
            export(BODY, metadata=(("api_key", "k"),), timeout=5)
        answer = export(BODY, metadata=(("api_key", "k"),), timeout=5)

        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        [details] = [v for k, v in failed.value.trailing_metadata() if k == DETAILS_KEY]  # type: ignore[attr-defined]
        status = decode_status(details)
        assert status is not None and (status.code, status.message, status.retry_after) == (14, "busy", 1.5)
        assert (answer.partial_success.rejected_spans, answer.partial_success.error_message) == (2, "two")
        assert [(r.status, r.headers["api_key"], r.body == BODY) for r in rx.requests] == [
            ("UNAVAILABLE", "k", True), ("OK", "k", True)
        ]  # fmt: skip
        assert rx.wait_for(len(SPANS)) == SPANS
        assert rx.requests[1].resources[0]["service.name"] == "tfgw"
