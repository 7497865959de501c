"""One target's exporter thread against a real receiver on loopback: what it reads from the log,
what it sends, what its cursor says. Whole values; polls with a deadline, never sleeps to wait."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.export.target_stub import TargetStub
from tests.fakes.otlp import OtlpHttpReceiver, canonical
from tests.samples import T0, Failure, Request, segment_name, trace_line
from tfgw.export.cursor import TORN_AFTER_S, Cursor, Pending
from tfgw.export.encode import with_project
from tfgw.export.worker import TargetExporter
from tfgw.tracing import otlp


def lines(count: int) -> list[dict[str, Any]]:
    return [
        trace_line(Request(n, stream=n % 2 == 0, failures=(Failure(),) * (n % 3 == 0)))
        for n in range(1, count + 1)
    ]


def write(directory: Path, raw: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / segment_name(T0)
    path.write_bytes(b"".join(raw))
    return path


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_cursor_reads_whole_lines_and_leaves_a_torn_one_for_later(tmp_path: Path) -> None:
    raw = [b'{"a":1}\n', b"\n", b'{"b":2}\n', b'{"c":3}\n', b'{"torn"']
    path = write(tmp_path, raw)
    cursor = Cursor(tmp_path, "t")

    assert cursor.read(1 << 20) == [Pending(path.name, 0, 25, [b'{"a":1}', b'{"b":2}', b'{"c":3}'])]
    # a budget that cuts a line reads to its end; the next read starts after it
    assert cursor.read(3) == [Pending(path.name, 0, 8, [b'{"a":1}'])]
    cursor.advance(cursor.read(3))
    assert cursor.read(10) == [Pending(path.name, 8, 25, [b'{"b":2}', b'{"c":3}'])]


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as rx:
        yield rx


def test_every_span_is_delivered_in_batches_and_the_cursor_moves_past_them(
    tmp_path: Path, receiver: OtlpHttpReceiver
) -> None:
    written = lines(40)
    raw = [orjson.dumps(line) + b"\n" for line in written]
    raw.insert(7, b'{"not json\n')
    path = write(tmp_path, raw)
    Cursor(tmp_path, "t").save()  # from the start of the log
    target = TargetStub(receiver.url, project="p")
    stop = threading.Event()
    exporter = TargetExporter(target, tmp_path, stop, batch_bytes=16 * 1024)  # several reads
    thread = threading.Thread(target=exporter.run)
    thread.start()
    try:
        expected = [dict(sp) for line in written for _, sp in otlp.spans_of(with_project(line, "p"))]
        assert receiver.wait_for(len(expected), timeout=10) == canonical(expected)
        wait_until(lambda: Cursor.load(tmp_path, "t").offsets == {path.name: path.stat().st_size})
    finally:
        stop.set()
        thread.join(10)

    assert not thread.is_alive()
    assert len(receiver.requests) > 1
    assert {k: exporter.stats[k] for k in ("delivered", "rejected", "unreadable", "unsendable")} == {
        "delivered": len(expected),
        "rejected": 0,
        "unreadable": 1,
        "unsendable": 0,
    }


def gone_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_torn_tail_is_skipped_once_its_writer_is_done_with_the_segment(tmp_path: Path) -> None:
    whole, torn = b'{"a":1}\n{"b":2}\n', b'{"resourceSpans": [{"reso'
    live = tmp_path / segment_name(T0, pid=os.getpid(), seq=1)  # its writer (this process) runs
    closed = tmp_path / segment_name(T0, pid=os.getpid(), seq=2)
    killed = tmp_path / segment_name(T0 + 10**9, pid=gone_pid(), seq=1)
    for path in (live, killed):
        path.write_bytes(whole + torn)
        age(path, 60)
    cursor = Cursor(tmp_path, "t")

    assert cursor.read(1 << 20) == [
        Pending(live.name, 0, len(whole), [b'{"a":1}', b'{"b":2}']),  # still its writer's: left for later
        Pending(killed.name, 0, len(whole + torn), [b'{"a":1}', b'{"b":2}'], torn=len(torn)),
    ]
    closed.write_bytes(b"")  # the writer moved on to a newer segment: it never appends to `live` again
    cursor.advance(cursor.read(1 << 20))
    assert cursor.offsets == {live.name: len(whole + torn), killed.name: len(whole + torn)}
    assert (cursor.read(1 << 20), cursor.undelivered_bytes()) == ([], 0)


def test_a_torn_tail_is_not_skipped_until_it_has_not_changed_for_a_while(tmp_path: Path) -> None:
    path = tmp_path / segment_name(T0, pid=gone_pid())
    path.write_bytes(b'{"a":1}\n{"torn')  # just now: a writer in another pid namespace may be at it
    cursor = Cursor(tmp_path, "t")
    assert cursor.read(1 << 20) == [Pending(path.name, 0, 8, [b'{"a":1}'])]
    age(path, TORN_AFTER_S)
    assert cursor.read(1 << 20) == [Pending(path.name, 0, 14, [b'{"a":1}'], torn=6)]


def test_the_exporter_counts_a_skipped_torn_tail_and_each_export_request(
    tmp_path: Path, receiver: OtlpHttpReceiver
) -> None:
    written = lines(3)
    path = tmp_path / segment_name(T0, pid=gone_pid())
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in written) + b'{"resourceSpans": [')
    age(path, 60)
    Cursor(tmp_path, "t").save()
    receiver.fail_next(503, times=2)
    stop = threading.Event()
    exporter = TargetExporter(TargetStub(receiver.url), tmp_path, stop)
    exporter_thread = threading.Thread(target=exporter.run)
    exporter_thread.start()
    try:
        spans = sum(1 for line in written for _ in otlp.spans_of(line))
        receiver.wait_for(spans, timeout=10)
        wait_until(lambda: Cursor.load(tmp_path, "t").offsets == {path.name: path.stat().st_size})
    finally:
        stop.set()
        exporter_thread.join(10)
    keys = ("delivered", "attempts", "retries", "unreadable", "retrying", "pending_bytes", "warning")
    assert {k: Cursor.load(tmp_path, "t").stats[k] for k in keys} == {
        "delivered": spans, "attempts": 3, "retries": 2, "unreadable": 1, "retrying": False,
        "pending_bytes": 0, "warning": None,
    }  # fmt: skip
