"""The numbers of `tfgw traces top`: request rows (`tfgw.tracing.rows`) in, a board per model out.

A `Window` keeps, per model, what the board needs of each request that touches the last
`window_s` seconds (a small `Entry`, not the row), in a deque evicted by time as the window
moves, so a refresh computes from memory and never re-reads the log. docs/traces-top.md says
what each number means; in short, for the requests that started in the window `[now - window,
now]`, per model (the one the client asked for):

- `requests`, `req_s` (requests / window), `errors`, `error_rate` (errors / requests);
- `latency_ms` and `ttft_ms` (streams) p50 and p95, exact, by nearest rank (as `traces stats`);
- `tokens_s`: tokens in + out / window; `cost_per_min`: USD / window in minutes;
- `mean_open_streams`: a log holds finished requests, so streams open right now cannot be seen;
  this is the mean number open over the window, the sum of each stream's time inside the window
  (streams that started before it count for their part inside) / the window;
- `req_s_series`: req/s in each of `buckets` equal slices of the window, oldest first.

Absent values are None, never 0: no streams, no TTFT; no usage reported, no tokens/s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tfgw.tracing.stats import percentile

__all__ = [
    "BUCKETS",
    "NS",
    "SORT_KEYS",
    "Entry",
    "Window",
    "board",
    "entry",
    "newest_end",
    "rfc3339",
    "select",
]

NS = 1_000_000_000
#: slices of the window in `req_s_series` (one sparkline character each)
BUCKETS = 12
#: what a board can be sorted by, in the order `s` cycles through them
SORT_KEYS = (
    "req_s", "error_rate", "p50", "p95", "ttft_p50", "ttft_p95", "tokens_s", "cost_per_min",
    "mean_open_streams", "model",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    """What the board keeps of one request: its span in time and what it adds up to."""

    start: int  # Unix ns
    end: int  # Unix ns; the start when the row has no duration
    error: bool
    duration_ms: float | None
    ttft_ms: float | None
    tokens: int | None  # in + out, None when neither was reported
    cost: float | None
    stream: bool


def entry(row: Mapping[str, Any]) -> Entry:
    start, duration = int(row["time"]), row.get("duration_ms")
    tokens_in, tokens_out = row.get("tokens_in"), row.get("tokens_out")
    tokens = None if tokens_in is None and tokens_out is None else (tokens_in or 0) + (tokens_out or 0)
    stream = bool(row.get("stream"))
    return Entry(
        start=start,
        end=start + (round(duration * 1_000_000) if duration is not None else 0),
        error=row.get("status") == "error",
        duration_ms=duration,
        ttft_ms=row.get("ttft_ms") if stream else None,
        tokens=tokens,
        cost=row.get("cost"),
        stream=stream,
    )


class Window:
    """The entries of the requests that touch the last `window_s` seconds, per model."""

    def __init__(self, window_s: int, buckets: int = BUCKETS) -> None:
        self.window_s = window_s
        self.buckets = buckets
        self._models: dict[str | None, deque[Entry]] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        """One row, in the order rows come (finish order, roughly: the log's write order)."""
        self._queue(row.get("model"), entry(row))

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows read all at once (the log's last stretch at start): queued by end time."""
        for model, e in sorted(((row.get("model"), entry(row)) for row in rows), key=lambda me: me[1].end):
            self._queue(model, e)

    def _queue(self, model: Any, e: Entry) -> None:
        self._models.setdefault(model if model is None else str(model), deque()).append(e)

    def evict(self, now: int) -> None:
        """Drop what ended before the window that ends at `now` (Unix ns) began."""
        low = now - self.window_s * NS
        for model in list(self._models):
            entries = self._models[model]
            while entries and entries[0].end < low:
                entries.popleft()
            if not entries:
                del self._models[model]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._models.values())

    def models(self, now: int) -> list[dict[str, Any]]:
        """Each model's numbers for the window that ends at `now`, most requests per second
        first (then by name); models with nothing in the window are left out."""
        out = [m for model, entries in self._models.items() if (m := self._model(model, entries, now))]
        return select(out, "req_s")

    def _model(self, model: str | None, entries: Iterable[Entry], now: int) -> dict[str, Any] | None:
        low = now - self.window_s * NS
        inside = [e for e in entries if low <= e.start <= now]
        streams = [e for e in entries if e.stream and e.end > low and e.start < now]
        if not inside and not streams:
            return None
        return {"model": model, **_numbers(inside, streams, low, now, self.window_s, self.buckets)}


def _numbers(
    inside: list[Entry], streams: list[Entry], low: int, now: int, window_s: int, buckets: int
) -> dict[str, Any]:
    """One model's numbers: `inside`, its requests that started in the window `[low, now]`;
    `streams`, its streams that overlap it. A pass per number over plain lists (faster in
    CPython than one pass that branches per entry)."""
    span = window_s * NS
    requests = len(inside)
    errors = sum(1 for e in inside if e.error)
    latencies = sorted([e.duration_ms for e in inside if e.duration_ms is not None])
    ttfts = sorted([e.ttft_ms for e in inside if e.ttft_ms is not None])
    tokens = [e.tokens for e in inside if e.tokens is not None]
    costs = [e.cost for e in inside if e.cost is not None]
    series = [0] * buckets
    for start in [e.start for e in inside]:
        series[min(buckets - 1, (start - low) * buckets // span)] += 1
    bucket_s = window_s / buckets
    return {
        "requests": requests,
        "req_s": requests / window_s,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "ttft_ms": {"p50": percentile(ttfts, 50), "p95": percentile(ttfts, 95)},
        "tokens_s": sum(tokens) / window_s if tokens else None,
        "cost_per_min": round(sum(costs) * 60 / window_s, 10) if costs else None,
        "mean_open_streams": (
            sum(min(e.end, now) - max(e.start, low) for e in streams) / span if streams else None
        ),
        "req_s_series": [n / bucket_s for n in series],
    }


def _sort_value(model: Mapping[str, Any], key: str) -> Any:
    if key in ("p50", "p95"):
        return model["latency_ms"][key]
    if key in ("ttft_p50", "ttft_p95"):
        return model["ttft_ms"][key[5:]]
    if key == "model":
        return str(model["model"] or "")
    return model[key]


def select(
    models: Iterable[dict[str, Any]],
    sort: str,
    *,
    reverse: bool = False,
    text: str = "",
    errors_only: bool = False,
) -> list[dict[str, Any]]:
    """The models to show: those whose name holds `text` (any case) and, with `errors_only`, that
    had an error, sorted by `sort` (one of `SORT_KEYS`): numbers largest first, the model name
    A to Z, `reverse` the other way; absent values last either way, ties by name."""
    needle = text.casefold()
    kept = [
        m for m in models if needle in str(m["model"] or "-").casefold() and (not errors_only or m["errors"])
    ]
    kept.sort(key=lambda m: str(m["model"] or ""))
    present = [m for m in kept if _sort_value(m, sort) is not None]
    absent = [m for m in kept if _sort_value(m, sort) is None]
    descending = (sort != "model") != reverse
    present.sort(key=lambda m: _sort_value(m, sort), reverse=descending)
    return present + absent


def rfc3339(ns: int) -> str:
    """`2024-01-01T00:00:07.500Z`: UTC, milliseconds."""
    moment = datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def board(
    window: Window, now: int, *, anchored: bool, targets: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The whole board, as `traces top --json` prints it; `targets` are the export targets'
    states (`tfgw.export.status.target_status()`, each with its name under `target`)."""
    return {
        "window_s": window.window_s,
        "now": rfc3339(now),
        "anchored": anchored,
        "bucket_s": window.window_s / window.buckets,
        "models": window.models(now),
        "targets": [dict(t) for t in targets],
    }


def newest_end(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The latest end (Unix ns) among `rows`, None for none."""
    return max((entry(row).end for row in rows), default=None)
