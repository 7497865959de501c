"""The trace log's rows files followed from a cursor: what the metrics deriver reads.

Every segment `X.jsonl` of the log has its `X.rows` (tfgw.tracing.log writes it, one
`tfgw.tracing.rows` row per request plus `end`); several workers write their own. The cursor is a
byte offset per rows file, up to the last complete line read. A rows file not in the cursor is new:
it is read from its start. Lines another tool wrote (a `*.jsonl` file without rows) and segment
lines whose rows were lost in a crash are not counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tfgw.slices import give_way

__all__ = ["ROWS_GLOB", "RowsFollower", "end_of_log"]

log = logging.getLogger("tfgw.metrics")

ROWS_GLOB = "tfgw-*.rows"


def end_of_log(trace_dir: Path) -> dict[str, int]:
    """The cursor at the end of every rows file now (just past its last complete line)."""
    offsets = {}
    for path in sorted(trace_dir.glob(ROWS_GLOB)):
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            offsets[path.name] = data.rfind(b"\n") + 1
    return offsets


class RowsFollower:
    def __init__(self, trace_dir: Path, offsets: dict[str, int]) -> None:
        self.trace_dir = trace_dir
        self.offsets = dict(offsets)
        self.bad_lines = 0

    def poll(self, max_bytes: int = 4 << 20) -> Iterator[dict[str, Any]]:
        """The rows completed since the last poll, about `max_bytes` of them, oldest file first."""
        budget = max_bytes
        present = set()
        for path in sorted(self.trace_dir.glob(ROWS_GLOB)):
            present.add(path.name)
            if budget <= 0:
                continue
            start = self.offsets.get(path.name, 0)
            try:
                size = path.stat().st_size
                if size <= start:
                    continue
                data = _read(path, start, min(size, start + budget))
            except FileNotFoundError:  # retention deleted it meanwhile
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[path.name] = start + end
            budget -= end
            yield from self._rows(path, data[:end])
        for gone in set(self.offsets) - present:
            del self.offsets[gone]

    def _rows(self, path: Path, data: bytes) -> Iterator[dict[str, Any]]:
        for raw in data.split(b"\n")[:-1]:  # `data` ends with its last line's newline
            give_way()  # the exporter's thread: a poll's rows are milliseconds (tfgw.slices)
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                self.bad_lines += 1
                if self.bad_lines == 1:
                    log.warning("%s: a rows line that is not a JSON object, skipped (and any more)", path)
                continue
            yield row


def _read(path: Path, start: int, stop: int) -> bytes:
    """`start`..`stop` of the file, extended to the end of the line `stop` cuts (if it is there)."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(stop - start)
        if data and not data.endswith(b"\n"):
            data += f.readline()
    return data
