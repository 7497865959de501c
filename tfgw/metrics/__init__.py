"""Metrics derived from the trace log's rows, off the request path, in the exporter process:
Prometheus text for `GET /metrics` and OTLP metrics for the targets with `metrics = true`
(docs/metrics.md)."""
