"""Reading the trace log: its files, one row per request, whole traces, one trace by id, and the
log followed live. What `tfgw traces` reads; it never writes.

The log (written by `tfgw.tracing.log`; docs/trace-files.md):

- A directory of `*.jsonl` files, each line one OTLP/JSON `ExportTraceServiceRequest`. tfgw's own
  segments are named `tfgw-YYYYMMDD-HHMMSS-<pid>-<seq>.jsonl` and hold exactly one request's
  trace per line. Any other `*.jsonl` file (the OpenTelemetry Collector's file exporter writes
  them) is read too: there a line may hold several traces and a trace may span lines, so its
  spans are grouped by `traceId` over the whole file (and such a file is held in memory while it
  is read; tfgw segments and rows files are streamed line by line).
- Next to a segment `X.jsonl`, `X.rows`: line i is `tfgw.tracing.rows.summarize()` of line i of the
  segment plus `end`, the byte offset just past that line. It may lag behind the segment, never
  run ahead. Rows are used up to the last complete, valid one whose `end` grows and fits the
  segment; the rest of the segment is parsed and summarized here, so a lagging, damaged or
  missing rows file gives the same rows as a complete one, only slower.

Order: files are read in order of last modification (mtime, then name), oldest data first. For
one gateway process that is name order, since a segment is closed before the next one opens;
concurrent workers' segments interleave by their last write. Within a file, traces come in
write order, which is not start-time order: a caller wanting time order sorts
(`newest_rows()` keeps a bounded heap). A file's mtime bounds the start times of the requests
in it (a line is written after its request started), so `read_rows(since_ns=)` and
`newest_rows()` skip files too old to matter without opening them; this assumes the writer's
clock is the file system's, as it is for the gateway writing its own log.

Damage is never fatal: a line that is not valid JSON is skipped with a one-line warning naming
the file and line; so is a torn last line (no newline at the end, a crash mid-write; a reader
that races the gateway's write of a line sees the same and warns, and reads the line whole next
time) — except when following, where a last line without its newline is one still being
written, read once it is complete. Warnings go to a `warn` callable, stderr by default.
"""

from __future__ import annotations

import heapq
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tfgw.errors import InputError
from tfgw.tracing import otlp
from tfgw.tracing.rows import summarize

__all__ = [
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

Pair = tuple[Mapping[str, Any], Mapping[str, Any]]
Warn = Callable[[str], None]

SEGMENT = re.compile(r"tfgw-\d{8}-\d{6}-\d+-\d{4,}\.jsonl")
BUFFER = 1 << 20
#: a row's time (its request's start) precedes the write of its line, so it is at most its file's
#: mtime; this slack covers coarse file-system timestamps
MTIME_SLACK_NS = 2_000_000_000
#: the malformed-but-valid-JSON shapes `otlp` and `rows` trip over
_SHAPE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


class TraceLogError(InputError):
    """The trace log directory cannot be read at all (bad input: exit code 2)."""


def warn_stderr(message: str) -> None:
    print(f"tfgw: warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Trace:
    """The spans of one trace, as `(resource, span)` pairs, and where its (first) line is."""

    trace_id: str
    spans: tuple[Pair, ...]
    file: Path
    line: int

    def row(self) -> dict[str, Any] | None:
        """`rows.summarize()` of the spans; None when they are too malformed to summarize."""
        try:
            return summarize(self.spans)
        except _SHAPE_ERRORS:
            return None


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    mtime_ns: int
    size: int


# -- files ---------------------------------------------------------------------------------------


def is_segment(path: Path) -> bool:
    """Whether the file is one of tfgw's own segments (one trace per line, maybe a rows file)."""
    return SEGMENT.fullmatch(path.name) is not None


def segments(directory: Path) -> list[Path]:
    """Every `*.jsonl` file of the log, oldest data first (mtime, then name)."""
    return [f.path for f in _listing(directory)]


def _listing(directory: Path) -> list[_File]:
    try:
        return _scan(directory)
    except FileNotFoundError:
        raise TraceLogError(
            f"{directory}: no trace log here (pass --dir, or set [tracing] dir in the config)"
        ) from None
    except OSError as exc:
        raise _unreadable(directory, exc) from exc


def _unreadable(directory: Path, exc: OSError) -> TraceLogError:
    return TraceLogError(f"{directory}: cannot read the trace log: {exc.strerror}")


def _scan(directory: Path) -> list[_File]:
    """The `*.jsonl` files of `directory`; raises the OSError of a directory that cannot be listed."""
    entries = list(os.scandir(directory))
    files = []
    for entry in entries:
        if not entry.name.endswith(".jsonl"):
            continue
        try:
            if not entry.is_file():
                continue
            st = entry.stat()
        except FileNotFoundError:  # removed meanwhile (retention)
            continue
        files.append(_File(Path(entry.path), st.st_mtime_ns, st.st_size))
    files.sort(key=lambda f: (f.mtime_ns, f.path.name))
    return files


def _lines(path: Path, offset: int = 0, line: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """`(line number, offset just past the line, bytes)` of each line from `offset`; the last one
    may lack its newline."""
    with path.open("rb", buffering=BUFFER) as f:
        f.seek(offset)
        for raw in f:
            line += 1
            offset += len(raw)
            yield line, offset, raw


def _decode(path: Path, line: int, raw: bytes, warn: Warn) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.endswith(b"\n"):
            warn(f"{path}:{line}: torn last line skipped (no newline at the end: a crash mid-write?)")
        elif raw.strip():
            warn(f"{path}:{line}: invalid JSON, line skipped ({exc})")
        return None
    if not isinstance(data, dict):
        warn(f"{path}:{line}: not an OTLP/JSON object, line skipped")
        return None
    return data


def _groups(path: Path, line: int, data: Mapping[str, Any], warn: Warn) -> dict[str, list[Pair]]:
    """The line's spans grouped by trace id, in order of first appearance."""
    groups: dict[str, list[Pair]] = {}
    try:
        for res, span in otlp.spans_of(data):
            trace_id = span.get("traceId")
            groups.setdefault(trace_id if isinstance(trace_id, str) else "", []).append((res, span))
    except _SHAPE_ERRORS:
        warn(f"{path}:{line}: not an OTLP/JSON trace request, line skipped")
        return {}
    return groups


def line_traces(path: Path, line: int, raw: bytes, warn: Warn) -> list[Trace]:
    """The traces of one line `raw` (line number `line` of `path`: what a warning names)."""
    data = _decode(path, line, raw, warn)
    if data is None:
        return []
    groups = _groups(path, line, data, warn)
    return [Trace(trace_id, tuple(pairs), path, line) for trace_id, pairs in groups.items()]


# -- traces --------------------------------------------------------------------------------------


def file_traces(path: Path, *, warn: Warn = warn_stderr) -> Iterator[Trace]:
    """Every trace of one file: per line for a tfgw segment, grouped over the file otherwise."""
    if is_segment(path):
        for trace, _ in _segment_traces(path, 0, 0, warn):
            yield trace
        return
    merged: dict[str, tuple[int, list[Pair]]] = {}
    for line, _, raw in _lines(path):
        data = _decode(path, line, raw, warn)
        if data is None:
            continue
        for trace_id, pairs in _groups(path, line, data, warn).items():
            merged.setdefault(trace_id, (line, []))[1].extend(pairs)
    for trace_id, (line, pairs) in merged.items():
        yield Trace(trace_id, tuple(pairs), path, line)


def read_traces(directory: Path, *, warn: Warn = warn_stderr) -> Iterator[Trace]:
    """Every trace of the log, file by file, oldest data first."""
    for f in _listing(directory):
        yield from _guarded(file_traces(f.path, warn=warn), f.path, warn)


def _segment_traces(path: Path, offset: int, line: int, warn: Warn) -> Iterator[tuple[Trace, int]]:
    """The traces of a segment from `offset` (the start of line `line + 1`), each with the offset
    just past its line."""
    for n, end, raw in _lines(path, offset, line):
        for trace in line_traces(path, n, raw, warn):
            yield trace, end


def _guarded(items: Iterator[Any], path: Path, warn: Warn) -> Iterator[Any]:
    """The items, stopping quietly if the file vanished (retention) and with a warning if it cannot
    be read: one unreadable file does not hide the rest of the log."""
    try:
        yield from items
    except FileNotFoundError:
        return
    except OSError as exc:
        warn(f"{path}: cannot read, skipped: {exc.strerror or exc}")


# -- rows ----------------------------------------------------------------------------------------


def _stored_rows(segment: Path, warn: Warn) -> Iterator[tuple[dict[str, Any], int]]:
    """`(row, end)` of a segment's rows file, up to the last good row."""
    path = segment.with_suffix(".rows")
    last = size = 0
    try:
        f = path.open("rb", buffering=BUFFER)
    except FileNotFoundError:
        return
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return  # not written yet
            try:
                row = orjson.loads(raw)
                end = row.pop("end")
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
                end = None
            if isinstance(end, int) and end > size:
                size = segment.stat().st_size  # the segment grew since it was last looked at
            if not isinstance(end, int) or not last < end <= size:
                warn(f"{path}:{number}: bad row; reading the segment from its line {number}")
                return
            last = end
            yield row, end


def file_rows(path: Path, *, warn: Warn = warn_stderr) -> Iterator[dict[str, Any]]:
    """The row (`rows.summarize()`) of every trace of one file, from its rows file where it has one."""
    offset = line = 0
    if is_segment(path):
        for row, end in _stored_rows(path, warn):
            offset = end
            line += 1
            yield row
        traces: Iterator[Trace] = (trace for trace, _ in _segment_traces(path, offset, line, warn))
    else:
        traces = file_traces(path, warn=warn)
    for trace in traces:
        summary = trace.row()
        if summary is None:
            warn(f"{trace.file}:{trace.line}: trace {trace.trace_id!r} cannot be summarized, skipped")
        else:
            yield summary


def read_rows(
    directory: Path, *, since_ns: int | None = None, warn: Warn = warn_stderr
) -> Iterator[dict[str, Any]]:
    """The rows of every request of the log that started at or after `since_ns` (all if None),
    oldest file first. Files last written before `since_ns` are not opened."""
    for f in _listing(directory):
        if since_ns is not None and f.mtime_ns + MTIME_SLACK_NS < since_ns:
            continue
        for row in _guarded(file_rows(f.path, warn=warn), f.path, warn):
            if since_ns is None or row["time"] >= since_ns:
                yield row


def newest_rows(
    directory: Path,
    limit: int,
    *,
    since_ns: int | None = None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    warn: Warn = warn_stderr,
) -> list[dict[str, Any]]:
    """The `limit` most recent rows (by start time) that `keep` accepts, newest first.

    Holds at most `limit` rows. Files are read newest first and reading stops at the first file
    that cannot hold a row newer than those kept (its mtime bounds its rows' start times) or that
    was last written before `since_ns`."""
    heap: list[tuple[int, int, dict[str, Any]]] = []
    seq = 0
    for f in reversed(_listing(directory)):
        bound = f.mtime_ns + MTIME_SLACK_NS
        if (since_ns is not None and bound < since_ns) or (len(heap) >= limit and heap[0][0] > bound):
            break
        for row in _guarded(file_rows(f.path, warn=warn), f.path, warn):
            t = row["time"]
            if (since_ns is not None and t < since_ns) or (keep is not None and not keep(row)):
                continue
            seq += 1
            if len(heap) < limit:
                heapq.heappush(heap, (t, seq, row))
            elif t > heap[0][0]:
                heapq.heapreplace(heap, (t, seq, row))
    return [row for _, _, row in sorted(heap, key=lambda e: (e[0], e[1]), reverse=True)]


# -- one trace -----------------------------------------------------------------------------------


def find_trace(directory: Path, trace_id: str, *, warn: Warn = warn_stderr) -> Trace | None:
    """The trace whose id is `trace_id` or starts with it (lowercase hex), newest file first; in a
    segment the rows locate its line without parsing the others. None if no file has it."""
    prefix = trace_id.lower()
    for f in reversed(_listing(directory)):
        for trace in _guarded(_find_in_file(f.path, prefix, warn), f.path, warn):
            return trace
    return None


def _find_in_file(path: Path, prefix: str, warn: Warn) -> Iterator[Trace]:
    if not is_segment(path):
        yield from _find_in_foreign(path, prefix, warn)
        return
    start = line = 0
    for row, end in _stored_rows(path, warn):
        line += 1
        if str(row.get("trace_id") or "").lower().startswith(prefix):
            for n, _, raw in _lines(path, start, line - 1):
                yield from _matching(line_traces(path, n, raw, warn), prefix)
                return
        start = end
    needle = prefix.encode()
    for n, _, raw in _lines(path, start, line):
        if raw.find(needle) >= 0:  # not `in`: see `tfgw.providers.http.CR`
            yield from _matching(line_traces(path, n, raw, warn), prefix)


def _find_in_foreign(path: Path, prefix: str, warn: Warn) -> Iterator[Trace]:
    needle = prefix.encode()
    merged: dict[str, tuple[int, list[Pair]]] = {}
    for line, _, raw in _lines(path):
        if raw.find(needle) < 0:
            continue
        data = _decode(path, line, raw, warn)
        for trace_id, pairs in _groups(path, line, data or {}, warn).items():
            if trace_id.lower().startswith(prefix):
                merged.setdefault(trace_id, (line, []))[1].extend(pairs)
    for trace_id, (line, pairs) in merged.items():
        yield Trace(trace_id, tuple(pairs), path, line)


def _matching(traces: list[Trace], prefix: str) -> list[Trace]:
    return [t for t in traces if t.trace_id.lower().startswith(prefix)]


def decode_span(resource: Mapping[str, Any], span: Mapping[str, Any]) -> dict[str, Any]:
    """One span as a flat, decoded object: ids, names, times (Unix ns), status, attributes,
    events and resource attributes as plain values (what `--json` prints for a span)."""
    start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    status = span.get("status") or {}
    code = status.get("code") or otlp.STATUS_UNSET
    return {
        "trace_id": span.get("traceId"),
        "span_id": span.get("spanId"),
        "parent_span_id": span.get("parentSpanId") or None,
        "name": span.get("name"),
        "kind": otlp.KIND_NAMES.get(span.get("kind") or 0, str(span.get("kind"))),
        "start": start,
        "end": end,
        "duration_ms": (end - start) / 1e6 if end >= start else None,
        "status": {otlp.STATUS_OK: "ok", otlp.STATUS_ERROR: "error"}.get(code, "unset"),
        "status_message": status.get("message") or None,
        "attributes": otlp.decode_attributes(span.get("attributes") or ()),
        "events": [
            {
                "name": e.get("name"),
                "time": int(e.get("timeUnixNano") or 0),
                "attributes": otlp.decode_attributes(e.get("attributes") or ()),
            }
            for e in span.get("events") or ()
        ],
        "resource": otlp.decode_attributes(resource.get("attributes") or ()),
    }


# -- following -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cursor:
    offset: int  # just past the last complete line read
    line: int | None  # lines before `offset`; None until a warning may need it


class Follower:
    """The traces of lines appended to the log after it was made (of every line with
    `from_start`), new files included, one trace per line and trace id.

    `poll()` reads what is there now; `follow()` polls for ever, sleeping `interval` seconds when
    nothing was new. A last line without its newline is being written: it is read once complete.
    A file that shrank was replaced: it is read again from its start. The directory need not
    exist: while it does not (yet, or any more) there is nothing to read, and once it appears
    every file in it is new, read from its start, as `tail -F` does. `present` says whether the
    directory was there at the last look; one that exists but cannot be listed raises
    `TraceLogError`."""

    def __init__(self, directory: Path, *, from_start: bool = False, warn: Warn = warn_stderr) -> None:
        self.directory = Path(directory)
        self._warn = warn
        self._cursors: dict[Path, _Cursor] = {}
        self.present = False
        for f in self._look():
            end = 0 if from_start else _last_newline_end(f.path, f.size)
            self._cursors[f.path] = _Cursor(end, 0 if end == 0 else None)

    def poll(self) -> Iterator[Trace]:
        """The traces of the lines completed since the last poll. The directory is listed (and
        `present` updated) at the call, the files are read as the iterator is consumed."""
        files = self._look()
        present = {f.path for f in files}
        for gone in [p for p in self._cursors if p not in present]:
            del self._cursors[gone]
        return self._read_files(files)

    def follow(
        self, interval: float = 0.15, *, seen: Callable[[bool], None] | None = None
    ) -> Iterator[Trace]:
        """`poll()` for ever. `seen(present)` is called at the first poll and whenever the
        directory appears or goes away, before the traces read in that poll."""
        shown: bool | None = None
        while True:
            traces = self.poll()
            if seen is not None and self.present is not shown:
                shown = self.present
                seen(shown)
            idle = True
            for trace in traces:
                idle = False
                yield trace
            if idle:
                time.sleep(interval)

    def _look(self) -> list[_File]:
        try:
            files = _scan(self.directory)
        except FileNotFoundError:
            self.present = False
            return []
        except OSError as exc:
            raise _unreadable(self.directory, exc) from exc
        self.present = True
        return files

    def _read_files(self, files: list[_File]) -> Iterator[Trace]:
        for f in files:
            cursor = self._cursors.setdefault(f.path, _Cursor(0, 0))
            if f.size < cursor.offset:
                cursor.offset, cursor.line = 0, 0
            if f.size > cursor.offset:
                yield from _guarded(self._read(f.path, cursor), f.path, self._warn)

    def _read(self, path: Path, cursor: _Cursor) -> Iterator[Trace]:
        if cursor.line is None:
            cursor.line = _count_lines(path, cursor.offset)
        with path.open("rb", buffering=BUFFER) as f:
            f.seek(cursor.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                cursor.offset += len(raw)
                cursor.line += 1
                yield from line_traces(path, cursor.line, raw, self._warn)


def _last_newline_end(path: Path, size: int, block: int = 1 << 16) -> int:
    """The offset just past the last newline in the first `size` bytes (0 if there is none)."""
    try:
        with path.open("rb") as f:
            pos = size
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                chunk = f.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    return start + i + 1
                pos = start
    except FileNotFoundError:
        pass
    return 0


def _count_lines(path: Path, offset: int) -> int:
    count = 0
    with path.open("rb") as f:
        while offset > 0:
            chunk = f.read(min(BUFFER, offset))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count
