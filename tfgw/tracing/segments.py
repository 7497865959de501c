"""The trace log's layout on disk, as both its writer (retention) and its readers (exporters) see it.

- `{dir}/tfgw-*.jsonl`: the segments (tfgw.tracing.log says what is in them);
- `{dir}/.cursors/{target}.json`: where each export target is (tfgw.export.cursor writes them;
  retention reads them, so that nothing a target has not delivered is deleted before its time);
- `{dir}/.cursors/dropped.jsonl`: one appended line per segment retention deleted before a target
  had it all: `{"target", "segment", "spans", "time"}`.
- `{dir}/.writers/{pid}.json`: what one gateway worker's trace log dropped, by reason (written by
  that worker's writer thread whenever it changed; the metrics deriver sums them):
  `{"pid", "time", "backlog", "write_failed", "encode_error"}`.

It sits here, below both, so the gateway's side never imports the exporter's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "DROP_REASONS",
    "SEGMENT_GLOB",
    "cursor_dir",
    "dropped_spans",
    "log_segments",
    "read_offsets",
    "record_dropped",
    "write_writer_drops",
    "writer_drops",
]

SEGMENT_GLOB = "tfgw-*.jsonl"


def cursor_dir(trace_dir: Path) -> Path:
    return trace_dir / ".cursors"


def log_segments(trace_dir: Path) -> list[Path]:
    """tfgw's own segments, in creation order (their names start with the UTC time)."""
    return sorted(trace_dir.glob(SEGMENT_GLOB))


def read_offsets(trace_dir: Path, targets: Iterable[str]) -> dict[str, dict[str, int]]:
    """The saved offsets of each target that has a cursor (read only: nothing is created)."""
    out: dict[str, dict[str, int]] = {}
    for target in targets:
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            data = orjson.loads((cursor_dir(trace_dir) / f"{target}.json").read_bytes())
            out[target] = {str(k): int(v) for k, v in (data.get("offsets") or {}).items()}
    return out


def record_dropped(trace_dir: Path, target: str, segment: str, spans: int) -> None:
    """Count spans of `segment` that `target` never got: retention had to delete it first."""
    line = orjson.dumps({"target": target, "segment": segment, "spans": spans, "time": time.time()})
    path = cursor_dir(trace_dir) / "dropped.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:  # one small append: atomic even with several gateway workers
        f.write(line + b"\n")


def dropped_spans(trace_dir: Path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in _dropped_records(trace_dir):
        totals[record["target"]] = totals.get(record["target"], 0) + int(record.get("spans") or 0)
    return totals


def _dropped_records(trace_dir: Path) -> Iterator[dict[str, Any]]:
    try:
        raw = (cursor_dir(trace_dir) / "dropped.jsonl").read_bytes()
    except FileNotFoundError:
        return
    for line in raw.splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict) and "target" in record:
                yield record


#: why a trace log drops a trace: too many waiting to be written, a failed write, an encoding bug
DROP_REASONS = ("backlog", "write_failed", "encode_error")


def _writers_dir(trace_dir: Path) -> Path:
    return trace_dir / ".writers"


def write_writer_drops(trace_dir: Path, pid: int, drops: dict[str, int]) -> None:
    """Save what the trace log of process `pid` dropped so far, by reason (a temporary file, then a
    rename: a reader sees the old counts or the new ones)."""
    directory = _writers_dir(trace_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{pid}.json.tmp"
    tmp.write_bytes(orjson.dumps({"pid": pid, "time": time.time_ns(), **drops}))
    tmp.replace(directory / f"{pid}.json")


def writer_drops(trace_dir: Path, since_ns: int = 0) -> dict[str, int]:
    """The traces every writer dropped, by reason, summed over the files written at or after
    `since_ns` (a gateway's start: earlier runs' files are left out)."""
    totals = dict.fromkeys(DROP_REASONS, 0)
    for path in _writers_dir(trace_dir).glob("*.json"):
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            record = orjson.loads(path.read_bytes())
            if int(record.get("time") or 0) >= since_ns:
                for reason in DROP_REASONS:
                    totals[reason] += int(record.get(reason) or 0)
    return totals
