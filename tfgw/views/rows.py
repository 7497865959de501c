"""Request rows (`tfgw.tracing.rows`): one line each for `traces tail`, a table for `traces list`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from tfgw.views.terminal import clock, cost, day_time, ms, short_id, tokens

__all__ = ["row_line", "rows_table", "status_text"]

STYLES = {"ok": "green", "error": "bold red"}


def status_text(row: Mapping[str, Any]) -> Text:
    """`ok 200`, `error 502`: the outcome and the HTTP status the client got."""
    status = row.get("status") or "-"
    http = row.get("http_status")
    return Text(status if http is None else f"{status} {http}", style=STYLES.get(status, ""))


def row_line(row: Mapping[str, Any]) -> Text:
    """One request as one line, columns aligned from line to line:
    time, trace id, model, provider, status, latency, time to first token, tokens in/out, cost,
    and the error type of a failed request."""
    ttft = row.get("ttft_ms")
    line = Text.assemble(
        (clock(row["time"]), "dim"),
        "  ",
        (short_id(row.get("trace_id")), "cyan"),
        "  ",
        str(row.get("model") or "-").ljust(20),
        "  ",
        str(row.get("provider") or "-").ljust(10),
        "  ",
    )
    status = status_text(row)
    line.append_text(status)
    line.append(" " * max(0, 9 - len(status)))
    line.append("  " + ms(row.get("duration_ms")).rjust(10))
    line.append("  " + (f"ttft {ms(ttft)}" if ttft is not None else "").rjust(14))
    line.append("  " + tokens(row.get("tokens_in"), row.get("tokens_out")).rjust(11))
    line.append("  " + cost(row.get("cost")).rjust(10))
    if row.get("error_type"):
        line.append("  " + str(row["error_type"]), style="red")
    return line


def rows_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """`traces list`: one request per table row."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (
        ("time", "left"),
        ("trace", "left"),
        ("model", "left"),
        ("provider", "left"),
        ("status", "left"),
        ("latency", "right"),
        ("ttft", "right"),
        ("tokens", "right"),
        ("cost", "right"),
        ("error", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            Text(day_time(row["time"]), style="dim"),
            Text(short_id(row.get("trace_id")), style="cyan"),
            str(row.get("model") or "-"),
            str(row.get("provider") or "-"),
            status_text(row),
            ms(row.get("duration_ms")),
            ms(row.get("ttft_ms")) if row.get("ttft_ms") is not None else "-",
            tokens(row.get("tokens_in"), row.get("tokens_out")),
            cost(row.get("cost")),
            Text(str(row.get("error_type") or ""), style="red"),
        )
    return table
