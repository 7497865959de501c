"""Where each export target is in the trace log, kept on disk so nothing is lost or sent twice.

A target's cursor is a byte offset per segment file: several gateway workers append to their own
segments at the same time, so one position in one file could not say what was read. Contract of
`{trace dir}/.cursors/{target}.json` (written only by the exporter that owns the target, always
whole, through a rename):

    {"offsets": {"tfgw-20261123-101500-4242-0001.jsonl": 81234, ...},
     "delivered": 1200, "rejected": 3, "partial_rejected": 0, "dropped": 0,
     "last_error": null, "last_success": 1795432062.1, "retrying": false, "lag_s": 0.4}

An offset only ever moves forward, and only after the target accepted (or permanently rejected)
every span before it: an outage, a slow backend or a restart of the gateway or of the exporter
resumes exactly there. A cursor that does not exist yet starts at the end of the log: a new target
gets the traces from then on (`tfgw replay` sends older ones). A segment the log's retention
deleted before its spans were delivered is counted in `dropped` by the gateway
(`.cursors/dropped.jsonl`, one appended line per segment and target).

A last line without its newline is one being written, read once it is whole, unless its writer
is done with the segment: a newer segment of the same process exists (the writer closed this one
after a write it could not cut back), or that process is gone and the segment has not changed
for `TORN_AFTER_S` (a gateway killed mid-write). Such a torn tail is never completed: `read`
returns it as `Pending.torn` (its bytes), so the cursor moves past it and the exporter counts it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tfgw.tracing.segments import cursor_dir, log_segments

__all__ = ["TORN_AFTER_S", "Cursor", "Pending"]

#: a torn tail whose writer process is gone is final once the segment has not changed this long
TORN_AFTER_S = 1.0
TAIL_CHUNK = 64 * 1024
_WRITER = re.compile(r"tfgw-\d{8}-\d{6}-(\d+)-(\d+)\.jsonl")


@dataclass(slots=True)
class Pending:
    """Complete lines read from one segment: `data` is `start`..`end` of the file; `torn`: the
    bytes at the end of `start`..`end` that are a torn last line no writer will finish (skipped)."""

    segment: str
    start: int
    end: int
    lines: list[bytes]
    torn: int = 0


@dataclass(slots=True)
class Cursor:
    trace_dir: Path
    target: str
    offsets: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return cursor_dir(self.trace_dir) / f"{self.target}.json"

    @classmethod
    def load(cls, trace_dir: Path, target: str) -> Cursor:
        """The target's cursor; a new one starts at the end of the log (and is saved at once)."""
        cursor = cls(trace_dir, target)
        try:
            data = orjson.loads(cursor.path.read_bytes())
        except FileNotFoundError:
            cursor.offsets = {p.name: p.stat().st_size for p in log_segments(trace_dir)}
            cursor.save()
            return cursor
        except (OSError, orjson.JSONDecodeError):
            data = {}  # unreadable: a crash mid-rename cannot leave this, a user's edit can
        cursor.offsets = {str(k): int(v) for k, v in (data.pop("offsets", None) or {}).items()}
        cursor.stats = data
        return cursor

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(orjson.dumps({"offsets": self.offsets, **self.stats}, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)

    def read(self, max_bytes: int) -> list[Pending]:
        """Complete lines not yet delivered, oldest segment first, about `max_bytes` in all; a
        finished segment's torn tail comes as `Pending.torn`, so that `advance` passes it."""
        out: list[Pending] = []
        budget = max_bytes
        present = set()
        segments = log_segments(self.trace_dir)
        for path in segments:
            present.add(path.name)
            start = self.offsets.get(path.name, 0)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            size = stat.st_size
            if size <= start or budget <= 0:
                continue
            pending = _read_lines(path, start, min(size, start + budget))
            if (pending is None or pending.end < size) and _finished(path, stat, segments):
                pending = _without_torn_tail(path, start, size, pending)
            if pending is not None:
                out.append(pending)
                budget -= pending.end - pending.start
        for gone in set(self.offsets) - present:  # deleted by retention: nothing left to read
            del self.offsets[gone]
        return out

    def advance(self, pending: list[Pending]) -> None:
        for p in pending:
            if p.end > self.offsets.get(p.segment, 0):
                self.offsets[p.segment] = p.end

    def undelivered_bytes(self) -> int:
        total = 0
        for path in log_segments(self.trace_dir):
            with contextlib.suppress(FileNotFoundError):
                total += max(0, path.stat().st_size - self.offsets.get(path.name, 0))
        return total


def _finished(path: Path, stat: os.stat_result, segments: list[Path]) -> bool:
    """Whether no writer will append to the segment again (see the module's docstring)."""
    match = _WRITER.fullmatch(path.name)
    if match is None:
        return False
    pid, seq = int(match[1]), int(match[2])
    for other in segments:
        theirs = _WRITER.fullmatch(other.name)
        if theirs is not None and int(theirs[1]) == pid and int(theirs[2]) > seq:
            return True
    return time.time() - stat.st_mtime >= TORN_AFTER_S and not _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _without_torn_tail(path: Path, start: int, size: int, pending: Pending | None) -> Pending | None:
    """`pending` (the segment's whole lines from `start`) extended over the torn tail up to `size`,
    when no newline follows its last line: else as it is (a budget stopped it before the end, or
    the line was finished meanwhile)."""
    end = start if pending is None else pending.end
    with path.open("rb") as f:
        f.seek(end)
        at = end
        while at < size:
            chunk = f.read(min(TAIL_CHUNK, size - at))
            if not chunk or b"\n" in chunk:
                return pending
            at += len(chunk)
    if pending is None:
        return Pending(path.name, start, size, [], torn=size - start)
    return Pending(path.name, pending.start, size, pending.lines, torn=size - end)


def _read_lines(path: Path, start: int, stop: int) -> Pending | None:
    """The complete lines in `start`..`stop` (extended to the end of a line cut by `stop`)."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(stop - start)
        if data and not data.endswith(b"\n"):
            rest = f.readline()  # finish the line the budget cut, if it is complete on disk
            data += rest
    end = data.rfind(b"\n") + 1
    if end == 0:
        return None  # only a line still being written (or a torn one)
    # a line is kilobytes: one memchr (find) a line beats bytes.split's byte-by-byte loop
    lines, at, find = [], 0, data.find
    while at < end:
        newline = find(b"\n", at, end)
        if newline > at:
            lines.append(data[at:newline])
        at = newline + 1
    return Pending(path.name, start, start + end, lines)
