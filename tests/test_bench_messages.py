"""bench/messages_ab.py: its aggregation and report, a run of it as one command, and the fake
upstream's `/v1/messages` answers as the official `anthropic` SDK reads them.

Nothing here asserts a speed: the runs are a fraction of a second; only shapes, counts and the
arithmetic of the report are pinned.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.conftest import REPO
from tests.processes import running

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import messages_ab  # noqa: E402  (bench/ is not a package)
from floor import FloorRun  # noqa: E402
from load import LoadResult  # noqa: E402

# -- the report's arithmetic -----------------------------------------------------------------------


def run(scenario: str, path: str, cpu_s: float, rps: float, p50: float, p99: float) -> FloorRun:
    result = LoadResult("wrk", int(scenario.split("-")[1]), 5.0, 1000, 0, rps, p50, p99)
    return FloorRun(scenario, path, result, cpu_s, 1200)


#: stream-10 in the A B B A order: chat 1000 µs a request, passthrough 1125, translated 1375
RUNS = [
    run("stream-10", "chat", 1.0, 800.0, 10.0, 20.0),
    run("stream-10", "passthrough", 1.0, 700.0, 11.0, 22.0),
    run("stream-10", "translated", 1.25, 600.0, 12.0, 24.0),
    run("stream-10", "translated", 1.5, 500.0, 14.0, 28.0),
    run("stream-10", "passthrough", 1.25, 900.0, 13.0, 26.0),
    run("stream-10", "chat", 1.0, 800.0, 10.0, 20.0),
    run("json-10", "chat", 1.0, 1000.0, 8.0, 16.0),
    run("json-10", "passthrough", 1.0, 1000.0, 8.0, 16.0),
    run("json-10", "translated", 1.0625, 800.0, 9.0, 18.0),
    run("json-10", "translated", 1.0625, 800.0, 9.0, 18.0),
    run("json-10", "passthrough", 1.0, 1000.0, 8.0, 16.0),
    run("json-10", "chat", 1.0, 1000.0, 8.0, 16.0),
]
EVENTS = {"chat": 22, "passthrough": 24, "translated": 23}


def row(
    scenario: str, path: str, rps: list[float], p50: float, p99: float, cpu: list[float]
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "path": path,
        "concurrency": 10,
        "rps": sum(rps) / 2,
        "rps_runs": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": 0,
        "cpu_us_per_request": sum(cpu) / 2,
        "cpu_us_runs": cpu,
    }


ROWS = [
    row("stream-10", "chat", [800.0, 800.0], 10.0, 20.0, [1000.0, 1000.0]),
    row("stream-10", "passthrough", [700.0, 900.0], 12.0, 24.0, [1000.0, 1250.0]),
    row("stream-10", "translated", [600.0, 500.0], 13.0, 26.0, [1250.0, 1500.0]),
    row("json-10", "chat", [1000.0, 1000.0], 8.0, 16.0, [1000.0, 1000.0]),
    row("json-10", "passthrough", [1000.0, 1000.0], 8.0, 16.0, [1000.0, 1000.0]),
    row("json-10", "translated", [800.0, 800.0], 9.0, 18.0, [1062.5, 1062.5]),
]


def test_rows_are_means_over_each_paths_runs_with_cpu_over_all_its_requests() -> None:
    assert messages_ab.rows_of(RUNS) == ROWS


def test_differences_set_each_path_against_chat_and_its_bound() -> None:
    assert messages_ab.differences(ROWS, EVENTS) == [
        {
            "scenario": "stream-10",
            "path": "passthrough",
            "rps_ratio": 1.0,
            "added_p50_ms": 2.0,
            "added_p99_ms": 4.0,
            "cpu_us_per_request": 125.0,
            "events_per_stream": None,
            "cpu_us_per_event": None,
            "bound_us_per_request": 0.0,
            "ok": False,
        },
        {
            "scenario": "stream-10",
            "path": "translated",
            "rps_ratio": 550.0 / 800.0,
            "added_p50_ms": 3.0,
            "added_p99_ms": 6.0,
            "cpu_us_per_request": 375.0,
            "events_per_stream": 23,
            "cpu_us_per_event": 375.0 / 23,
            "bound_us_per_request": 50.0 + 3.0 * 23,
            "ok": False,
        },
        {
            "scenario": "json-10",
            "path": "passthrough",
            "rps_ratio": 1.0,
            "added_p50_ms": 0.0,
            "added_p99_ms": 0.0,
            "cpu_us_per_request": 0.0,
            "events_per_stream": None,
            "cpu_us_per_event": None,
            "bound_us_per_request": 0.0,
            "ok": True,
        },
        {
            "scenario": "json-10",
            "path": "translated",
            "rps_ratio": 0.8,
            "added_p50_ms": 1.0,
            "added_p99_ms": 2.0,
            "cpu_us_per_request": 62.5,
            "events_per_stream": None,
            "cpu_us_per_event": None,
            "bound_us_per_request": 50.0,
            "ok": False,
        },
    ]


def test_a_scenario_without_its_chat_rows_has_no_differences() -> None:
    assert messages_ab.differences([r for r in ROWS if r["path"] != "chat"], EVENTS) == []


MACHINE = {
    "nproc": 2,
    "python": "3.11.7",
    "checkout": "abc1234",
    "load_tool": "wrk",
    "loadavg_1m_at_start": 0.5,
    "calibration_ms_at_start": 80.0,
    "calibration_ms_at_end": 90.0,
}
MICRO = [{"path": "translated", "what": "to_message", "us": 2.345}]

MARKDOWN = """\
2026-12-01T12:00:00+00:00; 2 CPUs, Python 3.11.7, tfgw at abc1234, load: wrk, 5 s per run after 1 s \
warm-up, load average 0.5 at start, calibration loop 80 ms at start, 90 ms at end

| scenario | path | req/s | req/s of each run | p50 ms | p99 ms | CPU µs/req (tree) \
| CPU µs/req of each run | errors |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| json-10 | chat | 1,000 | 1,000 / 1,000 | 8.000 | 16.000 | 1,000 | 1,000 / 1,000 | 0 |
| json-10 | passthrough | 1,000 | 1,000 / 1,000 | 8.000 | 16.000 | 1,000 | 1,000 / 1,000 | 0 |
| json-10 | translated | 800 | 800 / 800 | 9.000 | 18.000 | 1,062 | 1,062 / 1,062 | 0 |

SSE events in one stream as the client gets it: chat 22, passthrough 24, translated 23.

| scenario | path - chat | req/s ratio | added p50 ms | added p99 ms | CPU µs/req | CPU µs/event \
| bound µs/req | verdict |
| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |
| json-10 | passthrough | 1.00 | 0.000 | 0.000 | 0 | n/a | <= 0 | pass |
| json-10 | translated | 0.80 | 1.000 | 2.000 | 62 | n/a | <= 50 | FAIL |

| path | what (no server, timeit best of rounds) | µs |
| --- | --- | ---: |
| translated | to_message | 2.35 |"""


def report(rows: list[dict[str, Any]]) -> messages_ab.MessagesReport:
    made = messages_ab.MessagesReport("2026-12-01T12:00:00+00:00", MACHINE, 5.0, 1.0, ["json-10"])
    made.events_per_stream, made.rows, made.micro = EVENTS, rows, MICRO
    made.differences = messages_ab.differences(rows, EVENTS)
    return made


def test_the_markdown_report() -> None:
    assert messages_ab.markdown(report(ROWS[3:])) == MARKDOWN


def test_the_micro_only_report_is_its_header_and_table() -> None:
    micro_only = report([])
    micro_only.scenarios, micro_only.events_per_stream = [], {}
    assert messages_ab.markdown(micro_only) == (
        "2026-12-01T12:00:00+00:00; 2 CPUs, Python 3.11.7, tfgw at abc1234, micro-benchmark only, "
        "load average 0.5 at start, calibration loop 80 ms at start, 90 ms at end\n\n"
        "| path | what (no server, timeit best of rounds) | µs |\n| --- | --- | ---: |\n"
        "| translated | to_message | 2.35 |"
    )


def test_the_callgrind_report_sets_each_path_against_chat() -> None:
    counted = report([])
    counted.scenarios, counted.events_per_stream, counted.callgrind_requests = [], {}, 200
    counted.callgrind = [
        {"kind": "stream", "path": "chat", "instructions": 4_000_000.0, "minus_chat": 0.0},
        {"kind": "stream", "path": "passthrough", "instructions": 4_400_000.0, "minus_chat": 400_000.0},
    ]
    assert messages_ab.markdown(counted) == (
        "2026-12-01T12:00:00+00:00; 2 CPUs, Python 3.11.7, tfgw at abc1234, callgrind, 200 sequential "
        "requests a path, load average 0.5 at start, calibration loop 80 ms at start, 90 ms at end\n\n"
        "| kind | path | instructions a request | - chat |\n| --- | --- | ---: | ---: |\n"
        "| stream | chat | 4,000,000 | +0 (+0.0%) |\n"
        "| stream | passthrough | 4,400,000 | +400,000 (+10.0%) |\n\n"
        "| path | what (no server, timeit best of rounds) | µs |\n| --- | --- | ---: |\n"
        "| translated | to_message | 2.35 |"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--concurrency", "10,x"],
            "error: --concurrency: comma-separated integers within 1..1000, got '10,x'\n",
        ),
        (["--kinds", "paced"], "error: --kinds: stream, json or both, got 'paced'\n"),
        (["--duration", "0"], "error: --duration: must be within (0, 600] s, got 0\n"),
        (["--micro-repeat", "0"], "error: --micro-repeat: must be within 1..100, got 0\n"),
        (["--callgrind", "-1"], "error: --callgrind: must be within 0..10000 requests, got -1\n"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_code_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        messages_ab.parse_args(flags)
    assert (exited.value.code, capsys.readouterr().err) == (2, message)


# -- the script as one command ---------------------------------------------------------------------

MICRO_WHATS = [
    ("translated", "to_chat_request, the bench's body"),
    ("translated", "to_chat_request, a typical agent request"),
    ("translated", "to_message, the fake upstream's completion"),
    ("translated", "MessageEvents.feed, per chunk (21 chunks)"),
    ("translated", "MessageEvents.finish, once a stream"),
    ("passthrough", "to_chat_request(strict=False), the span's view"),
    ("passthrough", "from_messages_response(orjson.loads(body)), the span's answer"),
    ("passthrough", "sse_events + orjson.loads + StreamTranslator.feed, per event (24 events)"),
    ("chat", "sse_events + orjson.loads, per event (22 events, [DONE] included)"),
]


@pytest.mark.e2e
def test_one_run_measures_every_path_interleaved_without_errors() -> None:
    command = [sys.executable, str(BENCH / "messages_ab.py"), "--json", "--tool", "python"]
    command += ["--duration", "0.3", "--warmup", "0.1", "--concurrency", "10", "--micro-repeat", "1"]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    data = json.loads(out)

    assert data["scenarios"] == ["stream-10", "json-10"]
    assert data["events_per_stream"] == EVENTS
    expected = [(s, p) for s in ("stream-10", "json-10") for p in messages_ab.ORDER]
    assert [(r["scenario"], r["path"]) for r in data["runs"]] == expected
    assert [r["errors"] for r in data["runs"]] == [0] * len(expected)
    assert all(r["requests"] > 0 and r["cpu_us_per_request"] is not None for r in data["runs"])
    assert [(r["scenario"], r["path"]) for r in data["rows"]] == list(dict.fromkeys(expected))
    differences = [(d["scenario"], d["path"], d["events_per_stream"]) for d in data["differences"]]
    assert differences == [
        ("stream-10", "passthrough", None),
        ("stream-10", "translated", 23),
        ("json-10", "passthrough", None),
        ("json-10", "translated", None),
    ]
    assert [(m["path"], m["what"]) for m in data["micro"]] == MICRO_WHATS
    assert all(m["us"] > 0 for m in data["micro"])


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="valgrind is not installed")
def test_callgrind_counts_every_path_against_chat() -> None:
    command = [sys.executable, str(BENCH / "messages_ab.py"), "--json", "--callgrind", "2"]
    command += ["--kinds", "json", "--micro-repeat", "1"]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    data = json.loads(out)

    assert (data["scenarios"], data["runs"], data["callgrind_requests"]) == ([], [], 2)
    counted = data["callgrind"]
    assert [(c["kind"], c["path"]) for c in counted] == [("json", path) for path in messages_ab.PATHS]
    assert all(c["instructions"] > 1_000_000 for c in counted)  # a request is millions, not a dump's rest
    chat = counted[0]["instructions"]
    assert [c["minus_chat"] for c in counted] == [c["instructions"] - chat for c in counted]


# -- the fake upstream's /v1/messages --------------------------------------------------------------

WORDS = ["Hello! ", "I ", "hope ", "you ", "are ", "having ", "a ", "wonderful ", "day ", "today. "]
TEXTS = (WORDS * 2)[:18]  # the chat stream's 18 content chunks, word for word
USAGE_IN = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "input_tokens": 14}
MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello! I hope you are having a wonderful day today."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {**USAGE_IN, "output_tokens": 12, "service_tier": "standard"},
}
START = {**MESSAGE, "content": [], "stop_reason": None, "usage": {**MESSAGE["usage"], "output_tokens": 1}}
EVENTS_AS_SENT: list[dict[str, Any]] = [
    {"type": "message_start", "message": START},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in TEXTS),
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 18},
    },
    {"type": "message_stop"},
]
QUESTION: list[anthropic.types.MessageParam] = [
    {"role": "user", "content": "Say hello in one short sentence."}
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upstream(*flags: str) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port), *flags]
    with running(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        yield port


@pytest.fixture
def zero_delay() -> Iterator[int]:
    yield from upstream()


@pytest.fixture
def paced() -> Iterator[int]:
    yield from upstream("--pace-ms", "1")


@pytest.fixture
def claude(zero_delay: int) -> Iterator[anthropic.Anthropic]:
    url = f"http://127.0.0.1:{zero_delay}"
    with anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, timeout=10) as client:
        yield client


@pytest.mark.e2e
def test_a_message_as_the_sdk_reads_it(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="bench-claude", max_tokens=64, messages=QUESTION)
    assert isinstance(message, anthropic.types.Message)
    assert message.to_dict() == MESSAGE


@pytest.mark.e2e
def test_a_streamed_message_as_the_sdk_reads_it(claude: anthropic.Anthropic) -> None:
    stream = claude.messages.create(model="bench-claude", max_tokens=64, messages=QUESTION, stream=True)
    events = [event.to_dict() for event in stream]
    assert events == [event for event in EVENTS_AS_SENT if event["type"] != "ping"]  # the SDK skips pings
    with claude.messages.stream(model="bench-claude", max_tokens=64, messages=QUESTION) as accumulated:
        final = accumulated.get_final_message()
    assert [block.to_dict() for block in final.content] == [{"type": "text", "text": "".join(TEXTS)}]
    assert final.usage.to_dict() == {**USAGE_IN, "output_tokens": 18, "service_tier": "standard"}


REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s"
)
STREAM_BODY = b'{"model": "bench-claude", "max_tokens": 64, "stream": true, "messages": []}'


def streams(port: int, count: int) -> tuple[bytes, int]:
    """`count` streamed messages asked for at once on one connection: the bytes until the last
    one ended, and how many reads that took."""
    data, reads = b"", 0
    deadline = time.monotonic() + 10
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST % (len(STREAM_BODY), STREAM_BODY) * count)
        while data.count(b"0\r\n\r\n") < count and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data, reads = data + chunk, reads + 1
    return data, reads


def sse(data: bytes) -> list[tuple[str, Any]]:
    """(event, data) of every event of one chunked SSE response, decoded by hand."""
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding: chunked" in head and b"content-type: text/event-stream" in head
    chunks = []
    while rest:
        size, rest = rest.split(b"\r\n", 1)
        chunks.append(rest[: int(size, 16)])
        rest = rest[int(size, 16) + 2 :]
    assert chunks[-1] == b""  # the last chunk, nothing behind it
    out = []
    for chunk in chunks[:-1]:  # one event per chunk
        event, payload, blank = chunk.split(b"\n", 2)
        assert (event[:7], payload[:6], blank) == (b"event: ", b"data: ", b"\n")
        out.append((event[7:].decode(), json.loads(payload[6:])))
    return out


@pytest.mark.e2e
def test_a_streamed_message_by_hand_pings_once_in_one_write(zero_delay: int) -> None:
    data, _ = streams(zero_delay, 1)
    assert sse(data) == [(event["type"], event) for event in EVENTS_AS_SENT]


@pytest.mark.e2e
def test_a_paced_message_stream_is_the_same_bytes_in_many_writes(zero_delay: int, paced: int) -> None:
    whole, _ = streams(zero_delay, 1)
    paced_bytes, reads = streams(paced, 1)
    assert paced_bytes == whole
    assert reads > 1
    assert streams(paced, 3)[0] == whole * 3
