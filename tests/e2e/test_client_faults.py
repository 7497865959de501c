"""Client faults against a real `tfgw serve` on loopback: a client that goes away mid-stream, a
slowloris, an oversized body, hundreds of idle connections (the limits are docs/faults.md's)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.e2e.test_faults import KEY, faults_config
from tests.e2e.traces import TraceFiles
from tests.fakes.faulty import FaultyUpstream, refused_url
from tests.fakes.upstream import FakeUpstream
from tfgw.gateway.server import KEEP_ALIVE_TIMEOUT

MAX_BODY = 64 * 1024
#: Quart's message for a body that did not arrive within `[server] body_timeout`
SLOW_BODY = (
    "The server closed the network connection because the browser didn't finish the request"
    " within the specified time."
)
AUTH = f"authorization: Bearer {KEY}\r\n"


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> TraceFiles:
    return TraceFiles(tmp_path_factory.mktemp("client-fault-traces"))


@pytest.fixture(scope="module")
def config(
    faulty: FaultyUpstream,
    shared_upstream: FakeUpstream,
    traces: TraceFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("cgw") / "tfgw.toml"
    server = f"[server]\nmax_body_bytes = {MAX_BODY}\nbody_timeout = 1.0\n"
    path.write_text(server + faults_config(faulty.url, refused_url(), shared_upstream.url, traces.dir))
    return path


@pytest.fixture(scope="module")
def gw(config: Path) -> Iterator[Gateway]:
    with Gateway(config) as gateway:
        yield gateway


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


def connect(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def answer_of(sock: socket.socket, trickle: bytes = b"") -> tuple[int, dict[str, object]]:
    """The status and JSON body of the one answer the gateway sends on `sock` (it may close it),
    sending `trickle` every 0.2 s until it comes."""
    data = b""
    sock.settimeout(0.2 if trickle else 10)
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        try:
            more = sock.recv(65536)
        except TimeoutError:
            if not trickle:
                raise
            sock.sendall(trickle)
            continue
        assert more, f"closed after {data!r}"
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split(b" ", 2)[1]), orjson.loads(body[: _length(data)])


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return next((int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")), 0)


@pytest.mark.parametrize(
    ("model", "path", "chunks", "usage"),
    [("fo-drip", "/v1/chat/completions", 1, (None, None)), ("fa-drip", "/v1/messages", 2, (7, 1))],
    ids=["chat", "messages"],
)
def test_a_client_gone_mid_stream_cancels_the_upstream_and_finishes_the_trace(
    gw: Gateway,
    faulty: FaultyUpstream,
    traces: TraceFiles,
    model: str,
    path: str,
    chunks: int,
    usage: tuple[int | None, int | None],
) -> None:
    """The client reads the first event and closes: the faulty upstream sees its connection closed,
    the trace is written, cancelled, with the usage the provider had told by then (Anthropic's
    message_start has the input tokens; OpenAI's usage chunk comes last)."""
    before = faulty.disconnects["drip"]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": True}
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", gw.url + path, json=body, headers=headers, timeout=10) as reply:
        trace_id = reply.headers["x-tfgw-trace-id"]
        first = next(reply.iter_raw())
        assert b"partial " in first
    until(lambda: faulty.disconnects["drip"] == before + 1)  # the upstream request was cancelled
    spans = {s["name"]: s for s in traces.spans(trace_id)}
    root = next(s for s in spans.values() if s["parent"] is None)
    llm = next(s for s in spans.values() if s["kind"] == "CLIENT")
    assert (
        root["attributes"]["tfgw.stream.cancelled"],
        spans["stream"]["attributes"]["tfgw.stream.cancelled"],
    ) == (True, True)
    assert spans["stream"] == {
        "name": "stream",
        "kind": "INTERNAL",
        "parent": "chat drip",
        "status": {"code": 2, "message": "CancelledError"},
        "attributes": {"tfgw.stream.time_to_first_token_ms": "<float>", "tfgw.stream.cancelled": True,
                       "error.type": "cancelled", "tfgw.stream.chunks": chunks},
        "events": [{"name": "exception", "attributes": {"exception.type": "asyncio.exceptions.CancelledError",
                    "exception.message": "CancelledError", "exception.stacktrace": "<stacktrace>"}}],
    }  # fmt: skip
    attributes = llm["attributes"]
    assert (
        attributes.get("gen_ai.usage.input_tokens"),
        attributes.get("gen_ai.usage.output_tokens"),
    ) == usage


def test_a_client_gone_before_a_whole_answer_cancels_the_upstream_call(
    gw: Gateway, faulty: FaultyUpstream, traces: TraceFiles
) -> None:
    """Not a stream: the client sends its request and closes while the provider is still silent.
    The upstream call is closed at once, long before its first-token timeout would have, and the
    trace (its id the client's `traceparent`) is written with the root marked cancelled."""
    calls, before = faulty.calls["slow_headers"], faulty.disconnects["slow_headers"]
    trace_id = "5f0c9d3e0b9a4f1d8c7b6a5948372615"
    body = orjson.dumps({"model": "fo-slow_headers", "messages": [{"role": "user", "content": "hi"}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{AUTH}content-type: application/json\r\n"
        f"traceparent: 00-{trace_id}-00f067aa0ba902b7-01\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    with connect(gw) as sock:
        sock.sendall(head.encode() + body)
        until(lambda: faulty.calls["slow_headers"] == calls + 1)  # the gateway is waiting on it
    until(lambda: faulty.disconnects["slow_headers"] == before + 1)
    root = next(s for s in traces.spans(trace_id) if s["parent"] == "<caller>")
    assert (root["status"], root["attributes"]["error.type"]) == (
        {"code": 2, "message": "CancelledError"},
        "CancelledError",
    )
    assert root["attributes"]["tfgw.stream.cancelled"] is True


def test_a_content_length_over_the_limit_is_refused_before_the_body(gw: Gateway) -> None:
    too_large = f"Request body is larger than the gateway's limit of {MAX_BODY} bytes."
    openai_error = {
        "message": too_large,
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    for path, expected in [
        ("/v1/chat/completions", {"error": openai_error}),
        ("/v1/messages", {"type": "error", "error": {"type": "request_too_large", "message": too_large}}),
    ]:
        with connect(gw) as sock:
            head = f"POST {path} HTTP/1.1\r\nhost: x\r\n{AUTH}content-type: application/json\r\n"
            sock.sendall((head + f"content-length: {100 * MAX_BODY}\r\n\r\n").encode())  # and no body at all
            assert answer_of(sock) == (413, expected)


def test_a_chunked_body_is_cut_off_at_the_limit(gw: Gateway) -> None:
    with connect(gw) as sock:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{AUTH}transfer-encoding: chunked\r\n\r\n"
        sock.sendall(head.encode())
        chunk = b"x" * 8192
        for _ in range(MAX_BODY // len(chunk) + 2):  # past the limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, body = answer_of(sock)
    assert (status, body["error"]["code"]) == (413, "request_too_large")  # type: ignore[index]


def test_idle_and_slowloris_connections_do_not_stop_a_request_and_are_closed(gw: Gateway) -> None:
    """500 connections that never send a byte and one that trickles its headers: a new request is
    served meanwhile, and Hypercorn closes every one of them after the keep-alive timeout."""
    idle = [connect(gw) for _ in range(500)]
    trickle = connect(gw)
    trickle.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
    try:
        body = {"model": "good", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(
            gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        )
        assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        start = time.monotonic()
        for sock in idle:
            sock.settimeout(KEEP_ALIVE_TIMEOUT + 5)
        trickle.settimeout(0.2)
        while True:  # a header line every 0.2 s does not keep it open
            try:
                if trickle.recv(1) == b"":
                    break
            except TimeoutError:
                trickle.sendall(b"x-slow: 1\r\n")
            except ConnectionResetError:
                break
            assert time.monotonic() - start < KEEP_ALIVE_TIMEOUT + 5
        assert all(sock.recv(1) == b"" for sock in idle)
    finally:
        for sock in [*idle, trickle]:
            sock.close()


def test_a_slow_body_gets_408_after_the_body_timeout(gw: Gateway) -> None:
    """`[server] body_timeout` (1 s in this module's config): a body that trickles in is answered
    408, in the route's shape, once the whole of it has not come within the timeout."""
    with connect(gw) as sock:
        head = f"POST /v1/messages HTTP/1.1\r\nhost: x\r\n{AUTH}content-length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b'{"model": ')
        start = time.monotonic()
        status, body = answer_of(sock, trickle=b" ")  # a byte every 0.2 s does not extend it
        elapsed = time.monotonic() - start
    assert (status, body) == (
        408,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": SLOW_BODY,
            },
        },
    )
    assert 0.9 < elapsed < 5
