"""`traces diff`: A and B side by side, one line per metric of each group, then all requests.

The change is (B - A) / A. On a terminal a change of 1 % or more is red where it is worse
(more errors, latency, time to first token, cost or fallbacks) and green where it is better;
requests, tokens and finish reasons are not judged. Off a terminal the text is plain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from tfgw.tracing.diff import COSTS, FINISH, SHARES, TIMES
from tfgw.views.terminal import cost, ms, timestamp

__all__ = ["breach_line", "diff_header", "diff_table", "format_change", "format_value"]

#: metrics where more is worse: their changes are coloured
WORSE_UP = SHARES | TIMES | COSTS
NOTICED = 0.01


def format_value(metric: str, value: Any) -> str:
    """A metric's value as the table shows it."""
    if value is None:
        return "-"
    if metric in SHARES or metric.startswith(FINISH):
        return f"{value * 100:.1f}%"
    if metric in TIMES:
        return ms(value)
    if metric in COSTS:
        return cost(value)
    if metric == "requests":
        return f"{value:,}"
    return f"{value:,.1f}"


def format_change(pair: Mapping[str, Any]) -> str:
    """`+25.0%`, `-100.0%`, `0.0%`, `+inf` (from 0), or `-` (a side has no value)."""
    a, b, change = pair["a"], pair["b"], pair["change"]
    if change is None:
        return "+inf" if a == 0 and b is not None and b > 0 else "-"
    text = f"{change * 100:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def _change_cell(metric: str, pair: Mapping[str, Any]) -> Text:
    text = format_change(pair)
    change = pair["change"]
    if change is None:
        change = math.inf if text == "+inf" else 0.0
    if metric not in WORSE_UP or abs(change) < NOTICED:
        return Text(text)
    return Text(text, style="red" if change > 0 else "green")


def diff_header(report: Mapping[str, Any]) -> list[str]:
    """One line per side: its source, its requests and when the first and last of them started."""
    lines = []
    for name in ("a", "b"):
        side = report[name]
        span = ""
        if side["from"] is not None:
            span = f", {timestamp(side['from'])} to {timestamp(side['to'])}"
        lines.append(f"{name.upper()}: {side['source']}: {side['requests']:,} requests{span}")
    return lines


def diff_table(report: Mapping[str, Any]) -> Table:
    """The table of a `traces diff --json` report: each group's metrics, then all requests'.
    A metric neither side has a value for is left out."""
    by = report["by"]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column(by, justify="left")
    table.add_column("metric", justify="left")
    for name in ("A", "B", "change"):
        table.add_column(name, justify="right")
    blocks = [(str(g[by] if g[by] is not None else "-"), g["metrics"], "") for g in report["groups"]]
    blocks.append(("all", report["all"]["metrics"], "bold"))
    for i, (label, metrics, style) in enumerate(blocks):
        if i:
            table.add_row()
        first = True
        for metric, pair in metrics.items():
            if pair["a"] is None and pair["b"] is None:
                continue
            cells = [format_value(metric, pair["a"]), format_value(metric, pair["b"])]
            table.add_row(
                Text(label if first else "", style=style), metric, *cells, _change_cell(metric, pair)
            )
            first = False
    return table


def breach_line(breach: Mapping[str, Any]) -> str:
    """`--fail-if 'p95_latency > +20%' holds for model gpt-4o: 800.0 ms -> 1000.0 ms (+25.0%)`."""
    group = breach["group"]
    where = "all requests"
    if group is not None:
        ((by, value),) = group.items()
        where = f"{by} {'-' if value is None else value}"
    metric = breach["metric"]
    values = f"{format_value(metric, breach['a'])} -> {format_value(metric, breach['b'])}"
    return f"--fail-if {breach['condition']!r} holds for {where}: {values} ({format_change(breach)})"
