"""The trace log's writer: segments, rows, rotation, retention, and failures that never reach a request."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import orjson
import pytest

from tests.fakes.clock import Clock
from tfgw.config import TracingSettings
from tfgw.tracing import log as trace_log
from tfgw.tracing.log import TraceLog, segment_name
from tfgw.tracing.otlp import spans_of
from tfgw.tracing.rows import summarize
from tfgw.tracing.segments import dropped_spans
from tfgw.tracing.spans import RequestTrace

DAY = 86400.0
T0 = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC


def make_trace(sink, name: str = "POST /v1/chat/completions") -> RequestTrace:
    trace = RequestTrace(name, sink)
    trace.child("auth").close()
    trace.root.attributes["http.response.status_code"] = 200
    return trace


def write(log: TraceLog, count: int = 1) -> list[str]:
    ids = []
    for _ in range(count):
        trace = make_trace(log.submit)
        trace.finish()
        ids.append(trace.trace_id)
    assert log.flush()
    return ids


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("tfgw-*.jsonl"))


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def settings(tmp_path: Path) -> TracingSettings:
    return TracingSettings(dir=str(tmp_path / "traces"), project="unit", retention_days=7)


def test_one_line_per_request_and_a_row_per_line(settings: TracingSettings) -> None:
    log = TraceLog(settings, clock=Clock(T0))
    log.start()
    ids = write(log, 3)
    log.close()
    (segment,) = segments(settings.path)
    assert segment.name == f"{segment_name(T0, os.getpid(), 1)}.jsonl"
    assert segment.name.startswith("tfgw-20261118-110640-")
    data = lines(segment)
    assert [line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] for line in data] == ids
    rows = lines(segment.with_suffix(".rows"))
    ends = [len(line) + 1 for line in segment.read_bytes().splitlines()]
    assert [row.pop("end") for row in rows] == [sum(ends[: i + 1]) for i in range(3)]
    assert rows == [summarize(spans_of(line)) for line in data]
    assert log.stats.as_dict() == {
        "written": 3,
        "dropped": 0,
        "write_errors": 0,
        "encode_errors": 0,
        "last_error": None,
        "segment": segment.name,
    }


def test_segments_rotate_by_size_and_by_day(settings: TracingSettings) -> None:
    clock = Clock(T0)
    log = TraceLog(settings, clock=clock)
    log.start()
    write(log)
    log.max_bytes = int(log.stats.written and (settings.path / log.stats.segment).stat().st_size * 2.5)
    for _ in range(4):  # two lines fit in a segment
        write(log)
    clock.now += DAY
    write(log)
    log.close()
    names = [p.name for p in segments(settings.path)]
    assert [len(lines(p)) for p in segments(settings.path)] == [2, 2, 1, 1]
    assert [n.split("-")[1] for n in names] == ["20261118"] * 3 + ["20261119"]
    assert [n.rsplit("-", 1)[1] for n in names] == ["0001.jsonl", "0002.jsonl", "0003.jsonl", "0004.jsonl"]


def test_retention_deletes_old_tfgw_segments_only(settings: TracingSettings) -> None:
    settings.path.mkdir(parents=True)
    old = [
        settings.path / "tfgw-20261001-000000-1-0001.jsonl",
        settings.path / "tfgw-20261001-000000-1-0001.rows",
    ]
    recent = settings.path / "tfgw-20261116-000000-1-0001.jsonl"
    foreign = settings.path / "collector-export.jsonl"
    for path in (*old, recent, foreign):
        path.write_text("{}\n")
        os.utime(path, (T0 - 30 * DAY, T0 - 30 * DAY) if path != recent else (T0 - DAY, T0 - DAY))
    os.utime(foreign, (T0 - 30 * DAY, T0 - 30 * DAY))
    log = TraceLog(settings, clock=Clock(T0))
    log.start()
    write(log)
    log.close()
    assert sorted(p.name for p in settings.path.iterdir()) == sorted(
        [recent.name, foreign.name, *(f"{segment_name(T0, os.getpid(), 1)}{s}" for s in (".jsonl", ".rows"))]
    )


def test_a_full_disk_is_counted_and_leaves_no_partial_line(
    settings: TracingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = TraceLog(settings, clock=Clock(T0))
    log.start()
    write(log)
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 20:
            return real_write(fd, bytes(data[: len(data) // 2]))  # the disk fills up half-way
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trace_log.os, "write", half_then_full)
    write(log, 2)
    monkeypatch.setattr(trace_log.os, "write", real_write)
    write(log)
    log.close()
    (segment,) = segments(settings.path)  # the half-written lines were cut back: no fresh segment
    assert len(lines(segment)) == 2
    rows = lines(segment.with_suffix(".rows"))
    assert [row["end"] for row in rows] == [
        len(segment.read_bytes().splitlines()[0]) + 1,
        segment.stat().st_size,
    ]
    stats = log.stats.as_dict()
    assert (stats["written"], stats["dropped"], stats["write_errors"]) == (2, 2, 2)
    assert stats["last_error"] == "OSError: [Errno 28] No space left on device"


def test_lines_whose_rows_cannot_be_written_are_cut_back_with_them(
    settings: TracingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = TraceLog(settings, clock=Clock(T0))
    log.start()
    first = write(log)
    real_write = os.write

    def rows_full(fd: int, data: bytes | memoryview) -> int:
        if fd == log._rows:  # the lines went in, the disk filled up before their rows
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(trace_log.os, "write", rows_full)
    write(log, 2)
    monkeypatch.setattr(trace_log.os, "write", real_write)
    last = write(log)
    log.close()
    (segment,) = segments(settings.path)
    assert [{span["traceId"] for _, span in spans_of(line)} for line in lines(segment)] == [
        {trace_id} for trace_id in first + last
    ]
    assert [row["trace_id"] for row in lines(segment.with_suffix(".rows"))] == first + last
    stats = log.stats.as_dict()
    assert (stats["written"], stats["dropped"], stats["write_errors"]) == (2, 2, 2)  # a batch a trace here


def test_in_an_event_loop_traces_are_encoded_between_requests_and_written_soon(
    settings: TracingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_log, "MAX_PENDING", 3)

    async def serve() -> tuple[int, int, int]:
        log = TraceLog(settings)
        log.start()
        for _ in range(5):  # a burst: nothing is encoded on the request path, the backlog is bounded
            make_trace(log.submit).finish()
        backlog = (log.stats.dropped, len(log._pending))
        assert backlog == (2, 3)
        for _ in range(100):  # the loop encodes, and hands over within HANDOFF_S
            await asyncio.sleep(0.01)
            if log.stats.written == 3:
                break
        written = log.stats.written
        log.close()
        return written, log.stats.dropped, len(lines(segments(settings.path)[0]))

    assert asyncio.run(serve()) == (3, 2, 3)


def test_a_step_runs_over_its_time_budget_until_no_more_than_max_waiting_are_left(
    settings: TracingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a load the 0.5 ms budget cannot keep up with, the backlog must not grow: a step leaves
    at most MAX_WAITING traces; under it, the time budget alone says how many go."""
    monkeypatch.setattr(trace_log, "MAX_WAITING", 4)

    async def serve() -> list[int]:
        log = TraceLog(settings)
        log.start()
        for _ in range(10):
            make_trace(log.submit).finish()
        waiting = []
        for budget in (0.0, 0.0, 1.0):  # none, none, then a second: enough for the rest
            monkeypatch.setattr(trace_log, "STEP_S", budget)
            log._encode_step()
            waiting.append(len(log._pending))
        log.close()
        return waiting

    assert asyncio.run(serve()) == [4, 4, 0]


def test_an_encoding_bug_loses_one_trace_not_the_log(settings: TracingSettings) -> None:
    log = TraceLog(settings)
    log.start()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("a bug")

    bad = make_trace(log.submit)
    bad.root.attributes["tfgw.bad"] = Unprintable()  # a bug in the gateway: counted, not raised
    bad.finish()
    write(log)
    log.close()
    assert (log.stats.written, log.stats.encode_errors, log.stats.dropped) == (1, 1, 1)


def test_retention_keeps_what_an_export_target_has_not_delivered(settings: TracingSettings) -> None:
    settings.path.mkdir(parents=True)
    delivered, waiting = (settings.path / f"tfgw-2026100{d}-000000-1-0001.jsonl" for d in (1, 2))
    for path in (delivered, waiting):
        path.write_bytes(b"{}\n" * 4)
        os.utime(path, (T0 - 30 * DAY, T0 - 30 * DAY))
    cursors = settings.path / ".cursors"
    cursors.mkdir()
    offsets = {delivered.name: 12, waiting.name: 6}  # half of `waiting` is still to be sent
    (cursors / "arize.json").write_bytes(orjson.dumps({"offsets": offsets}))
    log = TraceLog(settings, clock=Clock(T0), targets=["arize"])
    log.start()
    write(log)
    log.close()
    assert sorted(p.name for p in settings.path.glob("*.jsonl")) == sorted(
        [waiting.name, f"{segment_name(T0, os.getpid(), 1)}.jsonl"]
    )


def test_over_the_disk_cap_the_oldest_undelivered_segment_goes_and_is_counted(
    tmp_path: Path,
) -> None:
    settings = TracingSettings(dir=str(tmp_path / "traces"), retention_days=0, max_disk_mb=1)
    settings.path.mkdir(parents=True)
    old = settings.path / "tfgw-20261001-000000-1-0001.jsonl"
    line = b"x" * 700_000 + b"\n"
    old.write_bytes(line)
    old.with_suffix(".rows").write_bytes(orjson.dumps({"spans": 5, "end": len(line)}) + b"\n")
    newer = settings.path / "tfgw-20261002-000000-1-0001.jsonl"
    newer.write_bytes(line)
    log = TraceLog(settings, clock=Clock(T0), targets=["arize", "mw"])
    (settings.path / ".cursors").mkdir()
    (settings.path / ".cursors" / "arize.json").write_bytes(orjson.dumps({"offsets": {}}))
    (settings.path / ".cursors" / "mw.json").write_bytes(orjson.dumps({"offsets": {old.name: len(line)}}))
    log.start()
    write(log)
    log.close()
    assert not old.exists() and newer.exists()
    assert dropped_spans(settings.path) == {"arize": 5}


def test_what_a_writer_drops_is_saved_for_the_metrics_and_nothing_while_nothing_is(
    settings: TracingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfgw.tracing.segments import writer_drops

    log = TraceLog(settings, clock=Clock(T0))
    log.start()
    write(log, 2)
    assert not (settings.path / ".writers").exists()  # no drop, no file
    real = log.encoder.encode

    def broken(trace: RequestTrace) -> object:
        raise ValueError("a bug")

    monkeypatch.setattr(log.encoder, "encode", broken)
    write(log, 3)  # three encoding errors: counted, and saved at the next hand-over (the flush)
    monkeypatch.setattr(log.encoder, "encode", real)
    log.stats.dropped_backlog += 2  # as `submit` counts a full backlog
    write(log, 1)
    log.close()
    saved = orjson.loads((settings.path / ".writers" / f"{os.getpid()}.json").read_bytes())
    assert (saved.pop("pid"), saved.pop("time") > 0) == (os.getpid(), True)
    assert saved == {"backlog": 2, "write_failed": 0, "encode_error": 3}
    # the deriver sums every writer's file since a start, and leaves out older runs' files
    (settings.path / ".writers" / "1.json").write_bytes(
        orjson.dumps({"pid": 1, "time": 10, "backlog": 0, "write_failed": 7, "encode_error": 0})
    )
    assert writer_drops(settings.path, since_ns=0) == {"backlog": 2, "write_failed": 7, "encode_error": 3}
    assert writer_drops(settings.path, since_ns=11) == {"backlog": 2, "write_failed": 0, "encode_error": 3}
