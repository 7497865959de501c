"""`traces top`: a board (`tfgw.tracing.top.board()`) as a rich renderable, and the state of the
keys that change what it shows (`View`). The same renderable is the live board and, printed on a
console that is not a terminal, the plain-text one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfgw.tracing.top import SORT_KEYS, select
from tfgw.views.terminal import cost, ms

__all__ = ["KEYS_HELP", "View", "board_view", "duration", "rate", "sparkline"]

SPARKS = "▁▂▃▄▅▆▇█"
KEYS_HELP = "s sort  r reverse  / filter  e errors only  q quit"
ESC, BACKSPACE, ENTER = "\x1b", ("\x7f", "\x08"), ("\r", "\n")
#: `q`, and ^C when it comes as a key (stdin a terminal that is not the controlling one; on the
#: controlling terminal cbreak mode keeps ^C a SIGINT)
QUIT = ("q", "\x03")
#: header, sort key, alignment of the model columns; the sparkline comes last
COLUMNS = (
    ("model", "model", "left"),
    ("req/s", "req_s", "right"),
    ("err %", "error_rate", "right"),
    ("p50", "p50", "right"),
    ("p95", "p95", "right"),
    ("ttft p50", "ttft_p50", "right"),
    ("ttft p95", "ttft_p95", "right"),
    ("tok/s", "tokens_s", "right"),
    ("$/min", "cost_per_min", "right"),
    ("mean streams", "mean_open_streams", "right"),
)


@dataclass(slots=True)
class View:
    """What the keys chose: the sort column, its direction, the model filter, errors only.
    `typing` is the filter being typed after `/` (None when not typing)."""

    sort: int = 0
    reverse: bool = False
    text: str = ""
    typing: str | None = None
    errors_only: bool = False

    @property
    def sort_key(self) -> str:
        return SORT_KEYS[self.sort]

    def feed(self, keys: str) -> bool:
        """Apply what was typed; True when it asks to quit. An escape sequence (an arrow key)
        is ignored whole."""
        if keys.startswith((ESC + "[", ESC + "O")):
            return False
        for key in keys:
            if self.typing is not None:
                self._type(key)
            elif key in QUIT:
                return True
            else:
                self._command(key)
        return False

    def _type(self, key: str) -> None:
        assert self.typing is not None
        if key in ENTER:
            self.text, self.typing = self.typing, None
        elif key == ESC:
            self.text, self.typing = "", None
        elif key in BACKSPACE:
            self.typing = self.typing[:-1]
        elif key.isprintable():
            self.typing += key

    def _command(self, key: str) -> None:
        if key == "s":
            self.sort, self.reverse = (self.sort + 1) % len(SORT_KEYS), False
        elif key == "r":
            self.reverse = not self.reverse
        elif key == "/":
            self.typing = ""
        elif key == ESC:
            self.text = ""
        elif key == "e":
            self.errors_only = not self.errors_only


def sparkline(series: Sequence[float]) -> str:
    """One block per value: `▁` for none, `▂` to `█` in proportion to the largest."""
    top = max(series, default=0)
    if top <= 0:
        return SPARKS[0] * len(series)
    return "".join(SPARKS[0] if v <= 0 else SPARKS[max(1, round(v / top * 7))] for v in series)


def rate(value: float | None) -> str:
    """A per-second (or mean) figure: three decimals below 1, one below 100, none above."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 1:
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def duration(seconds: float) -> str:
    """`5m`, `1h`, `90s`: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def board_view(
    board: Mapping[str, Any],
    view: View,
    directory: Path | str,
    *,
    keys: bool = False,
    warning: str | None = None,
) -> RenderableType:
    """The header, one table row per model shown, the export targets, and (live) the keys."""
    parts: list[RenderableType] = [_header(board, directory)]
    if keys:
        parts.append(_state_line(view))
    models = select(
        board["models"], view.sort_key, reverse=view.reverse, text=view.text, errors_only=view.errors_only
    )
    if models:
        parts.append(_models_table(models, view, duration(board["window_s"])))
    elif board["models"]:
        parts.append(Text("no model matches the filter", style="dim"))
    else:
        parts.append(Text(f"no requests in the last {duration(board['window_s'])}", style="dim"))
    parts.append(_targets(board["targets"], local=isinstance(directory, Path)))
    if warning:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def _header(board: Mapping[str, Any], directory: Path | str) -> Text:
    now = datetime.fromisoformat(board["now"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    window = duration(board["window_s"])
    text = Text.assemble(("tfgw traces top", "bold"), f"  {directory}  last {window} to {now}")
    if board["anchored"]:
        text.append(f" (the log's last request: it has none in the {window} before now)", style="dim")
    return text


def _state_line(view: View) -> Text:
    text = Text()
    if view.typing is not None:
        text.append(f"filter: {view.typing}▏ (Enter applies, Esc clears)  ", style="bold")
    elif view.text:
        text.append(f"filter: {view.text}  ", style="bold")
    if view.errors_only:
        text.append("errors only  ", style="bold red")
    text.append(KEYS_HELP, style="dim")
    return text


def _models_table(models: Sequence[Mapping[str, Any]], view: View, window: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    descending = (view.sort_key != "model") != view.reverse
    for name, key, justify in COLUMNS:
        marked = f"{name} {'↓' if descending else '↑'}" if key == view.sort_key else name
        table.add_column(marked, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column(f"req/s, last {window}", justify="left", no_wrap=True)
    for m in models:
        errors = m["error_rate"]
        table.add_row(
            str(m["model"] or "-"),
            rate(m["req_s"]),
            Text("-" if errors is None else f"{errors * 100:.1f}", style="red" if m["errors"] else ""),
            ms(m["latency_ms"]["p50"]),
            ms(m["latency_ms"]["p95"]),
            ms(m["ttft_ms"]["p50"]),
            ms(m["ttft_ms"]["p95"]),
            rate(m["tokens_s"]),
            cost(m["cost_per_min"]),
            rate(m["mean_open_streams"]),
            Text(sparkline(m["req_s_series"]), style="cyan"),
        )
    return table


def _targets(targets: Sequence[Mapping[str, Any]], *, local: bool = True) -> RenderableType:
    if not targets and not local:  # a stream: its consumers are in `tfgw otel status`
        return Text("export: the targets' consumers on the stream: `tfgw otel status`", style="dim")
    if not targets:
        return Text("export: no targets (add one with `tfgw otel set KIND`)", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("export to", "state", "delivered", "pending", "lag", "reason"):
        table.add_column(name, justify="left" if name in ("export to", "state", "reason") else "right")
    for t in targets:
        pending, lag = t.get("pending_bytes"), t.get("lag_s")
        table.add_row(
            str(t["target"]),
            Text(str(t.get("state") or "-"), style="green" if t.get("reason") is None else "yellow"),
            "-" if t.get("delivered") is None else f"{t['delivered']:,}",
            "-" if pending is None else f"{pending / 1024:.0f} KiB",
            "-" if lag is None else f"{lag:.1f} s",
            str(t.get("reason") or t.get("last_error") or ""),
        )
    return table
