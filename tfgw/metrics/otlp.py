"""OTLP metrics: the deriver's aggregate as the OpenTelemetry SDK's data model (`MetricsData`),
pushed to each export target with `metrics = true` by the SDK's own OTLP metric exporters.

Every `TFGW_METRICS_PUSH_S` seconds (10 by default; the tests set less), cumulative temporality,
start time the deriver's start. Per the target's `protocol`: `grpc` (the target's host:port,
MetricsService/Export) or `http/protobuf` (its URL with `/v1/traces` replaced by `/v1/metrics`),
with the target's headers, timeout and compression. The SDK has no OTLP/JSON exporter: an
`http/json` target gets its metrics as `http/protobuf` on the same `/v1/metrics` URL (a receiver
that takes only JSON refuses them, and the exporter says so once).

The SDK is imported here only, and only when some target pushes metrics: the exporter process
does not pay for it otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tfgw import __version__
from tfgw.export.targets import ResolvedTarget
from tfgw.metrics import catalog as c
from tfgw.metrics.aggregate import Aggregate
from tfgw.metrics.aggregate import Histogram as Buckets
from tfgw.metrics.deriver import Deriver

__all__ = ["PUSH_ENV", "MetricsPusher", "metric_exporter", "metrics_data"]

log = logging.getLogger("tfgw.metrics")

PUSH_ENV = "TFGW_METRICS_PUSH_S"
PUSH_S = 10.0
CUMULATIVE = AggregationTemporality.CUMULATIVE


def metrics_data(aggregate: Aggregate, now_ns: int | None = None) -> MetricsData:
    """Every metric that has a series, as one `ResourceMetrics` of service `tfgw`."""
    now = time.time_ns() if now_ns is None else now_ns
    start = aggregate.started_ns
    metrics = []
    for metric in c.CATALOG:
        series = aggregate.series[metric]
        if not series:
            continue
        points: list[Any] = []
        for labels, value in series.items():
            attributes = {k: v for k, v in zip(metric.labels, labels, strict=True) if v is not None}
            if isinstance(value, Buckets):
                points.append(_histogram_point(attributes, start, now, metric, value))
            else:
                points.append(NumberDataPoint(attributes, start, now, value))
        metrics.append(Metric(metric.name, metric.help, metric.unit, _data(metric, points)))
    resource = Resource({"service.name": "tfgw", "service.version": __version__})
    scope = InstrumentationScope("tfgw", __version__)
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")])


def _histogram_point(
    attributes: dict[str, Any], start: int, now: int, metric: c.Metric, h: Buckets
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes, start, now, h.count, h.sum, list(h.counts), list(metric.buckets), h.min, h.max
    )


def _data(metric: c.Metric, points: list[Any]) -> Sum | Gauge | Histogram:
    if metric.kind == c.HISTOGRAM:
        return Histogram(points, CUMULATIVE)
    if metric.kind == c.GAUGE:
        return Gauge(points)
    return Sum(points, CUMULATIVE, is_monotonic=True)


def metric_exporter(target: ResolvedTarget) -> MetricExporter:
    """The SDK's OTLP metric exporter for the target's protocol, endpoint, headers and compression."""
    gzip = target.compression == "gzip"
    if target.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(
            endpoint=target.endpoint,
            insecure=target.insecure,
            headers=dict(target.headers),
            timeout=target.timeout,
            compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(
        endpoint=metrics_url(target.endpoint),
        headers=dict(target.headers),
        timeout=target.timeout,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
    )


def metrics_url(traces_url: str) -> str:
    """The OTLP/HTTP metrics URL beside a traces URL."""
    if traces_url.endswith("/v1/traces"):
        return traces_url[: -len("/v1/traces")] + "/v1/metrics"
    return traces_url.rstrip("/") + "/v1/metrics"


def push_interval() -> float:
    try:
        value = float(os.environ.get(PUSH_ENV) or PUSH_S)
    except ValueError:
        log.warning(
            "%s=%r is not a number of seconds; pushing every %g s", PUSH_ENV, os.environ[PUSH_ENV], PUSH_S
        )
        return PUSH_S
    return value if value > 0 else PUSH_S


class MetricsPusher:
    """One target's metrics, pushed from its own thread, so a slow backend delays only itself."""

    def __init__(self, target: ResolvedTarget, deriver: Deriver, interval: float | None = None) -> None:
        self.target, self.deriver = target, deriver
        self.interval = push_interval() if interval is None else interval
        self.failures = 0

    def run(self, stop: threading.Event) -> None:
        exporter = metric_exporter(self.target)
        try:
            while not stop.wait(self.interval):
                self.push(exporter)
            self.push(exporter)  # the last values, on the way out
        finally:
            exporter.shutdown(timeout_millis=1000)

    def push(self, exporter: MetricExporter) -> bool:
        with self.deriver.lock:
            data = metrics_data(self.deriver.aggregate)
        result = exporter.export(data, timeout_millis=self.target.timeout * 1000)
        if result is MetricExportResult.SUCCESS:
            self.failures = 0
            return True
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "%s: metrics not accepted (the SDK's exporter logged why); retrying", self.target.name
            )
        return False
