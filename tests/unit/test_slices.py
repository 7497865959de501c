"""The exporter's work in slices of CPU (`tfgw.slices`): when a thread hands its core over, and
that each of the exporter's long loops does, between every two pieces of work."""

from __future__ import annotations

import gzip
import random
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.export.target_stub import TargetStub
from tests.fakes.clock import Clock
from tests.samples import T0, Request, segment_name, trace_line
from tfgw import slices
from tfgw.export import send, worker
from tfgw.export.cursor import Pending
from tfgw.metrics.follow import RowsFollower


def in_a_thread(run: Any) -> None:
    """`run()` in a fresh thread: its `give_way` state is its own, as each exporter thread's is."""
    failed: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    if failed:
        raise failed[0]


def test_a_thread_hands_its_core_over_once_a_slice_has_passed_and_not_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, handed = Clock(), []
    monkeypatch.setattr(slices.time, "perf_counter", clock)
    monkeypatch.setattr(slices, "_sched_yield", lambda: handed.append(clock.now))

    def run() -> None:
        slices.give_way()  # a thread that never gave way is due at once
        clock.now += slices.SLICE_S / 2
        slices.give_way()
        clock.now += slices.SLICE_S / 2
        slices.give_way()  # a whole slice since the last hand-over
        clock.now += slices.SLICE_S * 0.9
        slices.give_way()

    in_a_thread(run)
    assert handed == [1000.0, 1000.0 + slices.SLICE_S]


@pytest.fixture
def every_call_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each `give_way()` made by the exporter's modules, counted (the calls, not the hand-overs)."""
    calls: list[int] = []
    for module in (send, worker):
        monkeypatch.setattr(module, "give_way", lambda: calls.append(1))
    monkeypatch.setattr("tfgw.metrics.follow.give_way", lambda: calls.append(1))
    return calls


def test_a_body_is_gzipped_a_block_at_a_time_into_the_bytes_gzip_compress_makes(
    every_call_counted: list[int],
) -> None:
    rng = random.Random(7)
    words = [rng.randbytes(rng.randrange(2, 12)).hex().encode() for _ in range(500)]
    body = b" ".join(rng.choice(words) for _ in range(60_000))  # ~0.8 MB, some of it repeated
    blocks = -(-len(body) // send.GZIP_BLOCK)
    assert blocks > 4

    zipped = send.gzipped(body)

    assert zipped == gzip.compress(body, compresslevel=send.GZIP_LEVEL, mtime=0)
    assert gzip.decompress(zipped) == body
    assert len(every_call_counted) == blocks
    assert send.gzipped(b"") == gzip.compress(b"", compresslevel=send.GZIP_LEVEL, mtime=0)


def test_the_exporter_gives_way_between_every_two_lines_it_encodes(
    tmp_path: Path, every_call_counted: list[int]
) -> None:
    raw = [orjson.dumps(trace_line(Request(n))) for n in range(1, 13)]
    exporter = worker.TargetExporter(TargetStub("http://127.0.0.1:9/v1/traces"), tmp_path, threading.Event())
    pending = [Pending("a.jsonl", 0, 1, raw[:5]), Pending("b.jsonl", 0, 1, raw[5:])]

    prepared = list(exporter._prepared(pending))

    assert [line["resourceSpans"] for line in prepared] == [orjson.loads(r)["resourceSpans"] for r in raw]
    assert len(every_call_counted) == len(raw)


def test_the_metrics_give_way_between_every_two_rows_they_read(
    tmp_path: Path, every_call_counted: list[int]
) -> None:
    rows = [{"trace_id": f"{n:032x}", "spans": 4, "end": n * 100} for n in range(1, 8)]
    segment = tmp_path / segment_name(T0)
    segment.with_suffix(".rows").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))

    assert list(RowsFollower(tmp_path, {}).poll()) == rows
    assert len(every_call_counted) == len(rows)
