"""The trace log: finished requests appended as OTLP/JSON lines to segment files, off the request path.

Contract of the files (readers, exporters and `tfgw traces` rely on it; only ever append):

- `{dir}/tfgw-YYYYMMDD-HHMMSS-{pid}-{seq:04d}.jsonl` (UTC): one line per request, one OTLP/JSON
  `ExportTraceServiceRequest` holding all of that request's spans. Name order is creation order.
  Every process (each Hypercorn worker) writes its own segments; a segment is never reopened
  after its writer closed it, so a crash leaves at most one torn last line, which readers skip.
- `{dir}/tfgw-....rows` next to it: one JSON object per line, the `tfgw.tracing.rows` summary of
  the trace on the same line of the segment plus `end`, the byte offset just past that line. It
  is written after the segment, so it may lag behind it, never run ahead.
- A segment is closed at `segment_max_mb` and when the UTC day changes; segments older than
  `retention_days` are deleted when a new one is opened (0 keeps them forever).

Where the work happens, measured (bench/README.md): `submit()` is all the request path does,
an append to a bounded deque (past `MAX_PENDING` traces are dropped and counted). A millisecond
later, after the answer went out, the event loop encodes pending traces in steps of at most half a
millisecond between requests (longer only while more than `MAX_WAITING` wait: the backlog stays
bounded under any load), and every 50 ms hands the encoded lines to the writer thread, whose
only work is the two `write()`s per batch, with the GIL released. Encoding in a thread instead
cost more: waking it for every request and passing the GIL back and forth added ~350 µs of CPU
per request at concurrency 1. A write that fails (a full disk, a removed directory) is counted,
logged at most once a minute, and the batch is dropped: nothing here may fail or delay a request.
A batch's lines and its rows go in together or not at all: a write cut short is cut back
(`ftruncate`), and when the rows fail the lines are cut back too, so row i stays the summary of
line i. Only when a cut back fails is the segment closed and the next batch written to a fresh
one, so a torn line is always the last line of its segment; the writer then never appends to it
again, which the exporters take as the sign to skip that torn line (`tfgw.export.cursor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tfgw.config import TracingSettings
from tfgw.tracing.encode import Encoder
from tfgw.tracing.segments import log_segments, read_offsets, record_dropped, write_writer_drops
from tfgw.tracing.spans import RequestTrace

__all__ = ["LogStats", "TraceLog", "segment_name"]

log = logging.getLogger("tfgw.tracing")

#: traces waiting to be encoded beyond this are dropped and counted
MAX_PENDING = 50_000
#: a finished trace is encoded this long after it was submitted: after its answer went out
ENCODE_DELAY_S = 0.001
#: the event loop encodes for at most this long at a time before it serves requests again...
STEP_S = 0.0005
#: ...unless more traces than this are waiting: then a step encodes until only these are left, so
#: that under a load the time budget cannot keep up with (requests answered faster than 0.5 ms of
#: encoding a loop iteration covers) the backlog stays bounded instead of growing with every
#: second of it, in memory and towards MAX_PENDING, and the encoding is paid for while it lasts
MAX_WAITING = 64
#: encoded lines go to the writer thread every HANDOFF_S, or sooner once HANDOFF_BYTES are waiting
HANDOFF_S = 0.05
HANDOFF_BYTES = 256 * 1024
_STOP = object()


def segment_name(when: float, pid: int, seq: int) -> str:
    return time.strftime("tfgw-%Y%m%d-%H%M%S", time.gmtime(when)) + f"-{pid}-{seq:04d}"


@dataclass(slots=True)
class LogStats:
    """Counters of the trace log. Each field has one writer: the event loop (encoding) or the writer
    thread (files), so no update is ever lost to a race."""

    written: int = 0  # traces appended (writer thread)
    dropped_backlog: int = 0  # traces dropped because too many were waiting (event loop)
    dropped_failed: int = 0  # traces lost to a failed write (writer thread)
    write_errors: int = 0  # (writer thread)
    encode_errors: int = 0  # traces that could not be encoded: a bug, counted (event loop)
    last_error: str | None = None
    segment: str | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_backlog + self.dropped_failed + self.encode_errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
            "encode_errors": self.encode_errors,
            "last_error": self.last_error,
            "segment": self.segment,
        }


class TraceLog:
    def __init__(
        self,
        settings: TracingSettings,
        clock: Callable[[], float] = time.time,
        targets: Sequence[str] = (),
    ) -> None:
        self.clock = clock
        self.dir = settings.path
        self.max_bytes = settings.segment_max_mb * 1024 * 1024
        self.max_disk_bytes = settings.max_disk_mb * 1024 * 1024
        self.retention_s = settings.retention_days * 86400
        #: the export targets whose cursors hold back retention (their undelivered data is kept)
        self.targets = tuple(targets)
        self.encoder = Encoder(settings.project, settings.exclude_request_data)
        self.stats = LogStats()
        # the event loop's side
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[RequestTrace] = deque()
        self._encoded: list[tuple[bytes, dict[str, Any]]] = []
        self._encoded_bytes = 0
        self._size = 0
        self._rows_size = 0
        self._step: asyncio.Handle | None = None
        self._handoff_timer: asyncio.TimerHandle | None = None
        # the writer thread's side
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._segment: Any = None
        self._rows: Any = None
        self._size = 0
        self._rows_size = 0
        self._day = ""
        self._last_warning = 0.0

    # -- the event loop: the request path and what runs between requests --------------------------

    def submit(self, trace: RequestTrace) -> None:
        """Take a finished trace. Nothing else happens on the request path."""
        if len(self._pending) >= MAX_PENDING:
            self.stats.dropped_backlog += 1
            return
        self._pending.append(trace)
        if self._loop is None:  # no event loop (a script, a test): encode and hand over at once
            self._encode_pending()
        elif self._step is None:
            self._step = self._loop.call_later(ENCODE_DELAY_S, self._encode_step)

    def _encode_step(self) -> None:
        """Encode for at most `STEP_S`, then let requests run; carry on in the next loop iteration."""
        assert self._loop is not None
        self._step = None
        pending, deadline = self._pending, time.perf_counter() + STEP_S
        while pending and (len(pending) > MAX_WAITING or time.perf_counter() < deadline):
            self._encode(pending.popleft())
        if pending:
            self._step = self._loop.call_soon(self._encode_step)
        if self._encoded_bytes >= HANDOFF_BYTES:
            self._handoff()
        elif self._encoded and self._handoff_timer is None:
            self._handoff_timer = self._loop.call_later(HANDOFF_S, self._handoff)

    def _encode_pending(self) -> None:
        while self._pending:
            self._encode(self._pending.popleft())
        self._handoff()

    def _encode(self, trace: RequestTrace) -> None:
        try:
            request, row = self.encoder.encode(trace)
            line = orjson.dumps(request) + b"\n"
        except Exception as exc:  # a bug must not stop the log; count it and go on
            self.stats.encode_errors += 1
            self._warn(f"could not encode a trace: {type(exc).__name__}: {exc}", exc)
            return
        self._encoded.append((line, row))
        self._encoded_bytes += len(line)

    def _handoff(self) -> None:
        if self._handoff_timer is not None:
            self._handoff_timer.cancel()
            self._handoff_timer = None
        if self._encoded:
            self._queue.put(self._encoded)
            self._encoded = []
            self._encoded_bytes = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread; called in the event loop that will submit traces, if there is one."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.Thread(target=self._run, name="tfgw-trace-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything submitted, close the files, stop the thread."""
        if self._step is not None:
            self._step.cancel()
            self._step = None
        self._encode_pending()
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything submitted so far, and wait until it is (for tests and shutdown)."""
        self._encode_pending()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- the writer thread: files only, the GIL released in every write ------------------------------

    def _run(self) -> None:
        saved = 0  # the drops last saved for the metrics (`segments.write_writer_drops`)
        while True:
            item = self._queue.get()
            if isinstance(item, list):
                self._write(item)
            if self.stats.dropped != saved:  # rare: written only when a trace was dropped
                saved = self._save_drops()
            if item is _STOP:
                break
            if isinstance(item, threading.Event):
                item.set()
        self._close_files()

    def _save_drops(self) -> int:
        stats = self.stats
        drops = {
            "backlog": stats.dropped_backlog,
            "write_failed": stats.dropped_failed,
            "encode_error": stats.encode_errors,
        }
        try:
            write_writer_drops(self.dir, os.getpid(), drops)
        except OSError:  # a full disk: tried again with the next drop
            return -1
        return sum(drops.values())

    def _write(self, encoded: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Append a batch's lines to the segment, then their rows: both, or neither (a segment
        line without its row would shift every later row onto the wrong line)."""
        lines = [line for line, _ in encoded]
        try:
            self._ensure_segment(sum(map(len, lines)))
            data = b"".join(lines)
            end = self._size
            rows = []
            for line, row in encoded:
                end += len(line)
                rows.append(orjson.dumps({**row, "end": end}) + b"\n")
            _append(self._segment, data, self._size)
        except OSError as exc:
            self._failed(len(lines), exc)
            return
        try:
            _append(self._rows, b"".join(rows), self._rows_size)
        except OSError as exc:
            try:
                os.ftruncate(self._segment, self._size)  # the lines go with their rows
            except OSError:  # they stay, whole, without rows: readers summarize them (rows lag)
                self.stats.written += len(lines)
                self._failed(0, exc, f"the rows of {len(lines)} trace(s)")
                self._close_files()  # no row may follow the missing ones
                return
            self._failed(len(lines), exc)
            return
        self._size += len(data)
        self._rows_size += sum(map(len, rows))
        self.stats.written += len(lines)

    def _failed(self, traces: int, exc: OSError, what: str | None = None) -> None:
        """A failed write, counted: `traces` lost."""
        self.stats.write_errors += 1
        self.stats.dropped_failed += traces
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._warn(f"could not write {what or f'{traces} trace(s)'} to {self.dir}: {exc}")
        if isinstance(exc, TornWrite):
            self._close_files()  # never append after a torn line

    def _ensure_segment(self, incoming: int) -> None:
        now = self.clock()
        day = time.strftime("%Y%m%d", time.gmtime(now))
        if self._segment is not None and day == self._day and self._size + incoming <= self.max_bytes:
            return
        if self._segment is not None and self._size == 0 and day == self._day:
            return  # one line larger than a segment: it goes alone into a fresh one
        self._close_files()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = segment_name(now, os.getpid(), self._seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._segment = os.open(self.dir / f"{name}.jsonl", flags, 0o600)
        self._rows = os.open(self.dir / f"{name}.rows", flags, 0o600)
        self._size = self._rows_size = 0
        self._day = day
        self.stats.segment = f"{name}.jsonl"
        self._expire(now)

    def _close_files(self) -> None:
        for fd in (self._segment, self._rows):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._segment = self._rows = None

    def _expire(self, now: float) -> None:
        """Delete segments past `retention_days` that every export target has delivered, then the
        oldest segments while the log is over `max_disk_mb`, delivered or not (counting what each
        target loses). The segment being written is never deleted."""
        segments = [p for p in log_segments(self.dir) if p.name != self.stats.segment]
        sizes = {p: _size(p) + _size(p.with_suffix(".rows")) for p in segments}
        offsets = read_offsets(self.dir, self.targets)
        cutoff = now - self.retention_s
        kept = []
        for path in segments:
            old = self.retention_s > 0 and _mtime(path) < cutoff
            size = _size(path)
            if old and all(o.get(path.name, 0) >= size for o in offsets.values()):
                self._delete(path)
            else:
                kept.append(path)
        total = sum(sizes[p] for p in kept) + self._size + self._rows_size
        for path in kept:
            if total <= self.max_disk_bytes:
                break
            size = _size(path)
            for target, target_offsets in offsets.items():
                if target_offsets.get(path.name, 0) < size:
                    lost = _spans_after(path.with_suffix(".rows"), target_offsets.get(path.name, 0))
                    record_dropped(self.dir, target, path.name, lost)
            self._delete(path)
            total -= sizes[path]

    def _delete(self, path: Path) -> None:
        for p in (path, path.with_suffix(".rows")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _warn(self, message: str, exc: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("trace log: %s", message, exc_info=exc)


def _append(fd: int, data: bytes, size: int) -> None:
    """Append all of `data` to a file of `size` bytes, or leave it at `size`: a write that fails
    half-way (a full disk) is cut back, so a file never holds part of a line it can be appended to.
    If even that fails, `TornWrite` says so, and the writer moves on to a fresh segment."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if len(view) != len(data):
            try:
                os.ftruncate(fd, size)
            except OSError:
                raise TornWrite(*exc.args) from exc
        raise


class TornWrite(OSError):
    """Part of a batch is in a file and could not be cut back."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _spans_after(rows: Path, offset: int) -> int:
    """Spans of the traces that end past `offset` in the segment, from its rows file."""
    spans = 0
    with contextlib.suppress(OSError):
        for line in rows.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                row = orjson.loads(line)
                if row.get("end", 0) > offset:
                    spans += int(row.get("spans") or 0)
    return spans
