"""The span trees of `tfgw traces check`: the rules that need more than one span, across lines
and files (the Collector writes a trace over several lines and rotates files mid-trace).

- `duplicate-span-id`: two spans of one trace with the same id.
- `orphan`: more than one span of a trace whose parent is not in it (only the root may have an
  outside parent: the caller's span, from `traceparent`). Checked when a trace is closed.
- `child-time`: a child that starts before its parent or ends after it, by more than 1 ms.
- `trace-too-large`: past `MAX_SPANS_PER_TRACE` spans a trace's checks stop (memory).

What outlives a line is the state of open traces: for each span its id, times and name (about
350 bytes with its share of the trace's state). Bounds: `MAX_SPANS_PER_TRACE` spans a trace,
`MAX_OPEN_TRACES` open traces and `MAX_REMEMBERED_SPANS` spans over all of them (the least
recently seen trace is closed first; its orphan check runs then), and the ids of the last
`MAX_CLOSED_TRACE_IDS` closed traces. A trace whose spans come back after it was closed is
checked on as a new piece with its orphan check off, and is not counted twice while its id is
among those remembered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from tfgw.tracing.otlp.validate import ERROR, WARNING, Rule, Where

__all__ = [
    "MAX_CLOSED_TRACE_IDS",
    "MAX_OPEN_TRACES",
    "MAX_REMEMBERED_SPANS",
    "MAX_SPANS_PER_TRACE",
    "TREE_RULES",
    "Trees",
]

TREE_RULES: Final[dict[str, Rule]] = {
    "duplicate-span-id": Rule(ERROR, "two spans of one trace with the same spanId"),
    "orphan": Rule(ERROR, "more than one span of a trace with a parent outside it (only the root may)"),
    "child-time": Rule(WARNING, "a span starts before its parent or ends after it, by more than 1 ms"),
    "trace-too-large": Rule(WARNING, "a trace has too many spans to remember: its orphan checks stop"),
}

MAX_SPANS_PER_TRACE: Final = 10_000
MAX_OPEN_TRACES: Final = 10_000
MAX_REMEMBERED_SPANS: Final = 200_000
MAX_CLOSED_TRACE_IDS: Final = 100_000
CHILD_TOLERANCE_NS: Final = 1_000_000  # 1 ms

# A span whose parent was not seen yet: (where, start, end).
Waiting = tuple[Where, "int | None", "int | None"]


class OpenTrace:
    """What the cross-line checks keep of one open trace."""

    __slots__ = ("closed_before", "remembered", "spans", "too_large", "waiting")

    def __init__(self, closed_before: bool) -> None:
        # span id -> (start, end, label) of the spans seen (start/end None when invalid)
        self.spans: dict[str, tuple[int | None, int | None, str | None]] = {}
        # parent span id -> the spans that named it before it was seen
        self.waiting: dict[str, list[Waiting]] = {}
        self.remembered = 0
        self.too_large = False
        self.closed_before = closed_before


class Trees:
    """The open traces of one check run; findings go to `report(rule, where, message)`."""

    def __init__(self, report: Callable[[str, Where, str], None]) -> None:
        self.report = report
        self.traces = 0  # distinct traces seen
        self.open: OrderedDict[str, OpenTrace] = OrderedDict()
        self.closed: OrderedDict[str, None] = OrderedDict()
        self.remembered = 0
        self._cur_key: str | None = None  # the last span's trace id, and its state
        self._cur: OpenTrace | None = None

    def add(
        self, tkey: str, skey: str, parent: str | None, start: int | None, end: int | None, where: Where
    ) -> None:
        if tkey == self._cur_key and self._cur is not None:
            trace = self._cur
        else:
            found = self.open.get(tkey)
            if found is None:
                closed_before = tkey in self.closed
                if not closed_before:
                    self.traces += 1
                found = self.open[tkey] = OpenTrace(closed_before)
            else:
                self.open.move_to_end(tkey)
            trace = self._cur = found
            self._cur_key = tkey

        spans = trace.spans
        if skey in spans:
            self.report("duplicate-span-id", where, f"spanId {where[3]} appears twice in the trace")
        elif trace.remembered < MAX_SPANS_PER_TRACE:
            spans[skey] = (start, end, where[4])
            trace.remembered += 1
            self.remembered += 1
        elif not trace.too_large:
            trace.too_large = True
            self.report(
                "trace-too-large",
                where,
                f"the trace has more than {MAX_SPANS_PER_TRACE} spans: "
                "its duplicate, parent and orphan checks stop here",
            )
        if parent is not None and parent != skey:
            found_parent = spans.get(parent)
            if found_parent is not None:
                parent_start, parent_end, _ = found_parent
                if (
                    start is not None
                    and parent_start is not None
                    and start < parent_start - CHILD_TOLERANCE_NS
                ) or (end is not None and parent_end is not None and end > parent_end + CHILD_TOLERANCE_NS):
                    self.child_time(where, start, end, found_parent)
            elif not trace.too_large:
                trace.waiting.setdefault(parent, []).append((where, start, end))
                trace.remembered += 1
                self.remembered += 1
        children = trace.waiting.pop(skey, None) if trace.waiting else None
        if children is not None:
            trace.remembered -= len(children)
            self.remembered -= len(children)
            me = (start, end, where[4])
            for child_where, child_start, child_end in children:
                self.child_time(child_where, child_start, child_end, me)

    def child_time(
        self,
        where: Where,
        start: int | None,
        end: int | None,
        parent: tuple[int | None, int | None, str | None],
    ) -> None:
        parent_start, parent_end, parent_label = parent
        if start is not None and parent_start is not None and start < parent_start - CHILD_TOLERANCE_NS:
            self.report(
                "child-time", where, f"starts {_ms(parent_start - start)} before its parent {parent_label}"
            )
        if end is not None and parent_end is not None and end > parent_end + CHILD_TOLERANCE_NS:
            self.report("child-time", where, f"ends {_ms(end - parent_end)} after its parent {parent_label}")

    def bound(self) -> None:
        """Close the least recently seen traces while over the memory bounds."""
        if len(self.open) > MAX_OPEN_TRACES or self.remembered > MAX_REMEMBERED_SPANS:
            self.close_oldest()

    def close_oldest(self) -> None:
        while self.open and (len(self.open) > MAX_OPEN_TRACES or self.remembered > MAX_REMEMBERED_SPANS):
            key, trace = self.open.popitem(last=False)
            self.close(key, trace)

    def close_all(self) -> None:
        while self.open:
            key, trace = self.open.popitem(last=False)
            self.close(key, trace)

    def close(self, key: str, trace: OpenTrace) -> None:
        """The orphan check of a trace whose spans are all seen (or that is closed to save memory)."""
        self.remembered -= trace.remembered
        if key == self._cur_key:
            self._cur_key = self._cur = None
        self.closed[key] = None
        if len(self.closed) > MAX_CLOSED_TRACE_IDS:
            self.closed.popitem(last=False)
        if trace.too_large or trace.closed_before:
            return
        outside = [(parent, w) for parent, waiting in trace.waiting.items() for w in waiting]
        if len(outside) <= 1:
            return
        for parent, (where, _, _) in outside:
            self.report(
                "orphan",
                where,
                f"parent {parent} is not in the trace, and {len(outside) - 1} other span(s) of the trace "
                "have an outside parent too (only the root may)",
            )


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"
