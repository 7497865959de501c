"""The console every view prints on, and the number and time formats they share.

Off a terminal (a pipe, a file, a test) the console is wide, so tables are never wrapped or cut:
each row stays one line for grep and awk. `COLUMNS` still wins when it is set. On a terminal
narrower than a table, `print_wide()` prints it whole and lets the terminal wrap.
"""

from __future__ import annotations

import os
import time

from rich.console import Console, RenderableType
from rich.measure import Measurement

__all__ = ["clock", "console", "cost", "day_time", "ms", "print_wide", "short_id", "timestamp", "tokens"]

PIPE_WIDTH = 512


def console(*, stderr: bool = False) -> Console:
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def print_wide(out: Console, table: RenderableType) -> None:
    """Print a table at its natural width even on a narrower terminal (the terminal wraps its
    lines) rather than let rich squeeze and cut its columns."""
    width = out.width
    natural = Measurement.get(out, out.options.update_width(PIPE_WIDTH), table).maximum
    out.width = max(width, natural)
    try:
        out.print(table)
    finally:
        out.width = width


def ms(value: float | None) -> str:
    """Milliseconds: two decimals under 1 ms, one below 10 s, none above."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 10_000:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def cost(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"${value:,.2f}"
    return f"${value:.4f}" if value >= 1 else f"${value:.6f}"


def tokens(tokens_in: int | None, tokens_out: int | None) -> str:
    if tokens_in is None and tokens_out is None:
        return "-"
    return f"{'-' if tokens_in is None else tokens_in}/{'-' if tokens_out is None else tokens_out}"


def short_id(trace_id: str | None) -> str:
    return (trace_id or "-")[:8]


def clock(ns: int) -> str:
    """Local time of day with milliseconds: `14:03:07.412`."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{rest // 1_000_000:03d}"


def timestamp(ns: int) -> str:
    """Local date and time with milliseconds: `2026-01-01 14:03:07.412`."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{rest // 1_000_000:03d}"


def day_time(ns: int) -> str:
    """Local month, day and time to the second: `01-01 14:03:07` (the log keeps days, not years)."""
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))
