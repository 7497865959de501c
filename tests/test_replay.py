"""`tfgw replay`: files written by the OpenTelemetry SDK (as the Collector's file exporter writes
them) and by tfgw itself, replayed to real OTLP/HTTP and gRPC receivers; whole verdicts."""

from __future__ import annotations

import base64
import gzip
import io
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from rich.console import Console

from tests import samples
from tests.conftest import REPO
from tests.fakes.otlp import OtlpGrpcReceiver, OtlpHttpReceiver
from tfgw.cli import main
from tfgw.cli import replay as replay_cli
from tfgw.config import load
from tfgw.export.encode import is_content_key
from tfgw.export.targets import configured_target
from tfgw.tracing import otlp

T0 = 1_760_000_000_000_000_000  # 2025-10-09T08:53:20Z
MS = 1_000_000
QUESTION = "What is the refund policy for damaged parcels?"
DOCUMENT = "Refunds for damaged parcels are issued within 14 days."
ANSWER = "You get a refund within 14 days."
CONTENT = (QUESTION, DOCUMENT, ANSWER)


# -- files written by another tool: the OpenTelemetry SDK's encoder, hex ids --------------------


class _Ids(IdGenerator):
    """Sequential ids, so the SDK's spans are the same on every run."""

    def __init__(self) -> None:
        self.n = itertools.count(1)

    def generate_span_id(self) -> int:
        return 0x5000 + next(self.n)

    def generate_trace_id(self) -> int:
        return 0xFEED0000 + next(self.n)

    def is_trace_id_random(self) -> bool:
        return False


def agent_traces(count: int = 3) -> list[list[ReadableSpan]]:
    """`count` agent runs: an AGENT root, a RETRIEVER, a TOOL and an LLM call, each 100 ms apart."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "openinference.project.name": "support"}),
        id_generator=_Ids(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("openinference.instrumentation.langchain", "0.1.0")
    traces: list[list[ReadableSpan]] = []
    for run in range(count):
        t = T0 + run * 1000 * MS
        # each run links to the one before it (a follow-up question): links across traces
        links = [Link(traces[-1][-1].get_span_context())] if traces else []
        agent = tracer.start_span("agent", kind=SpanKind.INTERNAL, start_time=t, links=links)
        agent.set_attributes(
            {"openinference.span.kind": "AGENT", "input.value": QUESTION, "output.value": ANSWER}
        )
        ctx = _context(agent)
        retriever = tracer.start_span("retrieve", context=ctx, start_time=t + 10 * MS)
        retriever.set_attributes(
            {
                "openinference.span.kind": "RETRIEVER",
                "input.value": QUESTION,
                "retrieval.documents.0.document.id": "kb-17",
                "retrieval.documents.0.document.content": DOCUMENT,
                "retrieval.documents.0.document.score": 0.92,
            }
        )
        retriever.end(end_time=t + 40 * MS)
        tool = tracer.start_span("lookup_order", context=ctx, start_time=t + 45 * MS)
        tool.set_attributes(
            {"openinference.span.kind": "TOOL", "tool.name": "lookup_order", "input.value": '{"order": 42}'}
        )
        tool.set_status(Status(StatusCode.ERROR, "order service timeout"))
        tool.end(end_time=t + 60 * MS)
        llm = tracer.start_span("ChatOpenAI", context=ctx, kind=SpanKind.CLIENT, start_time=t + 60 * MS)
        llm.set_attributes(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.system": "openai",
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": QUESTION,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": ANSWER,
                "llm.token_count.prompt": 30,
                "llm.token_count.completion": 9,
                "llm.token_count.total": 39,
                "gen_ai.response.finish_reasons": ["stop"],
            }
        )
        llm.add_event("First Token Stream Event", timestamp=t + 70 * MS)
        llm.end(end_time=t + 90 * MS)
        agent.end(end_time=t + 100 * MS)
        traces.append(list(exporter.get_finished_spans()[-4:]))
    provider.shutdown()
    return traces


def _context(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def collector_line(spans: list[ReadableSpan], *, names: bool = False) -> bytes:
    """The spans as one OTLP/JSON line the way the Collector's file exporter writes it: hex ids,
    int64 as strings; enum names instead of integers with `names` (as proto3 JSON allows)."""
    data = MessageToDict(encode_spans(spans), use_integers_for_enums=not names)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for item in (s, *s.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return orjson.dumps(data) + b"\n"


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A Collector directory (3 traces over 2 lines, one trace split between them, and a file that
    is not a trace file) and a tfgw trace log segment (2 requests, 9 spans). 21 spans in all."""
    a, b, c = agent_traces()
    collector = tmp_path / "collector"
    collector.mkdir()
    (collector / "traces.jsonl").write_bytes(collector_line(a + b[:2]) + collector_line(b[2:] + c))
    (collector / "notes.txt").write_text("not a trace file\n")
    tfgw_log = tmp_path / "tfgw.jsonl"
    lines = [samples.trace_line(samples.Request(1, stream=True)), samples.trace_line(samples.Request(2))]
    tfgw_log.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return collector, tfgw_log


def spans_in(*paths: Path) -> list[dict[str, Any]]:
    return [
        span
        for path in paths
        for raw in path.read_bytes().splitlines()
        for _, span in otlp.spans_of(orjson.loads(raw))
    ]


# -- running the command -----------------------------------------------------------------------


def tfgw(capsys: pytest.CaptureFixture[str], *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process, through `main()` and its error handler."""
    saved, saved_stdin = sys.argv, sys.stdin
    sys.argv = ["tfgw", *args]
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with pytest.raises(SystemExit) as done:
            main()
    finally:
        sys.argv, sys.stdin = saved, saved_stdin
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 0), out, err


def verdict(capsys: pytest.CaptureFixture[str], *args: str, stdin: bytes | None = None) -> tuple[int, Any]:
    code, out, err = tfgw(capsys, "replay", *args, "--json", stdin=stdin)
    assert out, err
    return code, orjson.loads(out)


def file_verdict(name: Path | str, spans: int, sent: int = -1, accepted: int = -1, rejected: int = 0) -> Any:
    sent = spans if sent < 0 else sent
    return {
        "file": str(name),
        "spans": spans,
        "sent": sent,
        "accepted": sent - rejected if accepted < 0 else accepted,
        "rejected": rejected,
        "dropped": 0,
    }


PROJECTS = {"default": 9, "support": 12}
TIME_RANGE = {"start": "2024-01-01T00:00:00.000Z", "end": "2025-10-09T08:53:22.100Z"}


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return write_inputs(tmp_path)


@pytest.fixture
def http() -> Any:
    with OtlpHttpReceiver() as rx:
        yield rx


# -- delivery ----------------------------------------------------------------------------------


def test_replays_every_span_to_an_http_receiver(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    code, result = verdict(capsys, str(collector), str(tfgw_log), "--endpoint", http.base_url)
    assert (code, result) == (
        0,
        {
            "ok": True,
            "dry_run": False,
            "target": "endpoint",
            "protocol": "http/protobuf",
            "endpoint": http.url,
            "spans": 21,
            "sent": 21,
            "accepted": 21,
            "rejected": 0,
            "dropped": 0,
            "projects": PROJECTS,
            "time_range": TIME_RANGE,
            "files": [file_verdict(collector / "traces.jsonl", 12), file_verdict(tfgw_log, 9)],
            "failures": [],
            "unreachable": None,
            "warnings": [],
        },
    )
    expected = spans_in(collector / "traces.jsonl", tfgw_log)
    received = http.spans
    key = lambda s: (s["traceId"], s["spanId"])  # noqa: E731
    assert sorted(map(key, received)) == sorted(map(key, expected))
    assert {r.content_encoding for r in http.requests} == {"gzip"}
    assert [len(r.spans) for r in http.requests] == [12, 9]  # a batch per file


def test_replays_to_a_grpc_receiver_as_text(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path]
) -> None:
    collector, tfgw_log = inputs
    with OtlpGrpcReceiver() as rx:
        code, out, err = tfgw(
            capsys, "replay", str(collector), str(tfgw_log), "--endpoint", rx.url, "--protocol", "grpc"
        )
        assert len(rx.spans) == 21
    assert (code, out, err) == (
        0,
        f"replayed 21 spans from 2 files to endpoint (grpc, {rx.endpoint})\n"
        f"  {collector / 'traces.jsonl'}: 12 read, 12 sent, 12 accepted, 0 rejected\n"
        f"  {tfgw_log}: 9 read, 9 sent, 9 accepted, 0 rejected\n"
        "  projects: default (9), support (12)\n"
        "  time range: 2024-01-01T00:00:00.000Z .. 2025-10-09T08:53:22.100Z\n"
        "ok: 21 of 21 spans accepted\n",
        "",
    )


def test_enum_names_numbers_stdin_gzip_and_a_torn_last_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, http: OtlpHttpReceiver
) -> None:
    a, b, _ = agent_traces()
    named = orjson.loads(collector_line(a, names=True))
    for _, span in otlp.spans_of(named):  # int64 as JSON numbers, as lenient writers do
        span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
    assert {s["kind"] for _, s in otlp.spans_of(named)} == {"SPAN_KIND_INTERNAL", "SPAN_KIND_CLIENT"}
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(collector_line(b) + b'{"resourceSpans": [{"reso'))
    stdin = orjson.dumps(named) + b"\n\n"
    code, result = verdict(
        capsys, "-", str(gz), "--endpoint", http.url, "--protocol", "http/json", stdin=stdin
    )
    assert (code, result["files"], result["warnings"]) == (
        0,
        [file_verdict("<stdin>", 4), file_verdict(gz, 4)],
        [f"{gz}:2: the last line is cut short (25 bytes, no newline): skipped"],
    )
    by_name = {s["name"]: s for s in http.spans[:4]}
    assert (by_name["agent"]["kind"], by_name["ChatOpenAI"]["kind"]) == (1, 3)
    assert by_name["lookup_order"]["status"] == {"code": 2, "message": "order service timeout"}


def test_rebase_time_moves_the_newest_end_to_now_and_keeps_durations(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    before = time.time_ns()
    code, result = verdict(capsys, str(collector), str(tfgw_log), "--endpoint", http.url, "--rebase-time")
    assert code == 0
    original = {s["spanId"]: s for s in spans_in(collector / "traces.jsonl", tfgw_log)}
    received = http.spans
    newest = max(int(s["endTimeUnixNano"]) for s in received)
    assert before - 60 * 10**9 < newest <= time.time_ns()
    offset = newest - max(int(s["endTimeUnixNano"]) for s in original.values())

    def times(span: dict[str, Any], shift: int = 0) -> list[int]:
        events = [int(e["timeUnixNano"]) - shift for e in span.get("events", [])]
        return [int(span["startTimeUnixNano"]) - shift, int(span["endTimeUnixNano"]) - shift, *events]

    assert {s["spanId"]: times(s, offset) for s in received} == {k: times(s) for k, s in original.items()}
    assert result["time_range"]["end"][:16] == time.strftime("%Y-%m-%dT%H:%M", time.gmtime(newest / 1e9))


def test_new_ids_keep_parents_and_traces_and_differ_between_runs(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    runs = []
    for _ in range(2):
        http.reset()
        code, _ = verdict(capsys, str(collector), str(tfgw_log), "--endpoint", http.url, "--new-ids")
        assert code == 0
        runs.append(http.spans)
    original = spans_in(collector / "traces.jsonl", tfgw_log)

    def shape(spans: list[dict[str, Any]]) -> list[tuple[int, int | None, str]]:
        """Each span as (its trace's index, its parent's index or None, name): ids abstracted."""
        traces = {t: i for i, t in enumerate(dict.fromkeys(s["traceId"] for s in spans))}
        index = {(s["traceId"], s["spanId"]): i for i, s in enumerate(spans)}
        return [
            (traces[s["traceId"]], index.get((s["traceId"], s.get("parentSpanId", ""))), s["name"])
            for s in spans
        ]

    def links(spans: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Each link as (the linking span's name and trace index, the linked one's)."""
        traces = {t: i for i, t in enumerate(dict.fromkeys(s["traceId"] for s in spans))}
        names = {(s["traceId"], s["spanId"]): f"{s['name']}@{traces[s['traceId']]}" for s in spans}
        return [
            (names[s["traceId"], s["spanId"]], names[link["traceId"], link["spanId"]])
            for s in spans
            for link in s.get("links", [])
        ]

    # the trace split over two lines is still one trace; every parent and link resolves as before
    assert shape(runs[0]) == shape(runs[1]) == shape(original)
    assert (
        links(runs[0])
        == links(runs[1])
        == links(original)
        == [("agent@1", "agent@0"), ("agent@2", "agent@1")]
    )
    ids = [{s["spanId"] for s in spans} | {s["traceId"] for s in spans} for spans in (original, *runs)]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])


def test_project_override_and_exclusion_to_a_configured_arize_target(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, tfgw_log = inputs
    monkeypatch.setenv("ARIZE_API_KEY", "ak-replay-0123456789")
    with OtlpGrpcReceiver() as rx:
        Path("tfgw.toml").write_text(
            "[otel.targets.arize]\n"
            'kind = "arize"\n'
            f'endpoint = "{rx.url}"\n'
            'space_id = "U3BhY2U6OTk="\n'
            'api_key = "env:ARIZE_API_KEY"\n'
            'project = "from-config"\n'
        )
        code, result = verdict(
            capsys, str(collector), str(tfgw_log), "--to", "arize", "--project", "ci-replay",
            "--exclude-request-data",
        )  # fmt: skip
        requests = rx.requests
    assert (code, result["projects"], result["accepted"]) == (0, {"ci-replay": 21}, 21)
    assert {r.headers["api_key"] for r in requests} == {"ak-replay-0123456789"}
    resources = [res for r in requests for res in r.resources]
    assert {(res["openinference.project.name"], res["model_id"]) for res in resources} == {
        ("ci-replay", "ci-replay")
    }
    spans = [s for r in requests for s in r.spans]
    assert len(spans) == 21
    keys = {
        kv["key"] for s in spans for item in (s, *s.get("events", [])) for kv in item.get("attributes", [])
    }
    assert not {k for k in keys if is_content_key(k)}
    assert {"llm.token_count.total", "retrieval.documents.0.document.id", "tool.name"} <= keys
    for request in requests:
        assert not any(text.encode() in request.body for text in (*CONTENT, "Say hello"))


def test_without_project_the_files_keep_theirs(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    code, _ = verdict(capsys, *map(str, inputs), "--endpoint", http.url)
    projects = {res["openinference.project.name"] for r in http.requests for res in r.resources}
    assert (code, projects) == (0, {"support", "default"})


def test_dry_run_sends_nothing(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    code, result = verdict(
        capsys, str(collector), str(tfgw_log), "--endpoint", http.base_url, "--dry-run", "--project", "p"
    )
    assert (code, result, http.requests) == (
        0,
        {
            "ok": True,
            "dry_run": True,
            "target": "endpoint",
            "protocol": "http/protobuf",
            "endpoint": http.url,
            "spans": 21,
            "projects": {"p": 21},
            "time_range": TIME_RANGE,
            "files": [
                {"file": str(collector / "traces.jsonl"), "spans": 12},
                {"file": str(tfgw_log), "spans": 9},
            ],
            "warnings": [],
        },
        [],
    )


# -- bad input: exit 2, nothing sent -------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.update(spanId="AAAAAAAAUAM="),
            "spanId 'AAAAAAAAUAM=' is base64: OTLP/JSON ids are hex (0000000000005003)",
        ),
        (lambda s: s.update(kind="SERVER"), "kind 'SERVER' is not an integer 0..5 (or SPAN_KIND_*)"),
        (lambda s: s.pop("traceId"), "traceId is missing"),
        (
            lambda s: s["attributes"].append({"key": "n", "value": {"intValue": "1.5"}}),
            "attribute 'n': intValue '1.5' is not a valid intValue",
        ),
    ],
)
def test_a_bad_line_is_exit_2_naming_file_and_line(
    capsys: pytest.CaptureFixture[str],
    inputs: tuple[Path, Path],
    http: OtlpHttpReceiver,
    edit: Any,
    message: str,
) -> None:
    collector, tfgw_log = inputs
    lines = tfgw_log.read_bytes().splitlines()
    second = orjson.loads(lines[1])
    span = second["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    edit(span)
    tfgw_log.write_bytes(lines[0] + b"\n" + orjson.dumps(second) + b"\n")
    code, out, err = tfgw(capsys, "replay", str(collector), str(tfgw_log), "--endpoint", http.url)
    where = f"span 'POST /v1/chat/completions' (trace {samples.trace_id(2)})"
    if "traceId" in message:
        where = "span 'POST /v1/chat/completions'"
    assert (code, out, err, http.requests) == (2, "", f"tfgw: {tfgw_log}:2: {where}: {message}\n", [])


def test_a_line_that_is_not_json_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"resourceSpans": []}\n{"resourceSpans": [}\n')
    code, out, err = tfgw(capsys, "replay", str(path), "--endpoint", "http://127.0.0.1:9")
    assert (code, out, err) == (
        2,
        "",
        f"tfgw: {path}:2: not valid JSON: unexpected character, expected a JSON value at column 20\n",
    )


LOCAL = "http://127.0.0.1:9"
ENDPOINT_ERROR = "must be an http:// or https:// URL for protocol http/protobuf, got 'ftp://x'"
NEITHER = "give one of --to NAME or --endpoint URL"
WITH_TO = "--protocol and --header go with --endpoint; a --to target has its own"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--endpoint", LOCAL], "cannot read missing.jsonl: No such file or directory"),
        (["t.jsonl"], NEITHER),
        (["t.jsonl", "--to", "x", "--endpoint", LOCAL], NEITHER),
        (["t.jsonl", "--to", "x", "--header", "a=b"], WITH_TO),
        (["t.jsonl", "--endpoint", LOCAL, "--header", "secret"], "--header: expected K=V, got 'secret'"),
        (["t.jsonl", "--endpoint", "ftp://x"], f"--endpoint: {ENDPOINT_ERROR}"),
        (["t.jsonl", "--to", "nowhere"], "--to: no export target nowhere (have: none)"),
    ],
)  # fmt: skip
def test_bad_usage_is_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    Path("t.jsonl").write_bytes(b"")
    Path("tfgw.toml").write_text("")
    assert tfgw(capsys, "replay", *args) == (2, "", f"tfgw: {message}\n")


def test_an_unset_secret_of_the_chosen_target_is_exit_2(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARIZE_SPACE_ID", "U3BhY2U6OTk=")
    monkeypatch.delenv("ARIZE_API_KEY", raising=False)
    config = str(REPO / "configs" / "ci" / "tfgw.toml")  # MW_API_KEY, COLLECTOR_TOKEN unset: not needed
    code, out, err = tfgw(capsys, "replay", str(inputs[1]), "--config", config, "--to", "arize", "--dry-run")
    message = "--to arize: environment variable ARIZE_API_KEY is not set (the target's env:VAR secrets)"
    assert (code, out, err) == (2, "", f"tfgw: {message}\n")
    monkeypatch.setenv("ARIZE_API_KEY", "ak-0123456789")
    code, out, err = tfgw(capsys, "replay", str(inputs[1]), "--config", config, "--to", "arize", "--dry-run")
    assert (code, out.splitlines()[0], err) == (
        0,
        "dry run: would send 9 spans from 1 file to arize (grpc, otlp.arize.com:443)",
        "",
    )


def test_a_progress_bar_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    inputs: tuple[Path, Path],
    http: OtlpHttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)
    monkeypatch.setattr(replay_cli, "console", lambda stderr=False: terminal)
    code, out, _ = tfgw(capsys, "replay", *map(str, inputs), "--endpoint", http.url)
    assert (code, out.splitlines()[-1]) == (0, "ok: 21 of 21 spans accepted")
    assert "replaying" in screen.getvalue() and "21/21" in screen.getvalue()


# -- what the backend says -----------------------------------------------------------------------


def test_a_backend_failing_503_past_the_timeout_is_exit_1(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    http.fail_next(503, times=1000, message="overloaded")
    started = time.monotonic()
    code, result = verdict(capsys, str(collector), str(tfgw_log), "--endpoint", http.url, "--timeout", "0.5")
    assert time.monotonic() - started < 5
    assert len(http.requests) >= 2
    assert (code, result["ok"], result["files"], result["failures"], result["unreachable"]) == (
        1,
        False,
        [file_verdict(collector / "traces.jsonl", 12, sent=0), file_verdict(tfgw_log, 9, sent=0)],
        [],
        f"{collector / 'traces.jsonl'}: still failing after 0.5 s: 503: overloaded",
    )


def test_a_400_rejection_is_exit_1_with_the_backends_message(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path], http: OtlpHttpReceiver
) -> None:
    collector, tfgw_log = inputs
    http.fail_next(400, message="span name too long")
    code, out, err = tfgw(capsys, "replay", str(collector), str(tfgw_log), "--endpoint", http.url)
    assert (code, out.splitlines()[-2:], err) == (
        1,
        [
            f"rejected: {collector / 'traces.jsonl'}: 400: span name too long (12 spans)",
            "FAILED: 9 of 21 spans accepted",
        ],
        "",
    )
    code, result = verdict(capsys, str(collector), "--endpoint", http.url, "--protocol", "http/json")
    assert (code, result["accepted"]) == (0, 12)  # the rejection was not retried: one request


def test_a_partial_success_is_exit_1_with_counts(
    capsys: pytest.CaptureFixture[str], inputs: tuple[Path, Path]
) -> None:
    collector, tfgw_log = inputs
    with OtlpGrpcReceiver() as rx:
        rx.fail_next(grpc.StatusCode.UNAVAILABLE, "restarting")  # retried, then partial success
        rx.partial_success(3, "3 spans too old")
        code, result = verdict(
            capsys, str(collector), str(tfgw_log), "--endpoint", rx.url, "--protocol", "grpc"
        )
        assert [r.status for r in rx.requests] == ["UNAVAILABLE", "OK", "OK"]
    assert (code, {k: result[k] for k in ("ok", "sent", "accepted", "rejected")}) == (
        1,
        {"ok": False, "sent": 21, "accepted": 18, "rejected": 3},
    )
    assert (result["files"], result["failures"]) == (
        [file_verdict(collector / "traces.jsonl", 12, rejected=3), file_verdict(tfgw_log, 9)],
        [{"file": str(collector / "traces.jsonl"), "status": "OK", "message": "3 spans too old", "spans": 3}],
    )


# -- the CI recipe -------------------------------------------------------------------------------


def test_the_ci_config_resolves_its_targets_from_ci_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ARIZE_SPACE_ID", "ARIZE_API_KEY", "MW_API_KEY", "COLLECTOR_TOKEN"):
        monkeypatch.setenv(var, f"{var.lower()}-0123456789")
    settings = load(REPO / "configs" / "ci" / "tfgw.toml")
    targets = {name: configured_target(settings, name) for name in ("arize", "middleware", "collector")}
    assert {name: (t.endpoint, t.project, t.exclude_request_data) for name, t in targets.items()} == {
        "arize": ("otlp.arize.com:443", "tfgw-ci", True),
        "middleware": ("https://my-uid.middleware.io:443/v1/traces", "", False),
        "collector": ("http://127.0.0.1:4318/v1/traces", "", False),
    }
    assert targets["collector"].headers == {"authorization": "collector_token-0123456789"}


def test_the_ci_shell_recipe_checks_and_replays(tmp_path: Path, http: OtlpHttpReceiver) -> None:
    script = REPO / "configs" / "ci" / "replay-check.sh"
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert (parsed.returncode, parsed.stderr) == (0, "")
    traces = tmp_path / "traces"
    traces.mkdir()
    lines = [samples.trace_line(samples.Request(1, stream=True)), samples.trace_line(samples.Request(2))]
    (traces / "tfgw.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "REPLAY_ENDPOINT": http.base_url,
        "REPLAY_TOKEN": "ci-token-0123456789",
        "REPLAY_VERDICT": str(tmp_path / "verdict.json"),
    }
    done = subprocess.run(
        ["bash", str(script), str(traces)], capture_output=True, text=True, env=env, check=False, cwd=tmp_path
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    check, replayed = done.stdout.splitlines()
    assert check == "checked 9 spans in 2 traces from 1 file: 0 errors, 0 warnings"
    assert {k: orjson.loads(replayed)[k] for k in ("ok", "spans", "accepted")} == {
        "ok": True,
        "spans": 9,
        "accepted": 9,
    }
    assert (tmp_path / "verdict.json").read_text() == replayed + "\n"
    assert {r.headers["authorization"] for r in http.requests} == {"ci-token-0123456789"}
    workflow = (REPO / "configs" / "ci" / "github-actions.yml").read_text()
    assert "tfgw traces check traces/" in workflow and "tfgw replay traces/" in workflow
