"""The trace log's read side: rows, traces, one trace by id, and following, on logs built by
`tests.samples` exactly as the gateway lays them out."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.samples import (
    MS,
    T0,
    Failure,
    Request,
    row_of,
    segment_name,
    trace_id,
    trace_line,
    write_log,
    write_segment,
)
from tfgw.tracing import otlp, reader
from tfgw.tracing.reader import (
    Follower,
    TraceLogError,
    decode_span,
    file_traces,
    find_trace,
    newest_rows,
    read_rows,
    read_traces,
    segments,
)
from tfgw.tracing.stats import aggregate, percentile, summarize_groups

LINES = [
    trace_line(Request(1, start=T0)),
    trace_line(
        Request(2, start=T0 + 1000 * MS, model="gpt-4o-mini", stream=True, ttft_ms=95.0, tokens=(30, 120))
    ),
    trace_line(
        Request(
            3,
            start=T0 + 2000 * MS,
            provider="anthropic",
            route_model="claude-sonnet-4-5",
            failures=(Failure(),),
            duration_ms=1500.0,
        )
    ),
    trace_line(Request(4, start=T0 + 3000 * MS, status=502, failures=(Failure(), Failure("anthropic")))),
    trace_line(
        Request(
            5,
            start=T0 + 4000 * MS,
            embeddings=True,
            model="text-embedding-3-small",
            tokens=(8, 0),
            key="batch",
            parent_span_id="00f067aa0ba902b7",
        )
    ),
]
ROWS = [row_of(line) for line in LINES]


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def json_error(data: bytes) -> str:
    """orjson's own words for what is wrong (they differ between its versions)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    raise AssertionError(f"{data!r} is valid JSON")


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


def test_the_public_surface() -> None:
    assert reader.__all__ == [
        "Follower",
        "Trace",
        "TraceLogError",
        "decode_span",
        "file_rows",
        "file_traces",
        "find_trace",
        "is_segment",
        "line_traces",
        "newest_rows",
        "read_rows",
        "read_traces",
        "segments",
        "warn_stderr",
    ]


# -- rows ----------------------------------------------------------------------------------------


def test_rows_are_the_summaries_of_every_line_in_file_order(tmp_path: Path) -> None:
    paths = write_log(tmp_path, LINES, per_segment=2)
    assert [p.name for p in paths] == [
        "tfgw-20240101-000000-4242-0001.jsonl",
        "tfgw-20240101-000002-4242-0002.jsonl",
        "tfgw-20240101-000004-4242-0003.jsonl",
    ]
    assert segments(tmp_path) == paths
    warn = Warnings()
    assert list(read_rows(tmp_path, warn=warn)) == ROWS
    assert warn == []


@pytest.mark.parametrize("damage", ["lagging", "empty", "missing", "bad row", "torn row", "runs ahead"])
def test_rows_files_that_lag_or_are_damaged_give_the_same_rows(tmp_path: Path, damage: str) -> None:
    segment = write_segment(tmp_path, LINES, rows=2 if damage == "lagging" else None)
    rows_file = segment.with_suffix(".rows")
    stored = rows_file.read_bytes().splitlines(keepends=True)
    if damage == "empty":
        rows_file.write_bytes(b"")
    elif damage == "missing":
        rows_file.unlink()
    elif damage == "bad row":
        rows_file.write_bytes(b"".join([*stored[:2], b"{not json\n", *stored[3:]]))
    elif damage == "torn row":
        rows_file.write_bytes(b"".join(stored[:3]) + stored[3][:20])
    elif damage == "runs ahead":
        row = orjson.loads(stored[4])
        rows_file.write_bytes(b"".join(stored[:4]) + orjson.dumps({**row, "end": row["end"] + 10}) + b"\n")
    warn = Warnings()
    assert list(read_rows(tmp_path, warn=warn)) == ROWS
    expected = {
        "bad row": [f"{rows_file}:3: bad row; reading the segment from its line 3"],
        "runs ahead": [f"{rows_file}:5: bad row; reading the segment from its line 5"],
    }
    assert warn == expected.get(damage, [])


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    segment = write_segment(tmp_path, LINES[:2])
    with segment.open("ab") as f:
        f.write(orjson.dumps(LINES[2])[:100])
    warn = Warnings()
    assert list(read_rows(tmp_path, warn=warn)) == ROWS[:2]
    assert warn == [f"{segment}:3: torn last line skipped (no newline at the end: a crash mid-write?)"]
    segment.with_suffix(".rows").unlink()
    assert [t.trace_id for t in read_traces(tmp_path, warn=warn)] == [trace_id(1), trace_id(2)]
    assert len(warn) == 2


def test_bad_lines_in_the_middle_are_skipped_with_a_warning(tmp_path: Path) -> None:
    segment = tmp_path / segment_name(T0)
    segment.write_bytes(
        orjson.dumps(LINES[0])
        + b"\n{oops\n\n[1, 2]\n"
        + b'{"resourceSpans": 7}\n'
        + orjson.dumps(LINES[1])
        + b"\n"
    )
    warn = Warnings()
    assert list(read_rows(tmp_path, warn=warn)) == ROWS[:2]
    assert warn == [
        f"{segment}:2: invalid JSON, line skipped ({json_error(b'{oops')})",
        f"{segment}:4: not an OTLP/JSON object, line skipped",
        f"{segment}:5: not an OTLP/JSON trace request, line skipped",
    ]


def collector_lines(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """As the Collector's file exporter may write them: trace a and half of b on one line, the rest
    of b on the next; timestamps as JSON numbers (OTLP/JSON readers accept both)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for line in (a, b):
        for _, span in otlp.spans_of(line):
            span["startTimeUnixNano"] = int(span["startTimeUnixNano"])  # type: ignore[index]
    a_rs, b_rs = a["resourceSpans"][0], b["resourceSpans"][0]
    b_spans = b_rs["scopeSpans"][0]["spans"]
    first = {**b_rs, "scopeSpans": [{**b_rs["scopeSpans"][0], "spans": b_spans[:2]}]}
    rest = {**b_rs, "scopeSpans": [{**b_rs["scopeSpans"][0], "spans": b_spans[2:]}]}
    return [{"resourceSpans": [a_rs, first]}, {"resourceSpans": [rest]}]


def test_a_foreign_file_is_grouped_by_trace_id(tmp_path: Path) -> None:
    foreign = tmp_path / "otel-collector.jsonl"
    foreign.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in collector_lines(LINES[0], LINES[2])))
    traces = list(file_traces(foreign))
    assert [(t.trace_id, t.line, len(t.spans)) for t in traces] == [(trace_id(1), 1, 4), (trace_id(3), 1, 5)]
    assert list(read_rows(tmp_path)) == [ROWS[0], ROWS[2]]
    found = find_trace(tmp_path, trace_id(3)[:8])
    assert found is not None
    assert [span["spanId"] for _, span in found.spans] == [
        span["spanId"] for _, span in otlp.spans_of(LINES[2])
    ]


def test_a_missing_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TraceLogError) as caught:
        list(read_rows(tmp_path / "nowhere"))
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        f"{tmp_path / 'nowhere'}: no trace log here (pass --dir, or set [tracing] dir in the config)"
    )


# -- newest rows ---------------------------------------------------------------------------------


def test_newest_rows_are_sorted_filtered_and_limited(tmp_path: Path) -> None:
    write_log(tmp_path, LINES, per_segment=2)
    assert newest_rows(tmp_path, 50) == ROWS[::-1]
    assert newest_rows(tmp_path, 2) == [ROWS[4], ROWS[3]]
    assert newest_rows(tmp_path, 50, since_ns=T0 + 1500 * MS) == [ROWS[4], ROWS[3], ROWS[2]]
    errors = newest_rows(tmp_path, 50, keep=lambda row: row["status"] == "error")
    assert errors == [ROWS[3]]


def test_newest_rows_stop_at_files_too_old_to_matter(tmp_path: Path) -> None:
    """Workers' segments interleave in time; the mtime of a file bounds its rows' start times."""
    old, a, b = (
        write_segment(
            tmp_path, [trace_line(Request(9, start=T0 - 86400_000 * MS))], name=segment_name(T0, 1, 1)
        ),
        write_segment(tmp_path, [LINES[0], LINES[2], LINES[4]], name=segment_name(T0, 2, 1)),
        write_segment(tmp_path, [LINES[1], LINES[3]], name=segment_name(T0, 3, 1)),
    )
    with old.open("ab") as f:
        f.write(b"{torn")
    set_mtime(old, T0 - 86000_000 * MS)
    set_mtime(a, T0 + 5000 * MS)
    set_mtime(b, T0 + 4000 * MS)
    warn = Warnings()
    assert newest_rows(tmp_path, 3, warn=warn) == [ROWS[4], ROWS[3], ROWS[2]]
    assert newest_rows(tmp_path, 5, since_ns=T0 - 1000 * MS, warn=warn) == ROWS[::-1]
    assert warn == []  # the old segment was never opened
    assert len(newest_rows(tmp_path, 6, warn=warn)) == 6
    assert warn == [f"{old}:2: torn last line skipped (no newline at the end: a crash mid-write?)"]


# -- one trace -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [None, 1, 0])
def test_find_trace_by_id_or_prefix(tmp_path: Path, rows: int | None) -> None:
    segment = write_segment(tmp_path, LINES, rows=rows)
    for n, line in enumerate(LINES, 1):
        for query in (trace_id(n), trace_id(n)[:8], trace_id(n)[:12].upper()):
            found = find_trace(tmp_path, query)
            assert found is not None
            assert (found.trace_id, found.file, found.line) == (trace_id(n), segment, n)
            assert list(found.spans) == list(otlp.spans_of(line))
    assert find_trace(tmp_path, "ffffffff") is None


def test_find_trace_reads_the_newest_file_first(tmp_path: Path) -> None:
    old = write_segment(tmp_path, LINES[:1], name=segment_name(T0, seq=1))
    new = write_segment(tmp_path, LINES[:1], name=segment_name(T0, seq=2))
    set_mtime(old, T0)
    set_mtime(new, T0 + MS)
    found = find_trace(tmp_path, trace_id(1))
    assert found is not None and found.file == new


def test_decode_span_is_flat_and_decoded() -> None:
    res, span = list(otlp.spans_of(LINES[3]))[3]
    assert decode_span(res, span) == {
        "trace_id": trace_id(4),
        "span_id": span["spanId"],
        "parent_span_id": next(otlp.spans_of(LINES[3]))[1]["spanId"],
        "name": "chat gpt-4o",
        "kind": "CLIENT",
        "start": T0 + 3000 * MS + 300_000,
        "end": T0 + 3000 * MS + 50_300_000,
        "duration_ms": 50.0,
        "status": "error",
        "status_message": "no answer within 30.0 s",
        "attributes": {
            "openinference.span.kind": "LLM",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "server.address": "api.openai.com",
            "server.port": 443,
            "llm.provider": "openai",
            "llm.system": "openai",
            "input.value": '{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}',
            "input.mime_type": "application/json",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hello",
            "tfgw.route.provider": "openai",
            "tfgw.route.model": "gpt-4o",
            "tfgw.route.attempt": 1,
            "error.type": "provider_timeout",
        },
        "events": [
            {
                "name": "exception",
                "time": T0 + 3000 * MS + 50_300_000,
                "attributes": {
                    "exception.type": "tfgw.errors.ProviderTimeoutError",
                    "exception.message": "no answer within 30.0 s",
                    "exception.stacktrace": "Traceback (most recent call last):\n  ...\n",
                },
            }
        ],
        "resource": {
            "service.name": "tfgw",
            "service.version": "0.1.0",
            "openinference.project.name": "default",
        },
    }


# -- following -----------------------------------------------------------------------------------


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_follower_starts_at_the_end_and_waits_for_complete_lines(tmp_path: Path) -> None:
    segment = write_segment(tmp_path, LINES[:2])
    partial = orjson.dumps(LINES[2]) + b"\n"
    append(segment, partial[:50])  # being written when the follower starts
    warn = Warnings()
    follower = Follower(tmp_path, warn=warn)
    assert list(follower.poll()) == []
    append(segment, partial[50:-1])
    assert list(follower.poll()) == []
    append(segment, b"\n" + orjson.dumps(LINES[3]) + b"\n{bad\n")
    traces = list(follower.poll())
    assert [(t.trace_id, t.line, t.row()) for t in traces] == [
        (trace_id(3), 3, ROWS[2]),
        (trace_id(4), 4, ROWS[3]),
    ]
    assert warn == [f"{segment}:5: invalid JSON, line skipped ({json_error(b'{bad')})"]
    second = write_segment(tmp_path, LINES[4:], name=segment_name(T0, seq=2))
    assert [(t.file, t.row()) for t in follower.poll()] == [(second, ROWS[4])]
    assert list(follower.poll()) == []


def test_follower_waits_for_a_log_that_does_not_exist_yet_as_tail_F_does(tmp_path: Path) -> None:
    log = tmp_path / "traces"
    follower = Follower(log)
    assert (list(follower.poll()), follower.present) == ([], False)
    first = write_segment(log, LINES[:2])  # appears after the follower started: read from its start
    assert ([t.row() for t in follower.poll()], follower.present) == (ROWS[:2], True)
    second = write_segment(log, LINES[2:3], name=segment_name(T0, seq=2))  # a rotation
    append(first, orjson.dumps(LINES[3]) + b"\n")  # the old segment's last line, written after it
    assert sorted((t.file.name, t.row()["trace_id"]) for t in follower.poll()) == [
        (first.name, trace_id(4)),
        (second.name, trace_id(3)),
    ]
    for path in log.iterdir():
        path.unlink()
    log.rmdir()
    assert (list(follower.poll()), follower.present) == ([], False)
    write_segment(log, LINES[4:], name=second.name)  # back, under a name seen before: new again
    assert ([t.row() for t in follower.poll()], follower.present) == (ROWS[4:], True)


def test_follower_of_a_path_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(TraceLogError, match="cannot read the trace log"):
        Follower(path)


def test_follower_from_start_and_replaced_files(tmp_path: Path) -> None:
    segment = write_segment(tmp_path, LINES[:3])
    follower = Follower(tmp_path, from_start=True)
    assert [t.row() for t in follower.poll()] == ROWS[:3]
    write_segment(tmp_path, LINES[3:4], name=segment.name)  # shorter: a new file under the old name
    assert [t.row() for t in follower.poll()] == ROWS[3:4]
    segment.unlink()
    assert list(follower.poll()) == []


# -- stats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], (None, None, None)),
        ([5.0], (5.0, 5.0, 5.0)),
        ([float(i) for i in range(1, 101)], (50.0, 95.0, 99.0)),
        ([float(i) for i in range(1, 21)], (10.0, 19.0, 20.0)),
        ([1.0, 2.0, 3.0, 4.0], (2.0, 4.0, 4.0)),
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], expected: tuple[float | None, ...]) -> None:
    assert tuple(percentile(values, p) for p in (50, 95, 99)) == expected


def test_stats_by_provider() -> None:
    report = summarize_groups(aggregate(ROWS, "provider"), "provider")
    single = {"p50": 800.0, "p95": 800.0, "p99": 800.0}
    assert report == {
        "all": {
            "requests": 5,
            "errors": 1,
            "error_rate": 0.2,
            "latency_ms": {"p50": 800.0, "p95": 1500.0, "p99": 1500.0},
            "ttft_ms": {"p50": 95.0, "p95": 95.0},
            "streams": 1,
            "tokens_in": 62,
            "tokens_out": 216,
            "cost": 0.0010965,
        },
        "groups": [
            {
                "provider": "openai",
                "requests": 4,
                "errors": 1,
                "error_rate": 0.25,
                "latency_ms": single,
                "ttft_ms": {"p50": 95.0, "p95": 95.0},
                "streams": 1,
                "tokens_in": 50,
                "tokens_out": 168,
                "cost": 0.0005865,
            },
            {
                "provider": "anthropic",
                "requests": 1,
                "errors": 0,
                "error_rate": 0.0,
                "latency_ms": {"p50": 1500.0, "p95": 1500.0, "p99": 1500.0},
                "ttft_ms": {"p50": None, "p95": None},
                "streams": 0,
                "tokens_in": 12,
                "tokens_out": 48,
                "cost": 0.00051,
            },
        ],
    }
