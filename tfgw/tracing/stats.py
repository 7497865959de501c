"""Aggregates over request rows (`tfgw.tracing.rows`): what `tfgw traces stats` reports.

For each group (and for all rows together): requests, errors and error rate, latency p50, p95
and p99, time to first token p50 and p95 (streamed requests that report one), and the sums of
tokens in, tokens out and cost (None when no row reported any).

Percentiles are exact, by the nearest-rank method: the p-th percentile of n sorted values is the
value of rank ceil(p * n / 100), so it is always one of the observed values. Latencies are kept
as C doubles (`array('d')`, 8 bytes a request); nothing else grows with the number of rows.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["GROUP_BY", "Aggregate", "aggregate", "percentile", "summarize_groups"]

#: the row keys a report may be grouped by (`--by`)
GROUP_BY = ("model", "provider", "key")


def percentile(ordered: Sequence[float], p: int) -> float | None:
    """Nearest-rank percentile of already sorted values; None for no values."""
    n = len(ordered)
    if not n:
        return None
    return ordered[max(1, -(-p * n // 100)) - 1]


class Aggregate:
    """The running totals of one group of rows."""

    __slots__ = ("cost", "errors", "latencies", "requests", "streams", "tokens_in", "tokens_out", "ttfts")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.streams = 0
        self.latencies = array("d")
        self.ttfts = array("d")
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.cost: float | None = None

    def add(self, row: Mapping[str, Any]) -> None:
        get = row.get
        self.requests += 1
        if get("status") == "error":
            self.errors += 1
        if (duration := get("duration_ms")) is not None:
            self.latencies.append(duration)
        if get("stream"):
            self.streams += 1
            if (ttft := get("ttft_ms")) is not None:
                self.ttfts.append(ttft)
        if (value := get("tokens_in")) is not None:
            self.tokens_in = value if self.tokens_in is None else self.tokens_in + value
        if (value := get("tokens_out")) is not None:
            self.tokens_out = value if self.tokens_out is None else self.tokens_out + value
        if (value := get("cost")) is not None:
            self.cost = value if self.cost is None else self.cost + value

    def merge(self, other: Aggregate) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.streams += other.streams
        self.latencies.extend(other.latencies)
        self.ttfts.extend(other.ttfts)
        for name in ("tokens_in", "tokens_out", "cost"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else mine + theirs)

    def summary(self) -> dict[str, Any]:
        latencies, ttfts = sorted(self.latencies), sorted(self.ttfts)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "latency_ms": {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)},
            "ttft_ms": {f"p{p}": percentile(ttfts, p) for p in (50, 95)},
            "streams": self.streams,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": None if self.cost is None else round(self.cost, 10),
        }


def aggregate(rows: Iterable[Mapping[str, Any]], by: str | None = None) -> dict[Any, Aggregate]:
    """One `Aggregate` per value of the row key `by` (a single group keyed None without `by`)."""
    groups: dict[Any, Aggregate] = {}
    for row in rows:
        group_key = row.get(by) if by else None
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = Aggregate()
        group.add(row)
    return groups


def summarize_groups(groups: Mapping[Any, Aggregate], by: str | None) -> dict[str, Any]:
    """`{"all": summary, "groups": [{by: value, **summary}, ...]}`, groups by most requests first
    (then by name); `groups` is empty without `by`."""
    total = Aggregate()
    for group in groups.values():
        total.merge(group)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].requests, str(kv[0])))
    return {
        "all": total.summary(),
        "groups": [{by: key, **group.summary()} for key, group in ordered] if by else [],
    }
