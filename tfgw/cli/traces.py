"""`tfgw traces tail | list | show | stats`: the trace log, read (never written).

The log is `--dir`, else `[tracing] dir` of the config found the usual way, else
`~/.local/share/tfgw/traces` when there is no config at all. Every `--json` prints JSON lines,
one object per line, except `stats --json`, which prints one object. Bad option values exit 2
with a one-line message naming the option.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

from tfgw.cli.check import check
from tfgw.cli.options import CONFIG, read_settings
from tfgw.config import TracingSettings, find_config
from tfgw.errors import InputError, NotFoundError
from tfgw.tracing.reader import (
    Follower,
    Trace,
    TraceLogError,
    decode_span,
    find_trace,
    newest_rows,
    read_rows,
    warn_stderr,
)
from tfgw.tracing.stats import aggregate, summarize_groups
from tfgw.views.rows import row_header, row_line, rows_table
from tfgw.views.spans import span_lines, span_tree, waterfall
from tfgw.views.stats import stats_table
from tfgw.views.terminal import console, print_wide, timestamp

__all__ = ["UsageError", "app", "log_dir", "parse_since", "row_filter"]

app = typer.Typer(
    help="Read the trace log: follow it live, list requests, show one trace, stats.", no_args_is_help=True
)

app.command("check")(check)

SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SINCE = re.compile(r"(\d+)([smhdw])")
TRACE_ID = re.compile(r"[0-9a-fA-F]{8,32}")
_SHAPE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


class UsageError(InputError):
    """A bad option or argument value (exit code 2, as for click's own usage errors)."""


class Status(StrEnum):
    ok = "ok"
    error = "error"


class GroupBy(StrEnum):
    model = "model"
    provider = "provider"
    key = "key"


DIR = typer.Option(
    None,
    "--dir",
    help="Trace log directory (else [tracing] dir of the config, else ~/.local/share/tfgw/traces).",
)
MODEL = typer.Option(None, "--model", "-m", help="Only requests for this model (asked for or answering).")


def log_dir(explicit: Path | None, config: Path | None) -> Path:
    """`--dir`, else the config's `[tracing] dir`, else the default when no config exists at all."""
    if explicit is not None:
        return explicit.expanduser()
    if find_config(config) is None:
        return TracingSettings().path
    return read_settings(config, resolve_secrets=False).tracing.path


def parse_since(value: str, option: str = "--since") -> int:
    """A duration such as `30s`, `15m`, `1h`, `2d` or `1w`, in seconds (> 0)."""
    match = SINCE.fullmatch(value.strip())
    if match is None or int(match[1]) == 0:
        raise UsageError(f"{option}: expected a duration such as 30s, 15m, 1h, 2d or 1w, got {value!r}")
    return int(match[1]) * SINCE_UNITS[match[2]]


def row_filter(model: str | None, status: str | None) -> Callable[[dict[str, Any]], bool] | None:
    """The `--model` / `--status` test of a row (None when there is nothing to test)."""
    if model is None and status is None:
        return None

    def keep(row: dict[str, Any]) -> bool:
        return (model is None or model in (row.get("model"), row.get("response_model"))) and (
            status is None or row.get("status") == status
        )

    return keep


def _json_lines(items: Iterable[Any]) -> None:
    sys.stdout.write("".join(orjson.dumps(item).decode() + "\n" for item in items))
    sys.stdout.flush()


@app.command("tail")
def tail(
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    model: str | None = MODEL,
    errors: bool = typer.Option(False, "--errors", help="Only failed requests."),
    spans: bool = typer.Option(False, "--spans", help="Every span too, indented under its request."),
    json: bool = typer.Option(
        False,
        "--json",
        help="JSON lines, flushed one by one: each request's row; with --spans followed by its spans "
        "(decoded objects that have a span_id).",
    ),
    from_start: bool = typer.Option(False, "--from-start", help="Show the requests already logged first."),
) -> None:
    """Follow the log: one line per finished request, as it is written, until ^C (or SIGTERM).
    A log directory that does not exist yet is waited for, as `tail -F` waits for its file."""
    directory = log_dir(dir, config)
    follower = Follower(directory, from_start=from_start)
    keep = row_filter(model, Status.error.value if errors else None)
    out = console()
    try:
        with _stop_on_sigterm():
            if out.is_terminal and not json:
                out.print(row_header(), soft_wrap=True)
            for trace in follower.follow(seen=partial(_say_where, directory)):
                _tail_one(trace, keep, out, spans=spans, json=json)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `| head`: the reader is gone; exit quietly, as `tail -f` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops tail as ^C does, also where SIGINT is ignored (a job started with `&`)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say_where(directory: Path, present: bool) -> None:
    if present:
        print(f"tfgw: following {directory} (^C to stop)", file=sys.stderr, flush=True)
    else:
        print(
            f"tfgw: waiting for the trace log in {directory} to appear (^C to stop)",
            file=sys.stderr,
            flush=True,
        )


def _tail_one(
    trace: Trace, keep: Callable[[dict[str, Any]], bool] | None, out: Console, *, spans: bool, json: bool
) -> None:
    row = trace.row()
    if row is None:
        warn_stderr(f"{trace.file}:{trace.line}: trace {trace.trace_id!r} cannot be summarized, skipped")
        return
    if keep is not None and not keep(row):
        return
    try:
        if json:
            decoded = [decode_span(res, span) for _, (res, span) in span_tree(trace.spans)] if spans else []
            _json_lines([row, *decoded])
            return
        lines = [row_line(row), *(span_lines(trace) if spans else ())]
    except _SHAPE_ERRORS as exc:
        warn_stderr(f"{trace.file}:{trace.line}: trace {trace.trace_id}: malformed span, skipped ({exc!r})")
        return
    for line in lines:
        out.print(line, soft_wrap=True)  # one line per request: a narrow terminal wraps it, not rich


@app.command("list")
def list_(
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    since: str | None = typer.Option(
        None, "--since", help="Only requests from the last 30s, 15m, 1h, 2d, 1w, ..."
    ),
    model: str | None = MODEL,
    status: Status | None = typer.Option(None, "--status", help="Only requests that ended so."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many requests."),
    json: bool = typer.Option(False, "--json", help="JSON lines: one request's row per line."),
) -> None:
    """The most recent requests, newest first."""
    since_ns = None if since is None else time.time_ns() - parse_since(since) * 1_000_000_000
    directory = log_dir(dir, config)
    keep = row_filter(model, status.value if status else None)
    rows = newest_rows(directory, limit, since_ns=since_ns, keep=keep)
    if json:
        _json_lines(rows)
    elif rows:
        print_wide(console(), rows_table(rows))
    else:
        console().print(f"no requests in {directory}" + (" that match" if keep else ""))


@app.command("show")
def show(
    trace_id: str = typer.Argument(..., help="The trace id, or its first 8 or more hex digits."),
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    json: bool = typer.Option(False, "--json", help="JSON lines: one decoded span per line, in tree order."),
) -> None:
    """One trace as a waterfall: every span with its timing, status and key attributes."""
    if TRACE_ID.fullmatch(trace_id) is None:
        raise UsageError(f"TRACE_ID: expected 8 to 32 hex digits, got {trace_id!r}")
    directory = log_dir(dir, config)
    trace = find_trace(directory, trace_id)
    if trace is None:
        raise NotFoundError(f"no trace {trace_id} in {directory}")
    try:
        if json:
            _json_lines(decode_span(res, span) for _, (res, span) in span_tree(trace.spans))
        else:
            out = console()
            out.print(waterfall(trace, out.width))
    except _SHAPE_ERRORS as exc:
        raise TraceLogError(
            f"{trace.file}:{trace.line}: trace {trace.trace_id} is malformed: {exc!r}"
        ) from exc


@app.command("stats")
def stats(
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    since: str = typer.Option("24h", "--since", help="Requests from the last 30s, 15m, 1h, 2d, 1w, ..."),
    by: GroupBy | None = typer.Option(None, "--by", help="One line per model, provider or gateway key."),
    json: bool = typer.Option(False, "--json", help="One JSON object: {since, from, to, by, all, groups}."),
) -> None:
    """Requests, errors, latency p50/p95/p99, time to first token p50/p95 (streams), tokens and
    cost, for all requests and per group. Percentiles are exact, by nearest rank."""
    seconds = parse_since(since)
    directory = log_dir(dir, config)
    now = time.time_ns()
    since_ns = now - seconds * 1_000_000_000
    group_by = by.value if by else None
    groups = aggregate(read_rows(directory, since_ns=since_ns), group_by)
    report = {
        "since": since,
        "from": since_ns,
        "to": now,
        "by": group_by,
        **summarize_groups(groups, group_by),
    }
    if json:
        _json_lines([report])
        return
    out = console()
    out.print(f"{report['all']['requests']} requests since {timestamp(since_ns)} ({since}) in {directory}")
    print_wide(out, stats_table(report))
