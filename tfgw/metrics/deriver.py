"""The deriver: one thread of the exporter process that follows the trace log's rows from its start
cursor, aggregates them (`Aggregate`), and rewrites `metrics.prom` (tfgw.metrics.snapshot) at most
once a second while anything changed: new rows, or the export targets' counters.

Off the request path by construction: the gateway's only part is the rows it already writes, and
every worker of `--workers N` (every replica writing one log) is summed here. With `[tracing]
enabled = false` nothing is written, so there are no request metrics.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from tfgw.config import Settings
from tfgw.config_file import write_atomic
from tfgw.metrics.aggregate import Aggregate
from tfgw.metrics.follow import RowsFollower, end_of_log
from tfgw.metrics.prometheus import Prefixes, render
from tfgw.metrics.snapshot import SNAPSHOT, START, state_dir
from tfgw.slices import give_way
from tfgw.tracing.segments import writer_drops

__all__ = ["Deriver", "prepare"]

log = logging.getLogger("tfgw.metrics")

#: how often the rows are looked at
POLL_S = 0.25
#: the snapshot is rewritten at most this often
WRITE_S = 1.0

Targets = Callable[[], Mapping[str, Mapping[str, Any]]]


def prepare(settings: Settings) -> tuple[int, dict[str, int]]:
    """What `tfgw serve` does before any worker writes a trace: the start cursor at the end of the
    log now, and an empty snapshot in place of the last run's. Returns the cursor."""
    state = state_dir(settings)
    started, offsets = time.time_ns(), end_of_log(settings.tracing.path)
    write_atomic(state / START, orjson.dumps({"started": started, "offsets": offsets}).decode())
    write_atomic(state / SNAPSHOT, render(Aggregate(started)))
    return started, offsets


def _load_start(settings: Settings) -> tuple[int, dict[str, int]]:
    """The start cursor; one that is missing or unreadable (`tfgw exporter` alone) is made now."""
    path = state_dir(settings) / START
    with contextlib.suppress(
        OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError
    ):
        data = orjson.loads(path.read_bytes())
        return int(data["started"]), {str(k): int(v) for k, v in data["offsets"].items()}
    return prepare(settings)


class Deriver:
    def __init__(self, settings: Settings, targets: Targets | None = None) -> None:
        self.trace_dir: Path = settings.tracing.path
        self.path = state_dir(settings) / SNAPSHOT
        started, offsets = _load_start(settings)
        self.aggregate = Aggregate(started)
        self.follower = RowsFollower(self.trace_dir, offsets)
        self.targets = targets
        #: held while the aggregate changes or is read (`tfgw.metrics.otlp` reads it from its threads)
        self.lock = threading.Lock()
        self._dirty = True
        self._written = 0.0
        self._prefixes: Prefixes = {}

    def run(self, stop: threading.Event) -> None:
        while True:
            busy = self.step()
            if stop.wait(0 if busy else POLL_S):
                break
        self.write(force=True)

    def step(self) -> bool:
        """Read what the rows have new (a bounded amount) and write the snapshot when it is due;
        whether there may be more to read at once."""
        rows = list(self.follower.poll())
        if rows:
            with self.lock:
                for row in rows:
                    self.aggregate.add(row)
                    give_way()  # the exporter's thread (tfgw.slices)
            self._dirty = True
        self.write()
        return len(rows) > 0 and self._behind()

    def write(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_S:
            return
        self._written = now
        if self.targets is not None:
            values = self.targets()
            with self.lock:
                self._dirty = self.aggregate.set_targets(values) or self._dirty
        drops = writer_drops(self.trace_dir, self.aggregate.started_ns)
        with self.lock:
            self._dirty = self.aggregate.set_trace_log_drops(drops) or self._dirty
        if not (self._dirty or force):
            return
        with self.lock:
            text = render(self.aggregate, self._prefixes)
        try:
            write_atomic(self.path, text)
            self._dirty = False
        except OSError as exc:  # a full disk: the next write may work
            log.warning("cannot write %s: %s", self.path, exc)

    def _behind(self) -> bool:
        return any(
            _size(self.trace_dir / name) > offset for name, offset in list(self.follower.offsets.items())
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
