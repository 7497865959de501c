"""The metrics catalog against what names it: docs/metrics.md's table, and the Grafana dashboard's
queries (every metric they use is one the gateway exports)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from tfgw.metrics import catalog

ROOT = Path(__file__).resolve().parents[2]
#: what PromQL selects by a name but that is not a metric: label lists and matchers
NOT_METRICS = re.compile(r"\{[^}]*\}|\b(?:by|without)\s*\([^)]*\)")
METRIC = re.compile(r"\b(?:tfgw|gen_ai)_[a-z0-9_]+")


def docs_table() -> list[list[str]]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text[text.index("## Every metric") :]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_the_docs_table_is_the_catalog_row_for_row() -> None:
    expected = [
        [
            f"`{m.prometheus}`",
            f"`{m.name}`",
            m.kind,
            f"`{m.unit}`",
            ", ".join(f"`{label}`" for label in m.label_names) or "none",
            m.source,
        ]
        for m in catalog.CATALOG
    ]
    assert docs_table() == expected


def exported() -> set[str]:
    names = set()
    for m in catalog.CATALOG:
        names.add(m.prometheus)
        if m.kind == catalog.HISTOGRAM:
            names |= {f"{m.prometheus}_{part}" for part in ("bucket", "sum", "count")}
    return names


def dashboard_metrics() -> dict[str, set[str]]:
    """Per panel title, the metric names its queries use."""
    board = orjson.loads((ROOT / "configs" / "grafana" / "tfgw.json").read_bytes())
    used = {}
    for panel in board["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        used[panel["title"]] = {name for e in exprs for name in METRIC.findall(NOT_METRICS.sub("", e))}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            used[f"${variable['name']}"] = set(METRIC.findall(variable["query"]))
    return used


def test_every_metric_the_dashboard_queries_is_exported_and_every_panel_queries_one() -> None:
    used = dashboard_metrics()
    assert {title: names - exported() for title, names in used.items()} == {title: set() for title in used}
    assert [title for title, names in used.items() if not names] == []
    # every request-derived metric is on the board somewhere (the two per-chunk timings aside)
    everything = set().union(*used.values())
    unused = {
        m.prometheus for m in catalog.CATALOG if not any(n.startswith(m.prometheus) for n in everything)
    }
    assert unused == {"gen_ai_client_operation_time_per_output_chunk_seconds"}


def test_the_regular_expression_finds_metrics_not_labels() -> None:
    expr = (
        'sum by (gen_ai_request_model) (rate(gen_ai_client_token_usage_sum{gen_ai_token_type="input"}[5m]))'
    )
    assert METRIC.findall(NOT_METRICS.sub("", expr)) == ["gen_ai_client_token_usage_sum"]
