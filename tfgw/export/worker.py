"""The exporter: each target reads the trace log from its cursor, encodes, sends, and moves on only
once the backend took the batch.

Runs as its own process (`tfgw exporter`, which `tfgw serve` starts and restarts), one thread per
target, so encoding and network work never hold the gateway's event loop or its GIL, and a slow
or dead backend only ever delays its own target. Delivery follows the OTLP specification: a
retryable failure (429/502/503/504, a retryable gRPC code, a connection error, a timeout) is
retried with exponential backoff and jitter, honouring Retry-After, for as long as it takes,
without reading further; a permanent rejection is counted and skipped; a partial success is
counted and not retried. Nothing is held in memory across a restart: the cursor on disk says what
is left to send.

With `[bus] kind = "nats"` the same process publishes the log to JetStream instead (tfgw.bus.publish,
a cursor of its own), and runs the targets only as consumers of the stream when told to
(`tfgw serve --exporter`; `run_exporter` says what runs when).
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from tfgw.config import Settings
from tfgw.export import encode, send
from tfgw.export.cursor import Cursor, Pending
from tfgw.export.targets import ResolvedTarget, enabled_targets
from tfgw.metrics.snapshot import state_dir
from tfgw.retry import Backoff
from tfgw.slices import give_way
from tfgw.tracing.segments import dropped_spans

__all__ = ["Delivering", "TargetExporter", "Work", "exporter_main", "run_exporter"]

log = logging.getLogger("tfgw.exporter")

#: how much of the log one batch reads (before encoding; a batch is split under 4 MiB to send):
#: 1 MiB, ~600-800 spans of the gateway's. 2 MiB cost the same CPU a span and ~4 MiB more of the
#: exporter's peak RSS (bench/README.md, "Memory of the tree")
BATCH_BYTES = 1024 * 1024
#: how often an idle target looks for new lines
POLL_S = 0.2
#: the status in the cursor file is refreshed at least this often (a heartbeat for `otel status`)
HEARTBEAT_S = 2.0


@dataclass
class TargetExporter:
    target: ResolvedTarget
    trace_dir: Path
    stop: threading.Event
    clock: Callable[[], float] = time.time
    batch_bytes: int = BATCH_BYTES
    stats: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        cursor = Cursor.load(self.trace_dir, self.target.name)
        self.stats = {
            "delivered": 0,
            "rejected": 0,
            "partial_rejected": 0,
            "unreadable": 0,
            "unsendable": 0,
            "retrying": False,
            "attempts": 0,
            "retries": 0,
            "last_error": None,
            "warning": None,
            "last_success": None,
            "lag_s": 0.0,
            **{k: v for k, v in cursor.stats.items() if k not in ("pending_bytes", "updated")},
        }
        sender = send.sender_for(self.target)
        backoff = Backoff()
        saved = 0.0
        try:
            while not self.stop.is_set():
                pending = cursor.read(self.batch_bytes)
                if not pending:
                    self.stats["lag_s"] = 0.0
                    if self.clock() - saved >= HEARTBEAT_S:
                        saved = self._save(cursor)
                    self.stop.wait(POLL_S)
                    continue
                if not self._deliver(pending, sender, backoff, cursor):
                    return  # stopping: the cursor stays before this batch, which is sent again
                cursor.advance(pending)
                saved = self._save(cursor)
        finally:
            sender.close()
            self._save(cursor)

    def _deliver(self, pending: list[Pending], sender: send.Sender, backoff: Backoff, cursor: Cursor) -> bool:
        lines = self._prepared(pending)
        first = next(lines, None)
        if first is None:
            return True
        self.stats["lag_s"] = max(0.0, self.clock() - _newest_end(first))
        for batch in encode.batches(itertools.chain((first,), lines), self.target.protocol):
            count_dropped(self.stats, batch, self.target.name)
            if not batch.spans:
                continue
            delivery = send.deliver(
                sender, batch, backoff, wait=self.stop.wait, on_retry=lambda r: self._retrying(r, cursor)
            )
            if delivery.stopped:
                return False
            self._delivered(batch, delivery.result)
        return True

    def _prepared(self, pending: list[Pending]) -> Iterator[Mapping[str, Any]]:
        """The lines parsed and prepared one at a time, as `encode.batches` takes them: each
        line's dicts are encoded and freed while they are still in the CPU's caches, and only
        the encoded spans of a batch are held (not its lines, parsed, at ten times their size)."""
        target = self.target
        for p in pending:
            if p.torn:
                self.stats["unreadable"] += 1
                log.warning(
                    "%s: skipped a torn last line (%d bytes, no newline) at the end of %s: its writer "
                    "stopped mid-write", target.name, p.torn, p.segment,
                )  # fmt: skip
            for raw in p.lines:
                give_way()  # between two lines: encoding a batch is milliseconds (tfgw.slices)
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    self.stats["unreadable"] += 1
                    continue
                if isinstance(line, dict):
                    yield encode.prepare(line, target)

    def _delivered(self, batch: encode.EncodedBatch, result: send.SendResult) -> None:
        if not count_delivery(self.stats, batch, result, self.clock()):
            log.warning("target %s rejected %d spans: %s", self.target.name, batch.spans, result.message)

    def _retrying(self, result: send.SendResult, cursor: Cursor) -> None:
        count_retry(self.stats, result)
        self._save(cursor)

    def _save(self, cursor: Cursor) -> float:
        now = self.clock()
        self.stats["pending_bytes"] = cursor.undelivered_bytes()  # for the metrics too
        cursor.stats = {**self.stats, "updated": now}
        try:
            cursor.save()
        except OSError as exc:  # a full disk: keep sending, the next save may work
            log.warning("could not save the cursor of %s: %s", self.target.name, exc)
        return now


def _newest_end(line: Mapping[str, Any]) -> float:
    ends = [
        int(span.get("endTimeUnixNano") or 0)
        for rs in line.get("resourceSpans") or ()
        for ss in rs.get("scopeSpans") or ()
        for span in ss.get("spans") or ()
    ]
    return max(ends, default=0) / 1e9


def count_dropped(stats: dict[str, Any], batch: encode.EncodedBatch, target: str) -> None:
    """The spans of a batch that cannot be sent at all (too large for one payload), counted and
    said (both deliverers)."""
    if batch.dropped:
        stats["unsendable"] += batch.dropped_spans
        for dropped in batch.dropped:
            log.warning("%s: %s", target, dropped.reason)


def count_retry(stats: dict[str, Any], result: send.SendResult) -> None:
    """An export request that failed with a retryable error, in a target's `stats` (both
    deliverers): the batch is sent again."""
    stats["retrying"] = True
    stats["attempts"] += 1
    stats["retries"] += 1
    stats["last_error"] = f"retrying ({result.status}): {result.message}"


def count_delivery(
    stats: dict[str, Any], batch: encode.EncodedBatch, result: send.SendResult, now: float
) -> bool:
    """A batch the backend answered for good, in a target's `stats` (the local log's exporter and
    NATS's consumer keep the same ones): whether it was accepted (in whole or in part). The
    `warning` of an answer that is not OTLP's stays until an answer that is."""
    stats["retrying"] = False
    stats["attempts"] += 1
    if result.outcome == "accepted":
        stats["warning"] = result.warning
        stats["delivered"] += batch.spans - result.rejected_spans
        stats["partial_rejected"] += result.rejected_spans
        if result.rejected_spans:
            stats["last_error"] = f"partial success: {result.message}"
        stats["last_success"] = now
        return True
    stats["rejected"] += batch.spans
    stats["last_error"] = f"rejected ({result.status}): {result.message}"
    return False


def exporter_main(
    settings: Settings, *, nice: int = 0, parent: int | None = None, exporter: bool = False
) -> int:
    """The exporter as a process: its log lines, its CPU priority, then `run_exporter`; with
    `parent`, stopped as by SIGTERM once that process is gone (a `tfgw serve` killed with SIGKILL
    cannot stop its exporter itself, and the exporter runs in a session of its own). `exporter`:
    `tfgw serve --exporter` (see `run_exporter`)."""
    logging.basicConfig(level=logging.INFO, format="tfgw exporter: %(message)s")
    if nice:
        os.nice(nice)
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent,), name="tfgw-parent-watch", daemon=True).start()
    return run_exporter(settings, exporter=exporter)


#: how often the exporter looks whether `tfgw serve` is still its parent
PARENT_POLL_S = 0.5


def _end_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    log.warning("tfgw serve (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


Work = list[tuple[str, Callable[[], None]]]


class Delivering(Protocol):
    """What the metrics read of a target's delivery: a log-mode `TargetExporter`, or a NATS-mode
    consumer (`tfgw.bus.consume.TargetConsumer`)."""

    @property
    def target(self) -> ResolvedTarget: ...

    @property
    def stats(self) -> dict[str, Any]: ...


def run_exporter(settings: Settings, stop: threading.Event | None = None, *, exporter: bool = False) -> int:
    """The exporter process's work until SIGTERM/SIGINT (or `stop`); returns an exit code.

    `[bus] kind = "local"`: every enabled target read from the trace log, and the metrics derived
    from it (with tracing on). `"nats"`: the publisher (the log onto the stream, tfgw.bus.publish)
    and the metrics of this replica's log, and, with `exporter` (`tfgw serve --exporter`), every
    enabled target's consumer on the stream (`tfgw.bus.consume.target_consumers`, the same work
    `tfgw exporter` does in NATS mode). `exporter` changes nothing in local mode."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    nats = settings.bus.kind == "nats"
    if not settings.tracing.enabled and (not enabled_targets(settings) or (nats and not exporter)):
        log.warning("no export target is configured and tracing is disabled: nothing to do")
        return 0
    # parsing lines makes short-lived dicts by the million: collect the young generation less
    # often (measured: +8-21 % spans/s, bench/export_throughput.py --gc-threshold)
    gc.set_threshold(20_000, 10, 10)
    trace_dir = settings.tracing.path
    if settings.tracing.enabled or not nats:
        try:
            trace_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("cannot read the trace log in %s: %s", trace_dir, exc)
            return 1
    work = _nats_work(settings, stop, exporter=exporter) if nats else _log_work(settings, stop)
    failed: list[str] = []

    def guarded(name: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception:  # a bug: stop everything, so the supervisor starts a fresh process
            log.exception("the exporter of %s failed", name)
            failed.append(name)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(name, run), name=f"tfgw-export-{name}") for name, run in work
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(15)
    return 1 if failed else 0


def _log_work(settings: Settings, stop: threading.Event) -> Work:
    """Local mode: one exporter per enabled target from the trace log, and the metrics."""
    exporters = [TargetExporter(t, settings.tracing.path, stop) for t in enabled_targets(settings).values()]
    work: Work = [(e.target.name, e.run) for e in exporters]
    if settings.tracing.enabled:
        work += _metrics_work(settings, exporters, stop)
    return work


def _nats_work(settings: Settings, stop: threading.Event, *, exporter: bool) -> Work:
    """NATS mode: the publisher and this replica's metrics (with tracing on), and the targets'
    consumers on the stream with `exporter`."""
    delivering: list[Delivering] = []
    work: Work = []
    if exporter:
        from tfgw.bus.consume import target_consumers

        consumers = target_consumers(settings, stop)
        delivering += consumers
        work += [(c.target.name, c.run) for c in consumers]
    if settings.tracing.enabled:
        from tfgw.bus.publish import CURSOR, Publisher

        work.append((CURSOR, Publisher(settings, stop).run))
        work += _metrics_work(settings, delivering, stop)
    return work


def _metrics_work(settings: Settings, exporters: Sequence[Delivering], stop: threading.Event) -> Work:
    """The metrics deriver and a pusher for each target with `metrics = true` (tfgw.metrics)."""
    from tfgw.metrics.deriver import Deriver

    trace_dir = settings.tracing.path

    def target_values() -> dict[str, dict[str, Any]]:
        dropped = dropped_spans(trace_dir)
        return {e.target.name: {**e.stats, "dropped": dropped.get(e.target.name, 0)} for e in exporters}

    try:
        deriver = Deriver(settings, target_values)
    except OSError as exc:
        log.error("cannot keep metrics in %s: %s", state_dir(settings), exc)
        return []
    work: Work = [("metrics", lambda: deriver.run(stop))]
    pushed = [e.target for e in exporters if e.target.metrics]
    if pushed:
        from tfgw.metrics.otlp import MetricsPusher

        for target in pushed:
            pusher = MetricsPusher(target, deriver)
            work.append((f"{target.name}-metrics", functools.partial(pusher.run, stop)))
    return work
