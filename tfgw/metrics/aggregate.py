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
from collections.abc import Mapping
from typing import Any

from tfgw.metrics import catalog as c

__all__ = ["Aggregate", "Histogram"]

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
        self.series: dict[c.Metric, dict[Labels, Any]] = {m: {} for m in c.CATALOG}
        self.rows = 0
        s = self.series
        self._requests, self._tokens, self._cost = s[c.REQUESTS], s[c.TOKENS], s[c.COST]
        self._duration, self._usage = s[c.DURATION], s[c.TOKEN_USAGE]
        self._ttfc, self._tpoc = s[c.TIME_TO_FIRST_CHUNK], s[c.TIME_PER_OUTPUT_CHUNK]
        self._spans = s[c.SPANS_WRITTEN]

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one request's row."""
        self.rows += 1
        get = row.get
        model, provider, key = get("model"), get("provider"), get("key")
        labels = (get("route"), model, provider, key, get("status"), get("http_status"))
        self._requests[labels] = self._requests.get(labels, 0) + 1
        self._spans[()] = self._spans.get((), 0) + (get("spans") or 0)
        tokens_in, tokens_out = get("tokens_in"), get("tokens_out")
        tokens = self._tokens
        for kind, count in (
            ("input", tokens_in), ("output", tokens_out), ("cached", get("tokens_cached")),
            ("reasoning", get("tokens_reasoning")),
        ):  # fmt: skip
            if count is not None:
                by_kind = (model, provider, key, kind)
                tokens[by_kind] = tokens.get(by_kind, 0) + count
        if (cost := get("cost")) is not None:
            priced = (model, provider, key)
            self._cost[priced] = self._cost.get(priced, 0) + cost
        if (operation := get("operation")) is not None:
            self._add_genai(row, (operation, get("provider_system"), model), tokens_in, tokens_out)
        if get("retries") or get("fallbacks") or get("cache_hit") is not None:
            self._add_routing(row, model, provider)
        if (rules := get("guardrails")) is not None:
            evaluations = self.series[c.GUARDRAILS]
            for rule in rules:
                outcome = tuple(rule)
                evaluations[outcome] = evaluations.get(outcome, 0) + 1
        if (refusal := get("refusal")) is not None:
            refusals = self.series[c.REFUSALS]
            refusals[key, refusal] = refusals.get((key, refusal), 0) + 1

    def _add_genai(self, row: Mapping[str, Any], genai: Labels, tokens_in: Any, tokens_out: Any) -> None:
        """The GenAI histograms: no key label (docs/metrics.md, cardinality)."""
        duration_ms, ttft_ms = row.get("duration_ms"), row.get("ttft_ms")
        if duration_ms is not None:
            error = row.get("error_type") if row.get("status") == "error" else None
            _record(self._duration, c.DURATION, (*genai, error), duration_ms / 1000)
        for kind, count in (("input", tokens_in), ("output", tokens_out)):
            if count is not None:
                _record(self._usage, c.TOKEN_USAGE, (*genai, kind), count)
        if ttft_ms is not None:
            _record(self._ttfc, c.TIME_TO_FIRST_CHUNK, genai, ttft_ms / 1000)
            chunks = row.get("chunks")
            if duration_ms is not None and isinstance(chunks, int) and chunks > 1:
                per_chunk = max(0.0, duration_ms - ttft_ms) / (chunks - 1) / 1000
                _record(self._tpoc, c.TIME_PER_OUTPUT_CHUNK, genai, per_chunk)

    def _add_routing(self, row: Mapping[str, Any], model: Any, provider: Any) -> None:
        for metric, count in ((c.RETRIES, row.get("retries")), (c.FALLBACKS, row.get("fallbacks"))):
            if count:
                series = self.series[metric]
                series[model, provider] = series.get((model, provider), 0) + count
        if (hit := row.get("cache_hit")) is not None:
            lookups, labels = self.series[c.CACHE], (model, "hit" if hit else "miss")
            lookups[labels] = lookups.get(labels, 0) + 1

    def set_targets(self, targets: Mapping[str, Mapping[str, Any]]) -> bool:
        """The export targets' counters and gauges now (per target: `delivered`, `rejected`,
        `partial_rejected`, `unsendable`, `dropped`, `pending_bytes`, `lag_s`); whether any changed."""
        values: dict[c.Metric, dict[Labels, Any]] = {m: {} for m in c.EXPORT}
        for name, stats in targets.items():
            label = (name,)
            rejected = [stats.get(k) for k in ("rejected", "partial_rejected", "unsendable")]
            for metric, value in (
                (c.EXPORT_DELIVERED, stats.get("delivered")),
                (c.EXPORT_REJECTED, sum(v for v in rejected if isinstance(v, int | float))),
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
