"""The aggregate of a few rows, as Prometheus text: pinned whole (tests/metrics/small.prom), and
read back by prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tfgw.metrics import catalog
from tfgw.metrics.aggregate import Aggregate
from tfgw.metrics.prometheus import render

ROWS: list[dict[str, Any]] = [
    {
        "route": "/v1/chat/completions", "model": "gpt", "provider": "up", "key": "k1", "status": "ok",
        "http_status": 200, "spans": 4, "tokens_in": 3, "tokens_out": None, "cost": 0.5, "operation": "chat",
        "provider_system": "openai", "duration_ms": 250.0, "retries": 1, "fallbacks": 0, "cache_hit": True,
    },
    {
        "route": "/v1/chat/completions", "model": 'we"ird\\', "provider": None, "key": "k2",
        "status": "error", "http_status": 404, "spans": 2,
    },
    {
        "route": "/v1/embeddings", "model": "emb", "provider": None, "key": "k1", "status": "error",
        "http_status": 429, "spans": 2, "refusal": "rpm",
        "guardrails": [["no-zeus", "input", "blocked"]],
    },
]  # fmt: skip
TARGET = {
    "delivered": 7, "rejected": 1, "partial_rejected": 2, "unsendable": 0, "dropped": 3, "pending_bytes": 10,
    "lag_s": 0.5, "retrying": False, "last_error": None, "attempts": 5, "retries": 2,
}  # fmt: skip


def small() -> Aggregate:
    aggregate = Aggregate(0)
    for row in ROWS:
        aggregate.add(row)
    assert aggregate.set_targets({"otlp": TARGET}) is True
    assert aggregate.set_targets({"otlp": TARGET}) is False  # the same values: nothing to rewrite
    assert aggregate.set_trace_log_drops({"backlog": 0, "write_failed": 2, "encode_error": 0}) is True
    assert aggregate.set_trace_log_drops({"backlog": 0, "write_failed": 2, "encode_error": 0}) is False
    return aggregate


def test_a_few_rows_render_as_this_text_whole() -> None:
    assert render(small()) == (Path(__file__).parent / "small.prom").read_text()


def test_prometheus_reads_back_every_family_of_the_catalog_with_its_values() -> None:
    families = {f.name: f for f in text_string_to_metric_families(render(small()))}
    names = [m.prometheus.removesuffix("_total") for m in catalog.CATALOG]
    assert list(families) == names
    requests = {tuple(s.labels.values()): s.value for s in families["tfgw_requests"].samples}
    assert requests == {
        ("/v1/chat/completions", "gpt", "up", "k1", "ok", "200"): 1.0,
        ("/v1/chat/completions", 'we"ird\\', "k2", "error", "404"): 1.0,
        ("/v1/embeddings", "emb", "k1", "error", "429"): 1.0,
    }
    (count,) = [
        s for s in families["gen_ai_client_operation_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert (count.labels, count.value) == (
        {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt"},
        1.0,
    )


def test_a_rewrite_with_the_kept_labels_is_the_text_a_fresh_render_makes() -> None:
    aggregate, prefixes = small(), {}
    first = render(aggregate, prefixes)
    aggregate.add({**ROWS[0], "key": "k0"})  # a new series, sorted before the others
    aggregate.set_targets({})  # and the target's series gone
    assert (first, render(aggregate, prefixes)) == (render(small()), render(aggregate))
    assert render(aggregate, prefixes).count('key="k0"') == 3  # requests, tokens and cost
