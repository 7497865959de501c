"""Request rows (`tfgw.tracing.rows`): one line each for `traces tail`, a table for `traces list`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from tfgw.views.terminal import clock, cost, day_time, ms, short_id, tokens

__all__ = ["LINE_COLUMNS", "row_header", "row_line", "rows_table", "status_text"]

STYLES = {"ok": "green", "error": "bold red"}


def status_text(row: Mapping[str, Any]) -> Text:
    """`ok 200`, `error 502`: the outcome and the HTTP status the client got."""
    status = row.get("status") or "-"
    http = row.get("http_status")
    return Text(status if http is None else f"{status} {http}", style=STYLES.get(status, ""))


#: `row_line()`'s columns: header, width, alignment; the error type, last, is as long as it is
LINE_COLUMNS = (
    ("time", 12, "<"),
    ("trace", 8, "<"),
    ("model", 20, "<"),
    ("provider", 10, "<"),
    ("status", 9, "<"),
    ("latency", 10, ">"),
    ("ttft", 14, ">"),
    ("tokens", 11, ">"),
    ("cost", 10, ">"),
)


def row_header() -> Text:
    """The names of `row_line()`'s columns, aligned over them (`traces tail` on a terminal)."""
    names = [f"{name:{align}{width}}" for name, width, align in LINE_COLUMNS]
    return Text("  ".join([*names, "error"]), style="bold")


def row_line(row: Mapping[str, Any]) -> Text:
    """One request as one line, columns aligned from line to line (`LINE_COLUMNS`):
    time, trace id, model, provider, status, latency, time to first token, tokens in/out, cost,
    and the error type of a failed request. A model longer than its column pushes the rest right."""
    ttft = row.get("ttft_ms")
    cells = (
        Text(clock(row["time"]), style="dim"),
        Text(short_id(row.get("trace_id")), style="cyan"),
        Text(str(row.get("model") or "-")),
        Text(str(row.get("provider") or "-")),
        status_text(row),
        Text(ms(row.get("duration_ms"))),
        Text(f"ttft {ms(ttft)}" if ttft is not None else ""),
        Text(tokens(row.get("tokens_in"), row.get("tokens_out"))),
        Text(cost(row.get("cost"))),
    )
    line = Text()
    for i, (cell, (_, width, align)) in enumerate(zip(cells, LINE_COLUMNS, strict=True)):
        pad = " " * max(0, width - len(cell))
        line.append("  " if i else "")
        line.append_text(Text.assemble(cell, pad) if align == "<" else Text.assemble(pad, cell))
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
