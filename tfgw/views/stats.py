"""`traces stats`: one table row per group and a last row for all requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from tfgw.views.terminal import cost, ms

__all__ = ["stats_table"]

COLUMNS = (
    "requests",
    "errors",
    "error %",
    "p50",
    "p95",
    "p99",
    "ttft p50",
    "ttft p95",
    "tokens in",
    "tokens out",
    "cost",
)


def stats_table(report: Mapping[str, Any]) -> Table:
    """The table of a `tfgw traces stats --json` report: `{"by", "all", "groups", ...}`."""
    by = report.get("by")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column(by or "", justify="left")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for group in report["groups"]:
        table.add_row(str(group[by] if group[by] is not None else "-"), *_cells(group))
    table.add_row(Text("all", style="bold"), *_cells(report["all"]))
    return table


def _cells(s: Mapping[str, Any]) -> list[str]:
    rate = s["error_rate"]
    return [
        str(s["requests"]),
        str(s["errors"]),
        "-" if rate is None else f"{rate * 100:.1f}",
        ms(s["latency_ms"]["p50"]),
        ms(s["latency_ms"]["p95"]),
        ms(s["latency_ms"]["p99"]),
        ms(s["ttft_ms"]["p50"]),
        ms(s["ttft_ms"]["p95"]),
        _int(s["tokens_in"]),
        _int(s["tokens_out"]),
        cost(s["cost"]),
    ]


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
