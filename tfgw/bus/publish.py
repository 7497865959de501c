"""The publisher: a gateway's trace log, line by line, onto the JetStream stream; the log is its spool.

It runs in the exporter child `tfgw serve` starts (`[bus] kind = "nats"`), never in a worker, so
nothing it does (NATS slow, down, or refusing) can delay or fail a request. It follows the local log
from a cursor of its own, `{trace dir}/.cursors/nats.json` (tfgw.export.cursor, as a target's; the
log's retention keeps what it has not published, up to `[tracing] max_disk_mb`), and publishes each
line as one message on `bus.subject`: exactly the line's bytes, no newline, with the header
`Nats-Msg-Id` = the line's first span's trace id and span id (`msg_id`). A batch of lines (`BATCH_BYTES`) is
pipelined (every line sent, then the acks awaited, in order) and the cursor moves past the lines
JetStream acknowledged, in order, and only those: NATS down means lines wait on disk and go out in
order once it is back. A line JetStream did not acknowledge is published again; one it stored whose
ack was lost is then a duplicate, which JetStream drops if it comes within the stream's duplicate
window (tfgw.bus.stream) and counts in `duplicates` (docs/bus.md says when one gets through).

A lost connection is never reconnected in place: the client is closed, so nothing it still
buffered is sent after the lines published again, and a new connection is made after a backoff
(`RECONNECT_MAX_S` at most). A line larger than the server's max_payload can never be published:
it is counted in `too_large` and skipped.

What it has done is in its cursor file, refreshed at least every `HEARTBEAT_S` (for `tfgw otel
status` and `GET /readyz`): `published` (lines stored), `duplicates` (lines JetStream already
had), `delivered` (both: what the stream has), `too_large`, `pending_bytes` (the log not yet
published), `connected`, `retrying`, `last_error` (secrets masked), `last_success`, `updated`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from tfgw.bus.connect import BusError, check_subject, connect, describe
from tfgw.bus.stream import ensure_stream
from tfgw.config import Settings
from tfgw.export.cursor import Cursor, Pending
from tfgw.retry import Backoff

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["CURSOR", "Publisher", "msg_id"]

log = logging.getLogger("tfgw.bus")

#: the publisher's cursor in the trace log (`.cursors/nats.json`)
CURSOR = "nats"
#: how much of the log one pipelined batch reads
BATCH_BYTES = 1024 * 1024
#: how often an idle publisher looks for new lines
POLL_S = 0.1
#: the status in the cursor file is refreshed at least this often
HEARTBEAT_S = 2.0
#: the cursor is saved at most this often while lines flow (a save is a write, a rename and a
#: look at every segment: once a batch it cost ~3.5 µs a line); a restart publishes again at most
#: this long of lines, which JetStream drops as duplicates
SAVE_S = 0.5
#: seconds a batch's acks may take once its last line was sent, before it is published again
ACK_TIMEOUT_S = 10.0
#: on stop, seconds the acks of the batch in flight still have to arrive
STOP_GRACE_S = 1.0
#: the wait before a new connection after a failure, doubled (with jitter) up to this
RECONNECT_MAX_S = 2.0

T = TypeVar("T")


#: the first span of a line as tfgw writes it: the request's root, its trace and span ids first
_FIRST_SPAN = re.compile(rb'"traceId":"([0-9a-f]{32})","spanId":"([0-9a-f]{16})"')


def msg_id(line: bytes) -> str:
    """The line's `Nats-Msg-Id`: its first span's trace id and span id (tfgw's lines: the request's
    root span, whose id is new for every request, where the trace id is the caller's when it sent a
    traceparent), read with one regex search; else the line's BLAKE2b-128 digest (a 7 kB line's
    digest costs ~17 µs, the search ~1)."""
    found = _FIRST_SPAN.search(line)
    if found is not None:
        return (found.group(1) + found.group(2)).decode()
    return hashlib.blake2b(line, digest_size=16).hexdigest()


@dataclass(slots=True)
class _Acks:
    """The replies to one connection's publishes: batch `n`'s line `i` asks for one on `{inbox}.n.i`."""

    inbox: str = ""
    batch: int = 0
    results: list[str | None] = field(default_factory=list)
    got: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, count: int) -> str:
        """A new batch of `count` lines; the prefix of their reply subjects."""
        self.batch += 1
        self.results = [None] * count
        self.got = 0
        self.done.clear()
        if not count:
            self.done.set()
        return f"{self.inbox}.{self.batch}."

    def settle(self, index: int, result: str) -> None:
        if self.results[index] is None:
            self.results[index] = result
            self.got += 1
            if self.got == len(self.results):
                self.done.set()

    async def on_reply(self, msg: Msg) -> None:
        batch, _, index = msg.subject[len(self.inbox) + 1 :].partition(".")
        if batch != str(self.batch) or not index.isdigit() or int(index) >= len(self.results):
            return  # a late ack of a batch given up on: its lines are published again
        if not msg.data:  # a status message: no stream listens on the subject (503)
            status = (msg.headers or {}).get("Status", "")
            self.settle(int(index), f"error: no JetStream stream takes the subject ({status or 'no reply'})")
            return
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            ack = {"error": {"description": f"unreadable ack {msg.data[:80]!r}"}}
        error = ack.get("error") if isinstance(ack, dict) else {"description": "unreadable ack"}
        if error:
            self.settle(int(index), f"error: {error.get('description') or error}")
        else:
            self.settle(int(index), "duplicate" if ack.get("duplicate") else "new")


class Publisher:
    """`run()` until `stop` is set: one thread of the exporter child, with its own event loop."""

    def __init__(self, settings: Settings, stop: threading.Event, *, clock: Callable[[], float] = time.time):
        self.bus = settings.bus
        self.trace_dir = settings.tracing.path
        self.stop = stop
        self.clock = clock
        self.batch_bytes = BATCH_BYTES
        self.stats: dict[str, Any] = {}
        self._saved = 0.0
        self._unsaved = False  # the cursor moved since it was last saved

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        threading.Thread(
            target=lambda: (self.stop.wait(), loop.call_soon_threadsafe(stopping.set)),
            name="tfgw-publisher-stop",
            daemon=True,
        ).start()
        cursor = Cursor.load(self.trace_dir, CURSOR)
        self.stats = {
            "published": 0, "duplicates": 0, "delivered": 0, "too_large": 0, "connected": False,
            "retrying": False, "last_error": None, "last_success": None,
            **{k: v for k, v in cursor.stats.items() if k not in ("pending_bytes", "updated", "connected")},
        }  # fmt: skip
        backoff = Backoff(base=0.25, cap=RECONNECT_MAX_S)
        try:
            while not stopping.is_set():
                try:
                    await self._session(cursor, stopping, backoff)
                except BusError as exc:
                    self._failed(exc.message)
                self.stats["connected"] = False
                self._save(cursor)
                await _within(stopping.wait(), backoff.next_delay())
        finally:
            self.stats["connected"] = False
            self._save(cursor)

    async def _session(self, cursor: Cursor, stopping: asyncio.Event, backoff: Backoff) -> None:
        """One connection: publish until it is lost, a batch fails, or `stopping`."""
        import nats.errors

        lost = asyncio.Event()

        async def closed() -> None:
            lost.set()

        check_subject(self.bus.subject, "bus.subject")
        nc = await _until(
            connect(
                self.bus,
                "publisher",
                reconnect=False,
                on_error=self._failed,
                on_closed=closed,
                checked_subjects=True,
            ),
            stopping,
            tick=lambda: self._save(cursor),  # the status says why while it connects
        )
        if nc is None:
            return
        try:
            await ensure_stream(nc.jetstream(), self.bus)
            acks = _Acks(inbox=nc.new_inbox())
            await nc.subscribe(f"{acks.inbox}.*.*", cb=acks.on_reply)
            self.stats.update(connected=True, retrying=False, last_error=None)
            self._save(cursor)
            while not (stopping.is_set() or lost.is_set()):
                pending = cursor.read(self.batch_bytes)
                if not pending:
                    if self._unsaved or self.clock() - self._saved >= HEARTBEAT_S:
                        self._save(cursor)
                    await _within(_first(stopping.wait(), lost.wait()), POLL_S)
                    continue
                failure = await self._publish(nc, acks, pending, cursor, stopping, lost)
                self._unsaved = True
                if failure or self.clock() - self._saved >= SAVE_S:
                    self._save(cursor)
                if failure:
                    raise BusError(failure)
                backoff.reset()
        except (OSError, nats.errors.Error) as exc:  # nats-py's errors, mapped once
            raise BusError(describe(exc, self.bus)) from exc
        finally:
            with contextlib.suppress(Exception):  # closing a lost connection may raise anything
                await nc.close()

    async def _publish(
        self,
        nc: Client,
        acks: _Acks,
        pending: list[Pending],
        cursor: Cursor,
        stopping: asyncio.Event,
        lost: asyncio.Event,
    ) -> str | None:
        """Publish every line of `pending`, await the acks, move the cursor past the lines acked
        in order; None if they all were, else why not."""
        lines = [line for p in pending for line in p.lines]
        prefix = acks.expect(len(lines))
        subject, max_payload = self.bus.subject, nc.max_payload
        for i, line in enumerate(lines):
            if lost.is_set() or not nc.is_connected:
                break
            if len(line) > max_payload:
                acks.settle(i, "too_large")
                continue
            await nc.publish(subject, line, reply=f"{prefix}{i}", headers={"Nats-Msg-Id": msg_id(line)})
        if not lost.is_set():
            await _within(_first(acks.done.wait(), lost.wait(), stopping.wait()), ACK_TIMEOUT_S)
        if stopping.is_set() and not acks.done.is_set():
            await _within(_first(acks.done.wait(), lost.wait()), STOP_GRACE_S)
        results = list(acks.results)
        acked = next((i for i, r in enumerate(results) if r is None or r.startswith("error")), len(results))
        self._count(results[:acked])
        _advance(cursor, pending, acked)
        if acked == len(results):
            return None
        if acked < len(results) and results[acked] is not None:
            return f"JetStream refused a line: {results[acked]}"
        return "connection lost" if lost.is_set() else "stopping" if stopping.is_set() else "no ack in time"

    def _count(self, results: list[str | None]) -> None:
        new, duplicates, too_large = (results.count(k) for k in ("new", "duplicate", "too_large"))
        if too_large:
            log.warning("%d trace line(s) larger than NATS's max_payload were not published", too_large)
        self.stats["published"] += new
        self.stats["duplicates"] += duplicates
        self.stats["delivered"] += new + duplicates
        self.stats["too_large"] += too_large
        if new or duplicates:
            self.stats["last_success"] = self.clock()

    def _failed(self, message: str) -> None:
        self.stats["retrying"] = True
        self.stats["last_error"] = message

    def _save(self, cursor: Cursor) -> None:
        now = self._saved = self.clock()
        self._unsaved = False
        self.stats["pending_bytes"] = cursor.undelivered_bytes()
        cursor.stats = {**self.stats, "updated": now}
        try:
            cursor.save()
        except OSError as exc:  # a full disk: keep publishing, the next save may work
            log.warning("could not save the publisher's cursor: %s", exc)


def _advance(cursor: Cursor, pending: list[Pending], acked: int) -> None:
    """Move the cursor past the first `acked` lines of `pending` (all of a segment's lines when
    its byte count says each line is followed by exactly one newline; else only whole segments)."""
    done: list[Pending] = []
    for p in pending:
        if acked >= len(p.lines):
            done.append(p)
            acked -= len(p.lines)
            continue
        if acked and sum(map(len, p.lines)) + len(p.lines) == p.end - p.start:
            end = p.start + sum(len(line) + 1 for line in p.lines[:acked])
            done.append(Pending(p.segment, p.start, end, []))
        break
    cursor.advance(done)


async def _within(waiting: Awaitable[Any], seconds: float) -> None:
    """Await `waiting` for at most `seconds`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiting, seconds)


async def _first(*waits: Awaitable[Any]) -> None:
    """Until the first of `waits` is done (the others cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _until(work: Awaitable[T], stopping: asyncio.Event, tick: Callable[[], None]) -> T | None:
    """`work`'s result, or None (`work` cancelled) once `stopping` is set first; `tick()` every
    `HEARTBEAT_S` meanwhile."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        while not (task.done() or stopper.done()):
            await asyncio.wait((task, stopper), timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                tick()
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, BusError):
        await task
    return None
