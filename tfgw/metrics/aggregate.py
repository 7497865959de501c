"""The metrics' values, aggregated in plain Python from the trace log's rows (`tfgw.tracing.rows`).

One `Aggregate` per deriver: a dict per metric from a label-value tuple (in the catalog's label
order; None where a row has no value) to a number (counters, gauges) or a `Histogram`. A row costs
a dozen dict updates; the OpenTelemetry SDK's instruments cost about 12 times more for the same
calls (bench/README.md, "Metrics"), so they are not used: `tfgw.metrics.otlp` hands the SDK's data
model to its OTLP exporters instead.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from tfgw.metrics import catalog as c

__all__ = ["Aggregate", "Histogram"]

#: every key of a row this tfgw writes that the aggregate reads (tfgw.tracing.rows)
ROW_KEYS = (
    "model", "provider", "key", "status", "http_status", "route", "spans", "tokens_in", "tokens_out",
    "tokens_cached", "tokens_reasoning", "cost", "operation", "provider_system", "retries",
    "fallbacks", "cache_hit", "guardrails", "refusal", "duration_ms", "ttft_ms", "error_type", "chunks",
)  # fmt: skip
TIME_BUCKETS = len(c.DURATION.buckets)
TOKEN_BUCKETS = len(c.TOKEN_USAGE.buckets)

Labels = tuple[Any, ...]


class Histogram:
    """Explicit-bucket counts (the last one past every bound), sum, count, min and max."""

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def record(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1  # a bucket holds values <= its bound
        self.sum += value
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value


class Aggregate:
    """What the rows since `started` (Unix ns) add up to, and the export targets' last values."""

    def __init__(self, started_ns: int | None = None) -> None:
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        #: a counter's series count from 0 when first seen (`defaultdict`), the others are set
        self.series: dict[c.Metric, dict[Labels, Any]] = {
            m: defaultdict(int) if m.kind == c.COUNTER else {} for m in c.CATALOG
        }
        self.rows = 0
        s = self.series
        self._requests, self._tokens, self._cost = s[c.REQUESTS], s[c.TOKENS], s[c.COST]
        self._duration, self._usage = s[c.DURATION], s[c.TOKEN_USAGE]
        self._ttfc, self._tpoc = s[c.TIME_TO_FIRST_CHUNK], s[c.TIME_PER_OUTPUT_CHUNK]
        self._spans = s[c.SPANS_WRITTEN]

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one request's row (a row of another tfgw version, short of keys, as None there)."""
        try:
            self._add(row)
        except KeyError:
            self._add({name: row.get(name) for name in ROW_KEYS})

    def _add(self, row: Mapping[str, Any]) -> None:
        # subscripts, not `get`, and the histograms inline: this runs for every request
        model, provider, key, status = row["model"], row["provider"], row["key"], row["status"]
        tokens_in, tokens_out, spans = row["tokens_in"], row["tokens_out"], row["spans"]
        cached, reasoning, cost = row["tokens_cached"], row["tokens_reasoning"], row["cost"]
        operation, retries, fallbacks = row["operation"], row["retries"], row["fallbacks"]
        self.rows += 1
        self._requests[row["route"], model, provider, key, status, row["http_status"]] += 1
        self._spans[()] += spans or 0
        tokens = self._tokens
        if tokens_in is not None:
            tokens[model, provider, key, "input"] += tokens_in
        if tokens_out is not None:
            tokens[model, provider, key, "output"] += tokens_out
        if cached is not None:
            tokens[model, provider, key, "cached"] += cached
        if reasoning is not None:
            tokens[model, provider, key, "reasoning"] += reasoning
        if cost is not None:
            self._cost[model, provider, key] += cost
        if operation is not None:
            self._add_genai(row, (operation, row["provider_system"], model), tokens_in, tokens_out)
        if retries:
            self.series[c.RETRIES][model, provider] += retries
        if fallbacks:
            self.series[c.FALLBACKS][model, provider] += fallbacks
        if (hit := row["cache_hit"]) is not None:
            self.series[c.CACHE][model, "hit" if hit else "miss"] += 1
        if (rules := row["guardrails"]) is not None:
            evaluations = self.series[c.GUARDRAILS]
            for rule in rules:
                evaluations[tuple(rule)] += 1
        if (refusal := row["refusal"]) is not None:
            self.series[c.REFUSALS][key, refusal] += 1

    def _add_genai(self, row: Mapping[str, Any], genai: Labels, tokens_in: Any, tokens_out: Any) -> None:
        """The GenAI histograms: no key label (docs/metrics.md, cardinality)."""
        duration_ms, ttft_ms = row["duration_ms"], row["ttft_ms"]
        if duration_ms is not None:
            error = row["error_type"] if row["status"] == "error" else None
            labels = (*genai, error)
            if (histogram := self._duration.get(labels)) is None:
                histogram = self._duration[labels] = Histogram(TIME_BUCKETS)
            histogram.record(c.DURATION.buckets, duration_ms / 1000)
        usage = self._usage
        for kind, count in (("input", tokens_in), ("output", tokens_out)):
            if count is not None:
                labels = (*genai, kind)
                if (histogram := usage.get(labels)) is None:
                    histogram = usage[labels] = Histogram(TOKEN_BUCKETS)
                histogram.record(c.TOKEN_USAGE.buckets, count)
        if ttft_ms is not None:
            _record(self._ttfc, c.TIME_TO_FIRST_CHUNK, genai, ttft_ms / 1000)
            chunks = row["chunks"]
            if duration_ms is not None and isinstance(chunks, int) and chunks > 1:
                per_chunk = max(0.0, duration_ms - ttft_ms) / (chunks - 1) / 1000
                _record(self._tpoc, c.TIME_PER_OUTPUT_CHUNK, genai, per_chunk)

    def set_targets(self, targets: Mapping[str, Mapping[str, Any]]) -> bool:
        """The export targets' counters and gauges now (per target: `delivered`, `rejected`,
        `partial_rejected`, `unsendable`, `attempts`, `retries`, `dropped`, `pending_bytes`,
        `lag_s`); whether any changed."""
        values: dict[c.Metric, dict[Labels, Any]] = {m: {} for m in c.EXPORT}
        for name, stats in targets.items():
            label = (name,)
            rejected = [stats.get(k) for k in ("rejected", "partial_rejected", "unsendable")]
            for metric, value in (
                (c.EXPORT_DELIVERED, stats.get("delivered")),
                (c.EXPORT_REJECTED, sum(v for v in rejected if isinstance(v, int | float))),
                (c.EXPORT_ATTEMPTS, stats.get("attempts")),
                (c.EXPORT_RETRIES, stats.get("retries")),
                (c.EXPORT_DROPPED, stats.get("dropped")),
                (c.EXPORT_PENDING, stats.get("pending_bytes")),
                (c.EXPORT_LAG, stats.get("lag_s")),
            ):
                if isinstance(value, int | float):
                    values[metric][label] = value
        changed = any(self.series[m] != values[m] for m in c.EXPORT)
        self.series.update(values)
        return changed

    def set_trace_log_drops(self, drops: Mapping[str, int]) -> bool:
        """What the gateway's trace log writers dropped, by reason (`segments.writer_drops`); whether
        it changed. A reason with nothing dropped is not a series."""
        values = {(reason,): n for reason, n in drops.items() if n}
        changed = self.series[c.TRACE_LOG_DROPPED] != values
        self.series[c.TRACE_LOG_DROPPED] = values
        return changed


def _record(series: dict[Labels, Any], metric: c.Metric, labels: Labels, value: float) -> None:
    histogram = series.get(labels)
    if histogram is None:
        histogram = series[labels] = Histogram(len(metric.buckets))
    histogram.record(metric.buckets, value)
