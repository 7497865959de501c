"""`tfgw traces tail | list | show | stats | diff | top`: the trace log, read (never written).

The log is `--dir`, else `[tracing] dir` of the config found the usual way, else
`~/.local/share/tfgw/traces` when there is no config at all. Every `--json` prints JSON lines,
one object per line, except `stats --json`, `diff --json` and `top --json`, which print one
object. Bad option values exit 2 with a one-line message naming the option. `diff` exits 1 when a
`--fail-if` holds. `top`'s loop and keys are `tfgw.cli.top`.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

from tfgw.bus.live import BusFollower
from tfgw.cli.check import check
from tfgw.cli.options import CONFIG, read_settings
from tfgw.cli.top import run as run_top
from tfgw.cli.top import top_settings
from tfgw.config import TracingSettings, find_config
from tfgw.config_bus import BusSettings, with_bus_secrets
from tfgw.errors import InputError, NotFoundError
from tfgw.tracing.diff import Side, Source, breaches, collect, compare, parse_condition
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
from tfgw.views.diff import breach_line, diff_header, diff_table
from tfgw.views.rows import row_header, row_line, rows_table
from tfgw.views.spans import span_lines, span_tree, waterfall
from tfgw.views.stats import stats_table
from tfgw.views.terminal import console, print_wide, timestamp

__all__ = ["UsageError", "app", "log_dir", "parse_since", "row_filter"]

app = typer.Typer(
    help="Read the trace log: follow it live, list requests, show one trace, stats, diff two runs, a live "
    "board per model.",
    no_args_is_help=True,
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


class DiffBy(StrEnum):
    model = "model"
    provider = "provider"
    key = "key"
    route = "route"


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


NATS = typer.Option(
    None,
    "--nats",
    metavar="URL",
    help="Read the NATS JetStream stream at URL (several: comma-separated), every gateway replica's "
    "requests, instead of the local log; the stream, subject and credentials from the config's [bus]. "
    'Without it, a config with [bus] kind = "nats" reads its stream unless --dir is given.',
)


@app.command("tail")
def tail(
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    nats: str | None = NATS,
    model: str | None = MODEL,
    errors: bool = typer.Option(False, "--errors", help="Only failed requests."),
    spans: bool = typer.Option(False, "--spans", help="Every span too, indented under its request."),
    json: bool = typer.Option(
        False,
        "--json",
        help="JSON lines, flushed one by one: each request's row; with --spans followed by its spans "
        "(decoded objects that have a span_id).",
    ),
    from_start: bool = typer.Option(
        False, "--from-start", help="Show the requests already logged (or in the stream) first."
    ),
) -> None:
    """Follow the log: one line per finished request, as it is written, until ^C (or SIGTERM).
    A log directory that does not exist yet is waited for, as `tail -F` waits for its file; so is
    a NATS server or stream that cannot be reached yet (reconnecting for ever)."""
    bus = _bus(nats, dir, config)
    keep = row_filter(model, Status.error.value if errors else None)
    out = console()
    show = partial(_tail_all, keep=keep, out=out, spans=spans, json=json)
    try:
        with _stop_on_sigterm():
            if bus is None:
                directory = log_dir(dir, config)
                follower = Follower(directory, from_start=from_start)
                show(follower.follow(seen=partial(_say_where, directory)))
            else:
                with BusFollower(bus, from_start=from_start) as stream:
                    show(stream.follow(seen=partial(_say_bus, stream)))
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `| head`: the reader is gone; exit quietly, as `tail -f` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _tail_all(
    traces: Iterable[Trace],
    *,
    keep: Callable[[dict[str, Any]], bool] | None,
    out: Console,
    spans: bool,
    json: bool,
) -> None:
    if out.is_terminal and not json:
        out.print(row_header(), soft_wrap=True)
    for trace in traces:
        _tail_one(trace, keep, out, spans=spans, json=json)


NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def _bus(url: str | None, dir: Path | None, config: Path | None) -> BusSettings | None:
    """The stream `tail` and `top` read: `--nats URL` (the rest of the config's `[bus]`, if any,
    with it), else the config's `[bus]` when its kind is nats and `--dir` is not given; None for
    the local log."""
    if url is not None and dir is not None:
        raise UsageError("--nats and --dir: give one or the other (the stream, or a local log)")
    if dir is not None:
        return None
    urls = None if url is None else _nats_urls(url)
    path = find_config(config)
    if path is None:
        return None if urls is None else BusSettings(kind="nats", urls=urls)
    bus = read_settings(config, resolve_secrets=False).bus
    if urls is None and bus.kind != "nats":
        return None
    return with_bus_secrets(replace(bus, kind="nats", urls=urls or bus.urls), path)


def _nats_urls(value: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    for u in urls or ("",):
        if not u.startswith(NATS_SCHEMES):
            raise UsageError(f"--nats: expected nats://HOST:PORT (or tls://, ws://, wss://), got {u!r}")
    return urls


def _say_bus(stream: BusFollower, present: bool) -> None:
    if present:
        print(f"tfgw: following {stream.where} (^C to stop)", file=sys.stderr, flush=True)
    else:
        why = f": {stream.problem}" if stream.problem else ""
        print(f"tfgw: waiting for {stream.where}{why} (^C to stop)", file=sys.stderr, flush=True)


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


LOG_WINDOW = "log:"


@app.command("diff")
def diff(
    a: str = typer.Argument(
        ...,
        metavar="A",
        help="The baseline: a trace file (.jsonl, .json, .gz), a directory of them, or log:SINCE[..UNTIL], "
        "the requests of the trace log that started in that window (each bound a duration ago, 30s, 15m, "
        "1h, 2d, 1w, or a time, 2026-12-01T09:30; either may be left out).",
    ),
    b: str = typer.Argument(..., metavar="B", help="What is compared with A, in the same forms."),
    by: DiffBy = typer.Option(DiffBy.model, "--by", help="Compare per model, provider, key or route."),
    fail_if: list[str] = typer.Option(
        [],
        "--fail-if",
        metavar="EXPR",
        help="Exit 1 if this holds for a group or for all requests: '<metric> <op> <value>', such as "
        "'cost_per_request > +10%' (a change of B against A), 'error_rate > 0.01' (B's value), "
        "'p95_latency > +250ms'. Repeatable.",
    ),
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    json: bool = typer.Option(
        False, "--json", help="One JSON object: {by, a, b, all, groups, fail_if, failed}."
    ),
) -> None:
    """Two runs side by side, per group and for all requests: requests, error rate, latency
    p50/p95/p99, TTFT p50/p95, tokens in and out per request, cost per request and in all,
    finish reasons and fallbacks, with the change of B against A. A gate for CI with --fail-if."""
    conditions = [parse_condition(text) for text in fail_if]
    now = time.time_ns()
    sides = [
        _diff_side(name, arg, partial(log_dir, dir, config), now, by) for name, arg in (("A", a), ("B", b))
    ]
    report = compare(sides[0], sides[1], by.value)
    failed = breaches(report, conditions)
    report |= {"fail_if": [c.text for c in conditions], "failed": failed}
    if json:
        _json_lines([report])
    else:
        out = console()
        for line in diff_header(report):
            out.print(line, soft_wrap=True)
        print_wide(out, diff_table(report))
    for breach in failed:
        print(f"tfgw: {breach_line(breach)}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)
    if conditions:
        print(f"tfgw: --fail-if: none of {len(conditions)} held", file=sys.stderr)


def _diff_side(name: str, arg: str, directory: Callable[[], Path], now: int, by: DiffBy) -> Side:
    """One side read and grouped; its errors (and a side without requests) name the argument."""
    source = _diff_source(name, arg, directory, now)
    try:
        side = collect(source, by.value)
    except InputError as exc:
        raise UsageError(f"{name}: {exc.message}") from exc
    if not side.groups:
        raise UsageError(f"{name}: {arg}: no requests to compare")
    return side


def _diff_source(name: str, arg: str, directory: Callable[[], Path], now: int) -> Source:
    """A path, or `log:SINCE[..UNTIL]`: a window of the trace log."""
    if not arg.startswith(LOG_WINDOW):
        return Source(arg, path=Path(arg))
    since, _, until = arg[len(LOG_WINDOW) :].partition("..")
    since_ns, until_ns = (_window_bound(name, arg, bound, now) for bound in (since, until))
    if since_ns is not None and until_ns is not None and since_ns >= until_ns:
        raise UsageError(f"{name}: {arg}: the window ends before it starts")
    return Source(arg, log=directory(), since_ns=since_ns, until_ns=until_ns)


def _window_bound(name: str, arg: str, bound: str, now: int) -> int | None:
    """A duration ago (`2h`) or a time (`2026-12-01T09:30`, local unless it names its zone)."""
    if not bound:
        return None
    if SINCE.fullmatch(bound):
        return now - parse_since(bound) * 1_000_000_000
    try:
        return int(datetime.fromisoformat(bound).timestamp() * 1_000_000_000)
    except ValueError:
        raise UsageError(
            f"{name}: {arg}: expected log:SINCE[..UNTIL], each a duration ago (30s, 15m, 1h, 2d, 1w) "
            f"or a time (2026-12-01T09:30), got {bound!r}"
        ) from None


@app.command("top")
def top(
    dir: Path | None = DIR,
    config: Path | None = CONFIG,
    nats: str | None = NATS,
    window: str = typer.Option(
        "5m", "--window", help="The stretch of the log the board covers, up to now: 30s, 5m, 1h, ..."
    ),
    once: bool = typer.Option(
        False,
        "--once",
        help="One board, then exit. If the log has nothing newer than the window (a copy of an old "
        "log), the window ends at its last request.",
    ),
    json: bool = typer.Option(
        False,
        "--json",
        help="One board as one JSON object: {window_s, now, anchored, bucket_s, models, targets}.",
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between refreshes."),
) -> None:
    """A live board per model from the trace log alone: req/s, error rate, latency and TTFT
    p50/p95, tokens/s, cost per minute, mean open streams, a req/s sparkline, and each export
    target's lag. Keys on a terminal: s sort, r reverse, / filter, e errors only, q quit.
    Off a terminal, a plain board every interval (--once: one)."""
    window_s = parse_since(window, "--window")
    if not 0 < interval < math.inf:
        raise UsageError(f"--interval: expected seconds > 0, got {interval:g}")
    bus = _bus(nats, dir, config)
    directory = log_dir(dir, config) if bus is None else TracingSettings().path
    settings = top_settings(config, directory)
    run_top(directory, settings, window_s, once=once or json, json=json, interval=interval, bus=bus)
