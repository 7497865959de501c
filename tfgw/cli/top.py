"""The loop behind `tfgw traces top` (the command itself, its options, is in `tfgw.cli.traces`).

At start the log's last stretch is read once, from the rows files (`read_rows`): the window, and
one window more before it, for streams that began before the window and are still inside it.
While live, `reader.Follower` reads only the lines appended since, and `tracing.top.Window`
evicts by time, so a refresh never re-reads the log. `--once` anchors the window at the log's
last request when nothing in the log is newer than the window (a copy of an old log).

With `--nats` (or `[bus] kind = "nats"`) the rows come from the JetStream stream instead
(`tfgw.bus.live.BusFollower`): the messages stored since the window began, then the new ones, from
every gateway replica; the board lists no export targets then (`tfgw otel status` reads the NATS
exporters' consumers).

On a terminal (rich `Live`, its alternate screen) the keys act while stdin is a terminal too,
read in cbreak mode, which every way out restores; SIGINT, SIGTERM and SIGHUP stop it as `q`
does, with exit code 0. Off a terminal a plain board is printed every interval.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live

from tfgw.bus.live import BusFollower, where
from tfgw.cli.options import read_settings
from tfgw.config import Settings, find_config
from tfgw.config_bus import BusSettings
from tfgw.export.status import target_status
from tfgw.tracing.reader import Follower, Trace, newest_rows, read_rows, warn_stderr
from tfgw.tracing.top import NS, Window, board, newest_end
from tfgw.views.terminal import console, print_wide
from tfgw.views.top import View, board_view

__all__ = ["Feed", "run", "top_settings"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: seconds read from the stream before the window, for a server clock a little behind this one
BUS_CLOCK_SLACK_S = 5
Warn = Callable[[str], None]


def top_settings(config: Path | None, directory: Path) -> Settings:
    """The config as written (defaults when there is none), its trace dir the one being read, so
    the export targets' cursors are read from that log."""
    settings = (
        Settings()
        if config is None and find_config(None) is None
        else read_settings(config, resolve_secrets=False)
    )
    return replace(settings, tracing=replace(settings.tracing, dir=str(directory)))


class _LastWarning:
    """Where warnings go while the board holds the screen: the last one is shown under it."""

    def __init__(self) -> None:
        self.message: str | None = None

    def __call__(self, message: str) -> None:
        self.message = message


class Feed:
    """The window of the log, kept current: `refresh()` reads what was appended (when following),
    moves the window to now and gives the board. With `bus`, the window is read from the NATS
    stream instead (`tfgw.bus.live`): every replica's requests; `close()` stops its reader."""

    def __init__(
        self,
        directory: Path,
        settings: Settings,
        window_s: int,
        *,
        follow: bool,
        warn: Warn = warn_stderr,
        bus: BusSettings | None = None,
    ) -> None:
        self.directory, self.settings, self.bus = directory, settings, bus
        self.where: Path | str = directory if bus is None else where(bus)
        self.window = Window(window_s)
        self._warn = warn
        self._follower: Follower | BusFollower | None = None
        self._loaded: set[Any] = set()
        self.now, self.anchored = time.time_ns(), False
        if bus is None:
            self._read_log(follow)
        else:
            self._read_bus(bus, follow)

    def _read_log(self, follow: bool) -> None:
        directory, warn, span = self.directory, self._warn, self.window.window_s * NS
        # made before the first read, so nothing written meanwhile is missed; what both see is
        # counted once (`_loaded`, the first poll only)
        self._follower = Follower(directory, warn=warn) if follow else None
        if not follow:
            last = newest_end(newest_rows(directory, 1, warn=warn))
            if last is not None and last < self.now - span:
                self.now, self.anchored = last, True
        rows = list(read_rows(directory, since_ns=self.now - 2 * span, warn=warn))
        self._loaded = {row.get("trace_id") for row in rows} if follow else set()
        self.window.extend(rows)

    def _read_bus(self, bus: BusSettings, follow: bool) -> None:
        """The messages stored since the window began (a record is stored after its request ended,
        so every request that touches the window is among them), then, following, the new ones.
        `--once`: anchored as for the log, at the last of the requests read, when all of them
        ended before the window (lines of an old log published again)."""
        since = self.now - (self.window.window_s + BUS_CLOCK_SLACK_S) * NS
        follower = BusFollower(bus, since_ns=since, warn=self._warn, role="top")
        if follow:
            self._follower = follower
            return
        try:
            rows = [row for trace in follower.backlog() if (row := self._row(trace)) is not None]
        finally:
            follower.close()
        last = newest_end(rows)
        if last is not None and last < self.now - self.window.window_s * NS:
            self.now, self.anchored = last, True
        self.window.extend(rows)

    def close(self) -> None:
        if isinstance(self._follower, BusFollower):
            self._follower.close()

    def refresh(self) -> dict[str, Any]:
        if self._follower is not None:
            self._poll(self._follower)
            self.now = time.time_ns()
        self.window.evict(self.now)
        return board(self.window, self.now, anchored=self.anchored, targets=self._targets())

    def _targets(self) -> list[dict[str, Any]]:
        """The export targets' states from their cursor files; none over NATS, whose exporters
        keep no cursor files (`tfgw otel status` reads their consumers)."""
        if self.bus is not None:
            return []
        return [{"target": name, **s} for name, s in target_status(self.settings).items()]

    def _poll(self, follower: Follower | BusFollower) -> None:
        loaded, self._loaded = self._loaded, set()
        for trace in follower.poll():
            row = self._row(trace)
            if row is not None and row.get("trace_id") not in loaded:
                self.window.add(row)

    def _row(self, trace: Trace) -> dict[str, Any] | None:
        row = trace.row()
        if row is None:
            self._warn(f"{trace.file}:{trace.line}: trace {trace.trace_id!r} cannot be summarized, skipped")
        return row


def run(
    directory: Path,
    settings: Settings,
    window_s: int,
    *,
    once: bool,
    json: bool,
    interval: float,
    bus: BusSettings | None = None,
) -> None:
    """One board (`once`; as JSON with `json`), or boards until stopped: live on a terminal, plain
    off one. With `bus`, from the NATS stream rather than the log in `directory`."""
    out = console()
    if once:
        feed = Feed(directory, settings, window_s, follow=False, bus=bus)
        snapshot = feed.refresh()
        if json:
            sys.stdout.write(orjson.dumps(snapshot).decode() + "\n")
        else:
            print_wide(out, _view(feed, snapshot, View()))
        return
    live = out.is_terminal and not out.is_dumb_terminal
    last = _LastWarning()
    try:
        with _stop_signals():
            feed = Feed(
                directory, settings, window_s, follow=True, warn=last if live else warn_stderr, bus=bus
            )
            try:
                if live:
                    _live(feed, out, interval, last, keys=sys.stdin.isatty())
                else:
                    _plain(feed, out, interval)
            finally:
                feed.close()
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `| head`: the reader is gone; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _view(feed: Feed, snapshot: dict[str, Any], view: View, **options: Any) -> Any:
    """The board; its header names the log directory or the stream (`board_view` only prints
    what it is given as its directory)."""
    return board_view(snapshot, view, feed.where, **options)


def _plain(feed: Feed, out: Console, interval: float) -> None:
    """A board every `interval` seconds, one after the other, a blank line between them."""
    while True:
        out.print(_view(feed, feed.refresh(), View()))
        out.print()
        out.file.flush()
        time.sleep(interval)


def _live(feed: Feed, out: Console, interval: float, last: _LastWarning, *, keys: bool) -> None:
    """The board in place, refreshed every `interval` seconds and at every key; `q` returns."""
    view, snapshot = View(), feed.refresh()
    fd = sys.stdin.fileno() if keys else None

    def render() -> Any:
        return _view(feed, snapshot, view, keys=fd is not None, warning=last.message)

    with _cbreak(fd), Live(render(), console=out, screen=True, auto_refresh=False) as board_live:
        due = time.monotonic() + interval
        while True:
            typed = _read_keys(fd, max(0.0, due - time.monotonic()))
            if typed is None:  # stdin closed: no more keys
                fd = None
            elif typed and view.feed(typed):
                return
            if time.monotonic() >= due:
                snapshot, due = feed.refresh(), time.monotonic() + interval
            board_live.update(render(), refresh=True)


def _read_keys(fd: int | None, timeout: float) -> str | None:
    """What was typed within `timeout` seconds ("" if nothing); None at the end of stdin."""
    if fd is None:
        time.sleep(timeout)
        return ""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return ""
    data = os.read(fd, 1024)
    return data.decode("utf-8", "replace") if data else None


@contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys one by one, unechoed, while the block runs; the terminal's mode as it was after it,
    however it ends. ^C still interrupts (cbreak keeps signals)."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP stop the board as ^C does, also where SIGINT was inherited
    ignored (a job started with `&`): a board is stopped by whoever started it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
