"""`tfgw traces top`: the board's numbers, its text, its JSON, and the command as a user runs it
(on a copy of an old log, live in a pseudo-terminal, into a pipe), on logs written as the gateway
writes them. Whole values; times in UTC."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from rich.console import Console

from tests import processes
from tests.processes import Lines, spawn
from tests.samples import MS, T0, Request, row_of, segment_name, trace_line, write_log, write_segment
from tfgw.cli import main
from tfgw.cli.top import Feed, top_settings
from tfgw.tracing.top import Window, board
from tfgw.views.top import View, board_view, sparkline

pytestmark = pytest.mark.usefixtures("plain_utc")

S = 1000 * MS
#: the old log's requests; the newest by start ends at T0 + 297 s, so an anchored 5m window is
#: [T0 - 3 s, T0 + 297 s]
OLD = [
    Request(1, start=T0 - 400 * S),  # before the window and the stretch read at start
    Request(2, start=T0 - 200 * S),  # read at start, before the window: evicted
    Request(3, start=T0 - 33 * S, model="claude-sonnet", stream=True, ttft_ms=400.0, duration_ms=60_000.0),
    Request(4, start=T0 + 10 * S, duration_ms=800.0),
    Request(5, start=T0 + 40 * S, duration_ms=900.0),
    Request(6, start=T0 + 70 * S, duration_ms=1000.0, status=502),
    Request(7, start=T0 + 200 * S, duration_ms=1200.0),
    Request(8, start=T0 + 250 * S, duration_ms=1500.0),
    Request(9, start=T0 + 290 * S, duration_ms=3000.0, tokens=(100, 900)),
    *(
        Request(n, start=T0 + t * S, model="gpt-4o-mini", stream=True, ttft_ms=ttft, duration_ms=2000.0)
        for n, t, ttft in ((10, 100, 90.0), (11, 150, 120.0), (12, 295, 150.0))
    ),
    Request(13, start=T0 + 120 * S, model="claude-sonnet", duration_ms=1000.0, tokens=(20, 80)),
    Request(
        14, start=T0 + 60 * S, model="text-embedding-3-small", embeddings=True, tokens=(8, 0), key="batch"
    ),
]
#: what the board says of it, in the default order (most req/s first, then by name)
OLD_MODELS: list[dict[str, Any]] = [
    {"model": "gpt-4o", "requests": 6, "req_s": 6 / 300, "errors": 1, "error_rate": 1 / 6,
     "latency_ms": {"p50": 1000.0, "p95": 3000.0}, "ttft_ms": {"p50": None, "p95": None},
     "tokens_s": (4 * 60 + 1000) / 300, "cost_per_min": round(0.00051 * 4 + 0.00925, 10) / 5,
     "mean_open_streams": None, "req_s_series": [0.04, 0.04, 0.04, 0, 0, 0, 0, 0, 0.04, 0, 0.04, 0.04]},
    {"model": "gpt-4o-mini", "requests": 3, "req_s": 3 / 300, "errors": 0, "error_rate": 0.0,
     "latency_ms": {"p50": 2000.0, "p95": 2000.0}, "ttft_ms": {"p50": 120.0, "p95": 150.0},
     "tokens_s": 3 * 60 / 300, "cost_per_min": round(3 * 0.0000018 + 3 * 0.0000288, 10) / 5,
     "mean_open_streams": 3 * 2 / 300,
     "req_s_series": [0, 0, 0, 0, 0.04, 0, 0.04, 0, 0, 0, 0, 0.04]},
    {"model": "claude-sonnet", "requests": 1, "req_s": 1 / 300, "errors": 0, "error_rate": 0.0,
     "latency_ms": {"p50": 1000.0, "p95": 1000.0}, "ttft_ms": {"p50": None, "p95": None},
     "tokens_s": 100 / 300, "cost_per_min": round(0.00006 + 0.0012, 10) / 5,
     "mean_open_streams": 30 / 300,
     "req_s_series": [0, 0, 0, 0, 0.04, 0, 0, 0, 0, 0, 0, 0]},
    {"model": "text-embedding-3-small", "requests": 1, "req_s": 1 / 300, "errors": 0, "error_rate": 0.0,
     "latency_ms": {"p50": 800.0, "p95": 800.0}, "ttft_ms": {"p50": None, "p95": None},
     "tokens_s": 8 / 300, "cost_per_min": None, "mean_open_streams": None,
     "req_s_series": [0, 0, 0.04, 0, 0, 0, 0, 0, 0, 0, 0, 0]},
]  # fmt: skip

#: the same board as text (a target's cursor written by test_board_text_is_pinned_whole)
OLD_TEXT = """\
tfgw traces top  D  last 5m to 2024-01-01 00:04:57 (the log's last request: it has none in the 5m before now)
model                   req/s ↓  err %        p50        p95  ttft p50  ttft p95  tok/s      $/min  mean streams  req/s, last 5m
gpt-4o                    0.020   16.7  1000.0 ms  3000.0 ms         -         -    4.1  $0.002258             -  ███▁▁▁▁▁█▁██
gpt-4o-mini               0.010    0.0  2000.0 ms  2000.0 ms  120.0 ms  150.0 ms  0.600  $0.000018         0.020  ▁▁▁▁█▁█▁▁▁▁█
claude-sonnet             0.003    0.0  1000.0 ms  1000.0 ms         -         -  0.333  $0.000252         0.100  ▁▁▁▁█▁▁▁▁▁▁▁
text-embedding-3-small    0.003    0.0   800.0 ms   800.0 ms         -         -  0.027          -             -  ▁▁█▁▁▁▁▁▁▁▁▁
export to  state    delivered  pending    lag  reason
collector  running      1,234    2 KiB  0.4 s
"""  # fmt: skip  # noqa: E501

CONFIG = '[otel.targets.collector]\nkind = "otlp"\nendpoint = "http://127.0.0.1:4318"\n'


def write_old_log(directory: Path) -> Path:
    lines = [trace_line(r) for r in OLD]
    write_log(directory, lines[:2])
    write_log(directory, lines[2:], pid=4343)
    return directory


def write_cursor(directory: Path, name: str = "collector") -> None:
    """A running exporter's cursor for `name` (its heartbeat now)."""
    cursors = directory / ".cursors"
    cursors.mkdir(parents=True, exist_ok=True)
    cursor = {"offsets": {}, "delivered": 1234, "attempts": 7, "retries": 1, "pending_bytes": 2048,
              "rejected": 0, "partial_rejected": 0, "unsendable": 0, "unreadable": 0, "last_error": None,
              "warning": None, "last_success": time.time(), "retrying": False, "lag_s": 0.4,
              "updated": time.time()}  # fmt: skip
    (cursors / f"{name}.json").write_bytes(orjson.dumps(cursor))


def tfgw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the CLI in this process, through `main()` and its error handler."""
    monkeypatch.setattr(sys, "argv", ["tfgw", *args])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), "\n".join(line.rstrip() for line in out.split("\n")), err


Run = tuple[pytest.MonkeyPatch, pytest.CaptureFixture[str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    return monkeypatch, capsys


def approx_models(models: list[dict[str, Any]]) -> list[Any]:
    """Float sums and ratios compared to 1e-9 (their last bits depend on the order of addition)."""
    return [{k: pytest.approx(v, abs=1e-9) if k != "model" else v for k, v in m.items()} for m in models]


# -- the numbers -----------------------------------------------------------------------------------


def test_a_window_of_the_old_log() -> None:
    window = Window(300)
    window.extend(row_of(trace_line(r)) for r in OLD[1:])  # what is read at start: from T0 - 303 s
    now = T0 + 297 * S
    assert len(window) == 13
    window.evict(now)
    assert len(window) == 12  # request 2 ended before the window; the claude stream is inside it
    assert approx_models(window.models(now)) == OLD_MODELS
    window.evict(now + 600 * S)
    assert (len(window), window.models(now + 600 * S)) == (0, [])


def test_a_stream_counts_for_its_time_inside_the_window() -> None:
    """Mean open streams: two streams open all of a 10 s window and one for half of it make 2.5."""
    window = Window(10, buckets=2)
    for n, start, seconds in ((1, 0, 10), (2, 0, 10), (3, 5, 20)):
        window.add(
            row_of(trace_line(Request(n, start=T0 + start * S, stream=True, duration_ms=seconds * 1000.0)))
        )
    [model] = window.models(T0 + 10 * S)
    assert (model["requests"], model["mean_open_streams"], model["req_s_series"]) == (3, 2.5, [0.4, 0.2])


def test_sparkline() -> None:
    assert [sparkline([]), sparkline([0, 0]), sparkline([0, 1, 2, 4, 8])] == ["", "▁▁", "▁▂▃▅█"]


def test_keys_change_the_view() -> None:
    view = View()
    steps = []
    for keys in ("s", "s", "r", "/gpx", "\x7ft-4o\n", "e", "\x1b[A", "\x1b", "/x\x1b", "e"):
        assert view.feed(keys) is False
        steps.append((view.sort_key, view.reverse, view.text, view.typing, view.errors_only))
    assert steps == [
        ("error_rate", False, "", None, False),
        ("p50", False, "", None, False),
        ("p50", True, "", None, False),
        ("p50", True, "", "gpx", False),
        ("p50", True, "gpt-4o", None, False),
        ("p50", True, "gpt-4o", None, True),
        ("p50", True, "gpt-4o", None, True),  # an arrow key: ignored
        ("p50", True, "", None, True),  # Esc clears the filter
        ("p50", True, "", None, True),  # and cancels one being typed
        ("p50", True, "", None, False),
    ]
    assert view.feed("/q\n") is False and view.text == "q"  # typed, q is text
    assert view.feed("xq") is True
    assert View().feed("\x03") is True  # ^C read as a key: stdin a terminal, not the controlling one


# -- the board -------------------------------------------------------------------------------------


def test_board_text_is_pinned_whole(tmp_path: Path) -> None:
    log = write_old_log(tmp_path / "log")
    write_cursor(log)
    (tmp_path / "tfgw.toml").write_text(CONFIG)
    feed = Feed(log, top_settings(tmp_path / "tfgw.toml", log), 300, follow=False)
    out = Console(record=True, width=160, file=io.StringIO())
    out.print(board_view(feed.refresh(), View(), Path("D")))
    assert "\n".join(line.rstrip() for line in out.export_text().split("\n")) == OLD_TEXT


def test_a_board_of_a_stream_points_to_its_consumers_not_to_adding_a_target(tmp_path: Path) -> None:
    log = write_old_log(tmp_path / "log")
    (tmp_path / "tfgw.toml").write_text(CONFIG)
    board = Feed(log, top_settings(tmp_path / "tfgw.toml", log), 300, follow=False).refresh()
    out = Console(record=True, width=160, file=io.StringIO())
    out.print(board_view({**board, "targets": []}, View(), "nats:TFGW_TRACES"))
    lines = [line.rstrip() for line in out.export_text().split("\n")]
    assert "export: the targets' consumers on the stream: `tfgw otel status`" in lines
    assert lines[0].startswith("tfgw traces top  nats:TFGW_TRACES  last 5m to ")


def test_the_board_sorted_filtered_and_errors_only() -> None:
    window = Window(300)
    window.extend(row_of(trace_line(r)) for r in OLD)
    snapshot = board(window, T0 + 297 * S, anchored=False)
    out = Console(record=True, width=200, file=io.StringIO())
    for view in (View(sort=9, reverse=True), View(text="GPT"), View(errors_only=True), View(text="nope")):
        out.print(board_view(snapshot, view, Path("D"), keys=True))
    lines = [line.rstrip() for line in out.export_text().splitlines()]
    models = [line.split()[0] for line in lines if line.startswith(("gpt", "claude", "text", "no "))]
    assert models == [
        "text-embedding-3-small", "gpt-4o-mini", "gpt-4o", "claude-sonnet",
        "gpt-4o", "gpt-4o-mini",
        "gpt-4o",
        "no",
    ]  # fmt: skip
    assert [line for line in lines if line.startswith(("filter", "errors", "s sort"))] == [
        "s sort  r reverse  / filter  e errors only  q quit",
        "filter: GPT  s sort  r reverse  / filter  e errors only  q quit",
        "errors only  s sort  r reverse  / filter  e errors only  q quit",
        "filter: nope  s sort  r reverse  / filter  e errors only  q quit",
    ]
    assert lines[2].startswith("model ↓ ") and "no model matches the filter" in lines


def test_once_on_a_copy_of_an_old_log(run: Run, tmp_path: Path) -> None:
    """The window ends at the log's last request; the export targets come from the config."""
    log = write_old_log(tmp_path / "log")
    write_cursor(log)
    Path("tfgw.toml").write_text(CONFIG)
    code, out, err = tfgw(*run, "traces", "top", "--dir", str(log), "--once")
    assert (code, out.replace(str(log), "D"), err) == (0, OLD_TEXT, "")


def test_once_json_is_the_board_whole(run: Run, tmp_path: Path) -> None:
    log = write_old_log(tmp_path / "log")
    write_cursor(log)
    Path("tfgw.toml").write_text(CONFIG)
    code, out, err = tfgw(*run, "traces", "top", "--dir", str(log), "--json")
    board = orjson.loads(out)
    [target] = board["targets"]
    heartbeats = [time.time() - target.pop(key) for key in ("updated", "last_success")]
    assert (code, err, all(0 <= age < 60 for age in heartbeats)) == (0, "", True)
    assert {**board, "models": approx_models(board["models"])} == {
        "window_s": 300,
        "now": "2024-01-01T00:04:57.000Z",
        "anchored": True,
        "bucket_s": 25.0,
        "models": OLD_MODELS,
        "targets": [
            {"target": "collector", "state": "running", "reason": None, "delivered": 1234, "attempts": 7,
             "retries": 1, "pending_bytes": 2048, "retrying": False, "rejected": 0, "partial_rejected": 0,
             "unsendable": 0, "unreadable": 0, "last_error": None, "warning": None, "lag_s": 0.4,
             "dropped": 0},
        ],
    }  # fmt: skip


def test_once_without_targets_and_without_requests(run: Run, tmp_path: Path) -> None:
    write_log(tmp_path, [])
    code, out, err = tfgw(*run, "traces", "top", "--dir", str(tmp_path), "--json", "--window", "1m")
    board = orjson.loads(out)
    assert (code, err, board | {"now": None}) == (
        0, "", {"window_s": 60, "now": None, "anchored": False, "bucket_s": 5.0, "models": [], "targets": []},
    )  # fmt: skip
    code, out, err = tfgw(*run, "traces", "top", "--dir", str(tmp_path), "--once", "--window", "1m")
    assert (code, out.split("\n")[1:], err) == (
        0, ["no requests in the last 1m", "export: no targets (add one with `tfgw otel set KIND`)", ""], "",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--window", "5 min"), "--window: expected a duration such as 30s, 15m, 1h, 2d or 1w, got '5 min'"),
        (("--interval", "0"), "--interval: expected seconds > 0, got 0"),
        (("--interval", "inf"), "--interval: expected seconds > 0, got inf"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    run: Run, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    assert tfgw(*run, "traces", "top", "--dir", str(tmp_path), *options) == (2, "", f"tfgw: {message}\n")


# -- following -------------------------------------------------------------------------------------


def recent(n: int, seconds_ago: float, **fields: Any) -> dict[str, Any]:
    return trace_line(Request(n, start=time.time_ns() - round(seconds_ago * S), **fields))


def test_a_refresh_reads_only_what_was_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line written while the log is first read is counted once; later refreshes never read the
    log again, only what the follower sees appended."""
    from tfgw.cli import top

    segment = write_log(tmp_path, [recent(1, 30)])[0]
    real = top.read_rows

    def read_rows_racing_a_write(*args: Any, **kwargs: Any) -> Any:
        with segment.open("ab") as f:  # after the follower's start, before the first read
            f.write(orjson.dumps(recent(2, 20)) + b"\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(top, "read_rows", read_rows_racing_a_write)
    feed = Feed(tmp_path, top_settings(None, tmp_path), 300, follow=True)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the log was read again")

    monkeypatch.setattr(top, "read_rows", forbidden)
    monkeypatch.setattr(top, "newest_rows", forbidden)
    assert [m["requests"] for m in feed.refresh()["models"]] == [2]
    write_segment(tmp_path, [recent(3, 1, model="gpt-4o-mini")], name=segment_name(T0, seq=2))
    assert [(m["model"], m["requests"]) for m in feed.refresh()["models"]] == [
        ("gpt-4o", 2),
        ("gpt-4o-mini", 1),
    ]


def read_and_close(stream: IO[Any] | None) -> Any:
    assert stream is not None
    with stream:
        return stream.read()


ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")


class Screen:
    """What a child draws on a pseudo-terminal: frames of rich `Live` on the alternate screen, each
    from the cursor's move home (`ESC [H`) to the next one, escape codes removed."""

    HOME = b"\x1b[H"

    def __init__(self, master: int) -> None:
        self.master, self.raw = master, b""

    def frame(self, text: str, timeout: float = 10.0) -> str:
        """The first whole frame from now on that shows `text`."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self.raw.split(self.HOME)
            for i, frame in enumerate(frames[1:-1], 1):
                if text in (shown := _plain(frame)):
                    self.raw = self.HOME.join([b"", *frames[i + 1 :]])
                    return shown
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{text!r} not shown within {timeout} s; shown: {_plain(self.raw)[-2000:]!r}"
                )
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # EIO: the child side is closed
                    raise AssertionError(f"{text!r} never shown: {_plain(self.raw)[-2000:]!r}") from None

    def rest(self) -> str:
        """What is left to read now (the child exited; this side keeps the terminal open)."""
        while select.select([self.master], [], [], 0)[0]:
            self.raw += os.read(self.master, 65536)
        return _plain(self.raw)


def _plain(raw: bytes) -> str:
    return ANSI.sub("", raw.decode("utf-8", "replace"))


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal 40 rows by 200 columns: (master, child side)."""
    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    yield master, child
    os.close(master)
    os.close(child)


def test_live_on_a_terminal_sorts_on_s_and_quits_on_q(tmp_path: Path, terminal: tuple[int, int]) -> None:
    write_log(tmp_path, [recent(1, 30), recent(2, 20, status=502), recent(3, 10, model="gpt-4o-mini")])
    master, child_side = terminal
    before = termios.tcgetattr(child_side)
    env = {**os.environ, "TERM": "xterm-256color", "TZ": "UTC"}
    command = [sys.executable, "-m", "tfgw", "traces", "top", "--dir", str(tmp_path), "--interval", "0.2"]
    child = spawn(command, stdin=child_side, stdout=child_side, stderr=subprocess.PIPE, env=env)
    try:
        screen = Screen(master)
        shown = screen.frame("req/s ↓")
        assert "gpt-4o " in shown and "s sort  r reverse  / filter  e errors only  q quit" in shown
        assert termios.tcgetattr(child_side)[3] & (termios.ICANON | termios.ECHO) == 0  # cbreak
        os.write(master, b"s")
        assert "gpt-4o " in screen.frame("err % ↓")
        os.write(master, b"q")
        child.wait(10)
    finally:
        code = processes.stop(child, timeout=5)
    assert (code, read_and_close(child.stderr)) == (0, b"")
    assert termios.tcgetattr(child_side) == before


class TerminalChild:
    """A command in a session of its own whose controlling terminal is `child_side`, as a shell
    starts it there: ^C typed on the terminal is SIGINT from the terminal's driver, not a key."""

    def __init__(self, command: list[str], child_side: int, env: dict[str, str]) -> None:
        self.code: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: system calls only, until exec
            try:
                os.setsid()
                fcntl.ioctl(child_side, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(child_side, fd)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)

    def wait(self, timeout: float) -> int | None:
        """Its exit code once it exits within `timeout` seconds (polled), else None."""
        deadline = time.monotonic() + timeout
        while self.code is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(0.02)
        return self.code

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s, unless it already exited."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.wait(0) is not None:
                break
            os.kill(self.pid, sig)
            self.wait(5)
        return self.code


def test_ctrl_c_on_its_terminal_quits_and_restores_the_terminal(
    tmp_path: Path, terminal: tuple[int, int]
) -> None:
    write_log(tmp_path, [recent(1, 30), recent(2, 10, model="gpt-4o-mini")])
    master, child_side = terminal
    before = termios.tcgetattr(child_side)
    env = {**os.environ, "TERM": "xterm-256color", "TZ": "UTC"}
    command = [sys.executable, "-m", "tfgw", "traces", "top", "--dir", str(tmp_path), "--interval", "0.2"]
    child = TerminalChild(command, child_side, env)
    try:
        screen = Screen(master)
        assert "gpt-4o " in screen.frame("req/s ↓")
        os.write(master, b"/mini\n")
        shown = screen.frame("filter: mini  s sort")
        assert "gpt-4o-mini " in shown and "gpt-4o " not in shown
        os.write(master, b"\x03")
        code = child.wait(10)
    finally:
        child.stop()
    rest = screen.rest()
    assert (code, "Traceback" in rest, termios.tcgetattr(child_side)) == (0, False, before)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_off_a_terminal_plain_boards_until_stopped(tmp_path: Path, stop_signal: int) -> None:
    segment = write_log(tmp_path, [recent(1, 30)])[0]
    command = [sys.executable, "-m", "tfgw", "traces", "top", "--dir", str(tmp_path), "--interval", "0.2"]
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    child = spawn(command, **pipes, text=True, env={**os.environ})  # as this process sees it: no COLUMNS
    out = Lines(child.stdout)  # type: ignore[arg-type]
    try:
        board = [out.next(10) for _ in range(5)]
        with segment.open("ab") as f:
            f.write(orjson.dumps(recent(2, 1, model="gpt-4o-mini")) + b"\n")
        deadline = time.monotonic() + 10
        while not (line := out.next(10)).startswith("gpt-4o-mini"):
            assert time.monotonic() < deadline, repr(line)
    finally:
        child.send_signal(stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):  # one signal: a second one (stop()'s
            child.wait(5)  # SIGTERM) may come once the board has put the default handlers back
        code = processes.stop(child, timeout=5)
    assert board[0].startswith(f"tfgw traces top  {tmp_path}  last 5m to ")
    assert [re.sub(r"\s+", " ", line).strip() for line in board[1:]] == [
        "model req/s ↓ err % p50 p95 ttft p50 ttft p95 tok/s $/min mean streams req/s, last 5m",
        "gpt-4o 0.003 0.0 800.0 ms 800.0 ms - - 0.200 $0.000102 - ▁▁▁▁▁▁▁▁▁▁█▁",
        "export: no targets (add one with `tfgw otel set KIND`)",
        "",
    ]
    assert "\x1b" not in "".join(board) + line
    assert (code, read_and_close(child.stderr)) == (0, "")
