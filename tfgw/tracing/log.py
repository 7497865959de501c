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

`submit()` is all the request path does: a put on a C queue, bounded by its size, so a writer that
cannot keep up drops (and counts) traces instead of growing without bound. The writer thread
wakes when a trace arrives, takes everything queued by then (so batches grow with the load),
encodes, and writes each batch with one `write()` per file. A write that fails (a full disk, a removed
directory) is counted, logged at most once a minute, and the batch is dropped: nothing here may
fail or delay a request. After a failed write the segment is closed and the next batch starts a
fresh one, so a torn line is always the last line of its segment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tfgw.config import TracingSettings
from tfgw.tracing.encode import Encoder
from tfgw.tracing.spans import RequestTrace

__all__ = ["LogStats", "TraceLog", "segment_name"]

log = logging.getLogger("tfgw.tracing")

#: traces waiting for the writer beyond this are dropped and counted
MAX_PENDING = 50_000
#: the writer takes at most this many traces per write
BATCH = 512
_STOP = object()


def segment_name(when: float, pid: int, seq: int) -> str:
    return time.strftime("tfgw-%Y%m%d-%H%M%S", time.gmtime(when)) + f"-{pid}-{seq:04d}"


@dataclass(slots=True)
class LogStats:
    written: int = 0  # traces appended
    dropped: int = 0  # traces lost: queue full or a failed write
    write_errors: int = 0
    encode_errors: int = 0
    last_error: str | None = None
    segment: str | None = None

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
    def __init__(self, settings: TracingSettings, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.dir = settings.path
        self.max_bytes = settings.segment_max_mb * 1024 * 1024
        self.retention_s = settings.retention_days * 86400
        self.encoder = Encoder(settings.project, settings.exclude_request_data)
        self.stats = LogStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._segment: Any = None
        self._rows: Any = None
        self._size = 0
        self._day = ""
        self._last_warning = 0.0

    # -- the request path ---------------------------------------------------------------------------

    def submit(self, trace: RequestTrace) -> None:
        if self._queue.qsize() >= MAX_PENDING:
            self.stats.dropped += 1
            return
        self._queue.put(trace)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tfgw-trace-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close the files, stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is written (for tests and shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            traces: list[RequestTrace] = []
            events: list[threading.Event] = []
            for item in batch:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, threading.Event):
                    events.append(item)
                else:
                    traces.append(item)
            if traces:
                self._write(traces)
            for event in events:
                event.set()
        self._close_files()

    def _write(self, traces: list[RequestTrace]) -> None:
        lines: list[bytes] = []
        row_data: list[dict[str, Any]] = []
        for trace in traces:
            try:
                request, row = self.encoder.encode(trace)
                lines.append(orjson.dumps(request) + b"\n")
                row_data.append(row)
            except Exception as exc:  # a bug must not stop the log; count it and go on
                self.stats.encode_errors += 1
                self.stats.dropped += 1
                self._warn(f"could not encode a trace: {type(exc).__name__}: {exc}", exc)
        if not lines:
            return
        try:
            self._ensure_segment(sum(map(len, lines)))
            data = b"".join(lines)
            start = self._size
            _write_all(self._segment, data)
            self._size += len(data)
            rows = []
            for line, row in zip(lines, row_data, strict=True):
                start += len(line)
                row["end"] = start
                rows.append(orjson.dumps(row) + b"\n")
            _write_all(self._rows, b"".join(rows))
            self.stats.written += len(lines)
        except OSError as exc:
            self.stats.write_errors += 1
            self.stats.dropped += len(lines)
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._warn(f"could not write {len(lines)} trace(s) to {self.dir}: {exc}")
            self._close_files()  # start a fresh segment next time, never append after a torn line

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
        self._size = 0
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
        if not self.retention_s:
            return
        cutoff = now - self.retention_s
        for path in self.dir.glob("tfgw-*"):
            if path.suffix in (".jsonl", ".rows"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                except OSError:
                    pass

    def _warn(self, message: str, exc: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("trace log: %s", message, exc_info=exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
