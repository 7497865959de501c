"""One target's exporter thread against a real receiver on loopback: what it reads from the log,
what it sends, what its cursor says. Whole values; polls with a deadline, never sleeps to wait."""

from __future__ import annotations

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
from tfgw.export.cursor import Cursor, Pending
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
