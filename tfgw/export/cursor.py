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
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tfgw.tracing.segments import cursor_dir, log_segments

__all__ = ["Cursor", "Pending"]


@dataclass(slots=True)
class Pending:
    """Complete lines read from one segment: `data` is `start`..`end` of the file."""

    segment: str
    start: int
    end: int
    lines: list[bytes]


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
        """Complete lines not yet delivered, oldest segment first, about `max_bytes` in all."""
        out: list[Pending] = []
        budget = max_bytes
        present = set()
        for path in log_segments(self.trace_dir):
            present.add(path.name)
            start = self.offsets.get(path.name, 0)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start or budget <= 0:
                continue
            pending = _read_lines(path, start, min(size, start + budget))
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
