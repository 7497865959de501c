"""The publisher against a real nats-server on loopback: every log line onto the stream once, with
its message id, the cursor moved only past what JetStream acked, NATS down then back."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.nats import NatsServer, read_stream
from tests.samples import MS, T0, Request, trace_line, write_log
from tfgw.bus.connect import BusError, connect, masked
from tfgw.bus.publish import Publisher, _advance, msg_id
from tfgw.bus.stream import ensure_stream
from tfgw.config import Settings, TracingSettings
from tfgw.config_bus import BusSettings
from tfgw.export.cursor import Cursor, Pending


def settings_for(tmp_path: Path, url: str, **bus: Any) -> Settings:
    return Settings(
        tracing=TracingSettings(dir=str(tmp_path / "traces")),
        bus=BusSettings(kind="nats", urls=(url,), **bus),
    )


def lines(count: int, first: int = 0) -> list[dict[str, Any]]:
    return [
        trace_line(Request(n, start=T0 + n * 1000 * MS, stream=n % 2 == 1))
        for n in range(first, first + count)
    ]


def raw(line: dict[str, Any]) -> bytes:
    return orjson.dumps(line)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cursor_stats(settings: Settings) -> dict[str, Any]:
    return Cursor.load(settings.tracing.path, "nats").stats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path) as server:
        yield server


class Running:
    """A Publisher in a thread, stopped (and joined) on exit."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.publisher = Publisher(settings, self.stop)
        self.thread = threading.Thread(target=self.publisher.run)

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self.publisher

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def test_every_line_goes_onto_the_stream_once_with_its_digest_and_the_cursor_follows(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = settings_for(tmp_path, nats_server.url)
    Cursor.load(settings.tracing.path, "nats")  # as `tfgw serve` makes it, before any line
    written = lines(30)
    segments = write_log(settings.tracing.path, written, per_segment=12)
    with Running(settings):
        wait_for(lambda: cursor_stats(settings).get("published") == 30, "30 lines published")
    records = read_stream(nats_server.url)
    assert [(r.data, r.msg_id) for r in records] == [(raw(line), msg_id(raw(line))) for line in written]
    stats = cursor_stats(settings)
    assert Cursor.load(settings.tracing.path, "nats").offsets == {p.name: p.stat().st_size for p in segments}
    assert {k: stats[k] for k in ("published", "duplicates", "delivered", "too_large", "pending_bytes")} == {
        "published": 30,
        "duplicates": 0,
        "delivered": 30,
        "too_large": 0,
        "pending_bytes": 0,
    }
    assert (stats["connected"], stats["retrying"], stats["last_error"]) == (False, False, None)


def test_the_stream_is_made_as_the_bus_says_and_one_that_exists_is_used_as_it_is(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    bus = BusSettings(
        kind="nats", urls=(nats_server.url,), stream="T1", subject="t1.x", max_age_hours=2, max_mb=5
    )

    async def made() -> tuple[Any, Any]:
        nc = await connect(bus, "test", timeout=5)
        try:
            js = nc.jetstream()
            first = (await ensure_stream(js, bus)).config
            again = (await ensure_stream(js, dataclasses.replace(bus, max_mb=99))).config
            return first, again
        finally:
            await nc.close()

    first, again = asyncio.run(made())
    keys = (
        "name",
        "subjects",
        "storage",
        "num_replicas",
        "max_age",
        "max_bytes",
        "duplicate_window",
        "retention",
        "discard",
    )
    assert {k: getattr(getattr(first, k), "value", getattr(first, k)) for k in keys} == {
        "name": "T1",
        "subjects": ["t1.x"],
        "storage": "file",
        "num_replicas": 1,
        "max_age": 7200.0,
        "max_bytes": 5 * 1024 * 1024,
        "duplicate_window": 120.0,
        "retention": "limits",
        "discard": "old",
    }
    assert again.max_bytes == 5 * 1024 * 1024  # used as it is, not changed


def test_nats_down_keeps_the_lines_on_disk_and_they_go_out_in_order_once_it_is_back(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = settings_for(tmp_path, nats_server.url)
    trace_dir = settings.tracing.path
    Cursor.load(trace_dir, "nats")
    first = lines(5)
    write_log(trace_dir, first, pid=1)
    with Running(settings):
        wait_for(lambda: cursor_stats(settings).get("published") == 5, "the first 5 published")
        nats_server.stop()
        later = lines(20, first=5)
        write_log(trace_dir, later, pid=2)
        spooled = sum(len(raw(x)) + 1 for x in later)
        wait_for(
            lambda: (
                (cursor_stats(settings).get("retrying"), cursor_stats(settings).get("pending_bytes"))
                == (True, spooled)
            ),
            "the publisher retrying, the lines on disk",
        )
        down = cursor_stats(settings)
        assert down["published"] == 5 and down["last_error"]
        nats_server.start()
        wait_for(lambda: cursor_stats(settings).get("published") == 25, "all 25 published")
    assert [r.data for r in read_stream(nats_server.url)] == [raw(x) for x in first + later]


def test_lines_published_again_are_acked_as_duplicates_and_stored_once(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = settings_for(tmp_path, nats_server.url)
    trace_dir = settings.tracing.path
    Cursor.load(trace_dir, "nats")
    write_log(trace_dir, lines(8))
    with Running(settings):
        wait_for(lambda: cursor_stats(settings).get("published") == 8, "8 published")
    cursor = Cursor.load(trace_dir, "nats")
    cursor.offsets = {name: 0 for name in cursor.offsets}  # as if the cursor had not been saved
    cursor.save()
    with Running(settings):
        wait_for(lambda: cursor_stats(settings).get("duplicates") == 8, "8 duplicates")
    stats = cursor_stats(settings)
    assert (stats["published"], stats["duplicates"], stats["delivered"]) == (8, 8, 16)
    assert len(read_stream(nats_server.url)) == 8


def test_a_line_too_large_for_nats_is_counted_and_skipped(tmp_path: Path) -> None:
    limits = tmp_path / "limits.conf"
    limits.write_text("max_payload: 16384\n")
    with NatsServer(tmp_path, args=("-c", str(limits))) as server:
        settings = settings_for(tmp_path, server.url)
        trace_dir = settings.tracing.path
        Cursor.load(trace_dir, "nats")
        big = trace_line(Request(1, start=T0, metadata={"pad": "x" * 20000}))
        small = lines(2, first=2)
        write_log(trace_dir, [small[0], big, small[1]])
        with Running(settings):
            wait_for(lambda: cursor_stats(settings).get("published") == 2, "2 published")
        assert [r.data for r in read_stream(server.url)] == [raw(x) for x in small]
        assert cursor_stats(settings)["too_large"] == 1


def test_no_nats_at_all_is_one_masked_error_and_the_publisher_stops_when_told(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "nats://ci:hunter2-password@127.0.0.1:9", user=None)
    Cursor.load(settings.tracing.path, "nats")
    write_log(settings.tracing.path, lines(1))
    running = Running(settings)
    with running:
        wait_for(lambda: cursor_stats(settings).get("retrying") is True, "the publisher retrying")
    stats = cursor_stats(settings)
    assert "hunter2" not in orjson.dumps(stats).decode() and stats["published"] == 0
    assert stats["pending_bytes"] > 0


def test_connect_names_what_failed_with_secrets_masked() -> None:
    bus = BusSettings(kind="nats", urls=("nats://127.0.0.1:9",), token="tok-0123456789abcdef")
    with pytest.raises(BusError) as failed:
        asyncio.run(connect(bus, "test", timeout=0.5))
    assert failed.value.message.startswith("cannot reach NATS at nats://127.0.0.1:9 within 0.5 s")
    assert masked("nats://u:tok-0123456789abcdef@h:1 said tok-0123456789abcdef", bus) == (
        "nats://…@h:1 said tok-…cdef"
    )


def test_the_cursor_moves_past_the_lines_acked_in_order_and_no_further() -> None:
    cursor = Cursor(Path("/nonexistent"), "nats", offsets={"a": 10})
    pending = [Pending("a", 10, 22, [b"xx", b"yyy", b"zzzz"]), Pending("b", 0, 5, [b"ww", b"v"])]
    _advance(cursor, pending, 2)
    assert cursor.offsets == {"a": 17}  # past "xx\n" and "yyy\n"
    _advance(cursor, pending, 4)
    assert cursor.offsets == {"a": 22, "b": 3}
    blank = Pending("c", 0, 9, [b"ab", b"cd"])  # a blank line was skipped: offsets unknown inside
    _advance(cursor, [blank], 1)
    assert cursor.offsets == {"a": 22, "b": 3}


def test_a_lines_message_id_is_its_root_spans_ids_or_else_its_digest() -> None:
    import hashlib

    line = orjson.dumps(trace_line(Request(7)))
    root = orjson.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert msg_id(line) == root["traceId"] + root["spanId"]
    foreign = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x","traceId":"ab"}]}]}]}'
    assert msg_id(foreign) == hashlib.blake2b(foreign, digest_size=16).hexdigest()
