"""`tfgw traces tail | list | show | stats` as a user runs them, on a log written as the gateway
writes it: whole outputs (trailing blanks of table cells stripped), times in UTC."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import orjson
import pytest

from tests import processes
from tests.processes import Lines, spawn
from tests.samples import (
    MS,
    T0,
    Request,
    row_of,
    segment_name,
    trace_id,
    trace_line,
    write_log,
    write_segment,
)
from tests.tracing.test_reader import LINES, ROWS
from tfgw.cli import main
from tfgw.cli.traces import parse_since

EXTRA = trace_line(
    Request(
        6,
        start=T0 + 5000 * MS,
        model="claude-sonnet",
        provider="anthropic",
        route_model="claude-sonnet-4-5",
        key="batch",
        stream=True,
        ttft_ms=300.0,
        duration_ms=2000.0,
        tokens=(100, 400),
    )
)
ALL = [*ROWS, row_of(EXTRA)]


#: plain text (no terminal, no colour overrides) and UTC times, in-process and in children
pytestmark = pytest.mark.usefixtures("plain_utc")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    write_log(tmp_path / "log", [*LINES, EXTRA], per_segment=4)
    return tmp_path / "log"


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


# -- list ----------------------------------------------------------------------------------------


def test_list_prints_the_newest_requests_first(run: Run, log: Path) -> None:
    assert tfgw(*run, "traces", "list", "--dir", str(log)) == (0, """\
time            trace     model                   provider   status       latency      ttft   tokens       cost  error
01-01 00:00:05  0006b83d  claude-sonnet           anthropic  ok 200     2000.0 ms  300.0 ms  100/400  $0.006300
01-01 00:00:04  00058d8e  text-embedding-3-small  openai     ok 200      800.0 ms         -      8/-          -
01-01 00:00:03  0004b3d1  gpt-4o                  openai     error 502   800.0 ms         -        -          -  provider_error
01-01 00:00:02  0003946e  gpt-4o                  anthropic  ok 200     1500.0 ms         -    12/48  $0.000510
01-01 00:00:01  0002da62  gpt-4o-mini             openai     ok 200      800.0 ms   95.0 ms   30/120  $0.000077
01-01 00:00:00  000117fe  gpt-4o                  openai     ok 200      800.0 ms         -    12/48  $0.000510
""", "")  # fmt: skip  # noqa: E501


def json_lines(text: str) -> list[object]:
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), ALL[::-1]),
        (("--limit", "2"), [ALL[5], ALL[4]]),
        (("--status", "error"), [ALL[3]]),
        (("--model", "gpt-4o"), [ALL[3], ALL[2], ALL[0]]),
        (("--model", "claude-sonnet-4-5", "--status", "ok"), [ALL[5], ALL[2]]),  # the model that answered
        (("-m", "gpt-4o", "--status", "ok", "-n", "1"), [ALL[2]]),
        (("--model", "nope"), []),
    ],
)
def test_list_json_filters(run: Run, log: Path, options: tuple[str, ...], expected: list[object]) -> None:
    code, out, err = tfgw(*run, "traces", "list", "--dir", str(log), "--json", *options)
    assert (code, json_lines(out), err) == (0, expected, "")


def test_list_since(run: Run, tmp_path: Path) -> None:
    now = time.time_ns()
    ages = {1: 2 * 3600, 2: 50 * 60, 3: 10 * 60, 4: 20}
    lines = [trace_line(Request(n, start=now - age * 1_000_000_000)) for n, age in ages.items()]
    write_log(tmp_path, lines)
    for since, count in (("1h", 3), ("15m", 2), ("30s", 1), ("1d", 4), ("1w", 4)):
        code, out, _ = tfgw(*run, "traces", "list", "--dir", str(tmp_path), "--since", since, "--json")
        assert (code, json_lines(out)) == (0, [row_of(line) for line in lines[::-1][:count]])
    assert tfgw(*run, "traces", "list", "--dir", str(tmp_path), "--since", "1s", "--model", "x") == (
        0,
        f"no requests in {tmp_path} that match\n",
        "",
    )


@pytest.mark.parametrize(
    ("value", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1w", 604800)]
)
def test_since_values(value: str, seconds: int) -> None:
    assert parse_since(value) == seconds


@pytest.mark.parametrize("value", ["1", "h", "1.5h", "-1h", "0m", "1y", "1 h ago", ""])
@pytest.mark.parametrize("command", ["list", "stats"])
def test_bad_since_exits_2_naming_the_option(run: Run, log: Path, command: str, value: str) -> None:
    assert tfgw(*run, "traces", command, "--dir", str(log), "--since", value) == (
        2,
        "",
        f"tfgw: --since: expected a duration such as 30s, 15m, 1h, 2d or 1w, got {value!r}\n",
    )


def test_a_missing_log_exits_2(run: Run, tmp_path: Path) -> None:
    """Except for `tail`, which waits for it (test_tail_waits_for_the_log_to_appear_as_tail_F_does)."""
    missing = tmp_path / "none"
    for command in ("list", "stats"):
        assert tfgw(*run, "traces", command, "--dir", str(missing)) == (
            2,
            "",
            f"tfgw: {missing}: no trace log here (pass --dir, or set [tracing] dir in the config)\n",
        )


def test_a_log_that_is_not_a_directory_exits_2(run: Run, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for command in ("list", "stats", "tail"):
        assert tfgw(*run, "traces", command, "--dir", str(tmp_path / "file")) == (
            2,
            "",
            f"tfgw: {tmp_path / 'file'}: cannot read the trace log: Not a directory\n",
        )


def test_the_log_is_found_from_the_config_else_the_default(run: Run, _isolated_home: Path) -> None:
    default = _isolated_home / ".local/share/tfgw/traces"
    write_log(default, LINES[:1])
    code, out, _ = tfgw(*run, "traces", "list", "--json")
    assert (code, json_lines(out)) == (0, ROWS[:1])
    Path("tfgw.toml").write_text('[tracing]\ndir = "elsewhere"\n')
    write_log(Path("elsewhere"), LINES[1:2])
    code, out, _ = tfgw(*run, "traces", "list", "--json")
    assert (code, json_lines(out)) == (0, ROWS[1:2])
    assert tfgw(*run, "traces", "list", "--config", "missing.toml")[::2] == (
        2,
        "tfgw: missing.toml: config file not found\n",
    )


@pytest.mark.parametrize("rows", ["lagging", "missing", "empty"])
def test_answers_do_not_depend_on_the_rows_files(run: Run, log: Path, tmp_path: Path, rows: str) -> None:
    """The rows files only make reading faster: without them, or behind, the output is the same."""
    other = tmp_path / "other"
    for i, segment in enumerate(write_log(other, [*LINES, EXTRA], per_segment=4)):
        rows_file = segment.with_suffix(".rows")
        if rows == "missing":
            rows_file.unlink()
        elif rows == "empty" or i == 1:
            rows_file.write_bytes(b"")
        else:
            rows_file.write_bytes(b"".join(rows_file.read_bytes().splitlines(keepends=True)[:1]))
    for command in (
        ("list", "--json"),
        ("stats", "--json", "--by", "provider", "--since", "1000w"),
        ("list",),
    ):
        code, out, err = tfgw(*run, "traces", *command, "--dir", str(log))
        expected = (code, out.replace(str(log), "D"), err)
        code, out, err = tfgw(*run, "traces", *command, "--dir", str(other))
        actual = (code, out.replace(str(other), "D"), err)
        if command[0] == "stats":
            expected, actual = (expected[0], _no_window(expected[1])), (actual[0], _no_window(actual[1]))
        assert actual == expected


def _no_window(out: str) -> object:
    report = orjson.loads(out)
    del report["from"], report["to"]
    return report


# -- show ----------------------------------------------------------------------------------------


def test_show_draws_the_waterfall(run: Run, log: Path) -> None:
    assert tfgw(*run, "traces", "show", trace_id(3)[:8], "--dir", str(log)) == (0, """\
trace 0003946e1ce9f2e316fbfb83faa6519c  2024-01-01 00:00:02.000  1500.0 ms  5 spans  ok
└── POST /v1/chat/completions   SERVER       +0.00 ms   1500.0 ms  ██████████████████████████████
    http 200  key ci  model gpt-4o  overhead 0.40 ms
    ├── auth                    INTERNAL     +0.05 ms     0.05 ms  █·····························
    │   key ci
    ├── model.resolve           INTERNAL     +0.12 ms     0.07 ms  █·····························
    │   model gpt-4o  route openai/gpt-4o
    ├── chat gpt-4o             CLIENT       +0.30 ms     50.0 ms  █·····························  error
    │   model gpt-4o  provider openai  attempt 1
    │   provider_timeout: no answer within 30.0 s
    └── chat claude-sonnet-4-5  CLIENT       +50.3 ms   1449.2 ms  ·█████████████████████████████
        model claude-sonnet-4-5  provider anthropic  attempt 2  tokens 12/48  cost $0.000510  finish stop
""", "")  # fmt: skip


def test_show_a_stream_with_a_caller_span(run: Run, tmp_path: Path) -> None:
    line = trace_line(Request(7, start=T0, stream=True, ttft_ms=120.0, parent_span_id="00f067aa0ba902b7"))
    write_segment(tmp_path, [line])
    assert tfgw(*run, "traces", "show", trace_id(7), "--dir", str(tmp_path)) == (0, f"""\
trace {trace_id(7)}  2024-01-01 00:00:00.000  800.0 ms  5 spans  ok  parent span 00f067aa0ba902b7 (the caller's)
└── POST /v1/chat/completions  SERVER       +0.00 ms    800.0 ms  ██████████████████████████████
    http 200  key ci  model gpt-4o  overhead 0.40 ms
    ├── auth                   INTERNAL     +0.05 ms     0.05 ms  █·····························
    │   key ci
    ├── model.resolve          INTERNAL     +0.12 ms     0.07 ms  █·····························
    │   model gpt-4o  route openai/gpt-4o
    └── chat gpt-4o            CLIENT       +0.30 ms    799.2 ms  ██████████████████████████████
        model gpt-4o  provider openai  attempt 1  tokens 12/48  cost $0.000510  finish stop  ttft 120.0 ms
        └── stream             INTERNAL     +0.30 ms    799.2 ms  ██████████████████████████████
            ttft 120.0 ms  chunks 20
""", "")  # fmt: skip  # noqa: E501


def test_show_json_prints_the_decoded_spans_in_tree_order(run: Run, log: Path) -> None:
    code, out, err = tfgw(*run, "traces", "show", trace_id(2), "--dir", str(log), "--json")
    spans = json_lines(out)
    assert (code, err) == (0, "")
    assert [(s["name"], s["kind"], s["parent_span_id"] is None) for s in spans] == [  # type: ignore[index]
        ("POST /v1/chat/completions", "SERVER", True),
        ("auth", "INTERNAL", False),
        ("model.resolve", "INTERNAL", False),
        ("chat gpt-4o-mini", "CLIENT", False),
        ("stream", "INTERNAL", False),
    ]
    assert spans[4] == {
        "trace_id": trace_id(2),
        "span_id": spans[4]["span_id"],  # type: ignore[index]
        "parent_span_id": spans[3]["span_id"],  # type: ignore[index]
        "name": "stream",
        "kind": "INTERNAL",
        "start": T0 + 1000 * MS + 300_000,
        "end": T0 + 1000 * MS + 799_500_000,
        "duration_ms": 799.2,
        "status": "unset",
        "status_message": None,
        "attributes": {
            "tfgw.stream.chunks": 20,
            "tfgw.stream.time_to_first_token_ms": 95.0,
            "tfgw.stream.cancelled": False,
        },
        "events": [],
        "resource": {
            "service.name": "tfgw",
            "service.version": "0.1.0",
            "openinference.project.name": "default",
        },
    }


def test_show_an_unknown_or_bad_id(run: Run, log: Path) -> None:
    assert tfgw(*run, "traces", "show", "deadbeef", "--dir", str(log)) == (
        1,
        "",
        f"tfgw: no trace deadbeef in {log}\n",
    )
    assert tfgw(*run, "traces", "show", "0003", "--dir", str(log)) == (
        2,
        "",
        "tfgw: TRACE_ID: expected 8 to 32 hex digits, got '0003'\n",
    )


# -- stats ---------------------------------------------------------------------------------------


def test_stats_json(run: Run, log: Path) -> None:
    code, out, err = tfgw(
        *run, "traces", "stats", "--dir", str(log), "--since", "1000w", "--by", "model", "--json"
    )
    report = orjson.loads(out)
    assert (code, err, report.pop("to") - report.pop("from")) == (0, "", 1000 * 604800 * 10**9)
    none = {"p50": None, "p95": None}
    assert report == {
        "since": "1000w",
        "by": "model",
        "all": {"requests": 6, "errors": 1, "error_rate": 1 / 6,
                "latency_ms": {"p50": 800.0, "p95": 2000.0, "p99": 2000.0},
                "ttft_ms": {"p50": 95.0, "p95": 300.0}, "streams": 2,
                "tokens_in": 162, "tokens_out": 616, "cost": 0.0073965},
        "groups": [
            {"model": "gpt-4o", "requests": 3, "errors": 1, "error_rate": 1 / 3,
             "latency_ms": {"p50": 800.0, "p95": 1500.0, "p99": 1500.0}, "ttft_ms": none, "streams": 0,
             "tokens_in": 24, "tokens_out": 96, "cost": 0.00102},
            {"model": "claude-sonnet", "requests": 1, "errors": 0, "error_rate": 0.0,
             "latency_ms": {"p50": 2000.0, "p95": 2000.0, "p99": 2000.0},
             "ttft_ms": {"p50": 300.0, "p95": 300.0}, "streams": 1, "tokens_in": 100, "tokens_out": 400,
             "cost": 0.0063},
            {"model": "gpt-4o-mini", "requests": 1, "errors": 0, "error_rate": 0.0,
             "latency_ms": {"p50": 800.0, "p95": 800.0, "p99": 800.0},
             "ttft_ms": {"p50": 95.0, "p95": 95.0}, "streams": 1, "tokens_in": 30, "tokens_out": 120,
             "cost": 0.0000765},
            {"model": "text-embedding-3-small", "requests": 1, "errors": 0, "error_rate": 0.0,
             "latency_ms": {"p50": 800.0, "p95": 800.0, "p99": 800.0}, "ttft_ms": none, "streams": 0,
             "tokens_in": 8, "tokens_out": None, "cost": None},
        ],
    }  # fmt: skip


def test_stats_table_and_the_default_window(run: Run, log: Path, tmp_path: Path) -> None:
    code, out, err = tfgw(*run, "traces", "stats", "--dir", str(log), "--since", "1000w", "--by", "key")
    header, table = out.split("\n", 1)
    assert (code, err) == (0, "")
    assert header.startswith("6 requests since ") and header.endswith(f" (1000w) in {log}")
    assert table == """\
key    requests  errors  error %       p50        p95        p99  ttft p50  ttft p95  tokens in  tokens out       cost
ci            4       1     25.0  800.0 ms  1500.0 ms  1500.0 ms   95.0 ms   95.0 ms         54         216  $0.001097
batch         2       0      0.0  800.0 ms  2000.0 ms  2000.0 ms  300.0 ms  300.0 ms        108         400  $0.006300
all           6       1     16.7  800.0 ms  2000.0 ms  2000.0 ms   95.0 ms  300.0 ms        162         616  $0.007397
"""  # fmt: skip  # noqa: E501
    recent = tmp_path / "recent"
    write_log(recent, [trace_line(Request(1, start=time.time_ns() - 3600 * 10**9)), LINES[1]])
    code, out, _ = tfgw(*run, "traces", "stats", "--dir", str(recent), "--json")
    assert (code, orjson.loads(out)["since"], orjson.loads(out)["all"]["requests"]) == (0, "24h", 1)


# -- tail ----------------------------------------------------------------------------------------


def start_tail(*args: str, terminal: bool = False) -> tuple[subprocess.Popen[str], Lines, Lines]:
    """`tfgw traces tail ARGS` as a child; its stdout a pipe or, with `terminal`, a pseudo-terminal
    200 columns wide that is its stdin too (TERM=dumb: no colour codes)."""
    env = {**os.environ, "TZ": "UTC"}
    stdout: int = subprocess.PIPE
    if terminal:
        master, stdout = pty.openpty()
        fcntl.ioctl(stdout, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        env["TERM"] = "dumb"
    command = [sys.executable, "-m", "tfgw", "traces", "tail", *args]
    stdin = stdout if terminal else subprocess.DEVNULL
    child = spawn(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
    if terminal:
        os.close(stdout)
        return child, Lines(open(master, encoding="utf-8")), Lines(child.stderr)  # type: ignore[arg-type]
    return child, Lines(child.stdout), Lines(child.stderr)  # type: ignore[arg-type]


def stop(child: subprocess.Popen[str]) -> int:
    """SIGTERM, as a job control or a supervisor stops it (^C does the same; see tests/processes.py)."""
    return processes.stop(child, timeout=5)


def test_tail_json_sees_appended_lines_and_new_segments(tmp_path: Path) -> None:
    first = write_log(tmp_path, LINES[:2])[0]
    child, out, err = start_tail("--json", "--dir", str(tmp_path))
    try:
        assert err.next(10) == f"tfgw: following {tmp_path} (^C to stop)\n"
        with first.open("ab") as f:
            f.write(orjson.dumps(LINES[2]) + b"\n")
        assert orjson.loads(out.next()) == ROWS[2]  # not ROWS[0]: tail starts at the end
        write_segment(tmp_path, LINES[3:5], name=segment_name(T0, seq=2))
        assert [orjson.loads(out.next()), orjson.loads(out.next())] == ROWS[3:5]
    finally:
        code = stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])


def test_tail_text_from_start_with_spans_and_errors_only(tmp_path: Path) -> None:
    write_log(tmp_path, [*LINES, EXTRA])
    child, out, err = start_tail("--dir", str(tmp_path), "--from-start", "--spans", "--errors")
    try:
        assert err.next(10) == f"tfgw: following {tmp_path} (^C to stop)\n"
        lines = [out.next().rstrip() for _ in range(6)]
    finally:
        code = stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])
    assert "\n".join(lines) + "\n" == """\
00:00:03.000  0004b3d1  gpt-4o                openai      error 502    800.0 ms                            -           -  provider_error
  POST /v1/chat/completions  SERVER  800.0 ms  error  http 502  key ci  model gpt-4o  overhead 0.40 ms  provider_error: HTTP 502
    auth  INTERNAL  0.05 ms  key ci
    model.resolve  INTERNAL  0.07 ms  model gpt-4o  route openai/gpt-4o
    chat gpt-4o  CLIENT  50.0 ms  error  model gpt-4o  provider openai  attempt 1  provider_timeout: no answer within 30.0 s
    chat gpt-4o  CLIENT  50.0 ms  error  model gpt-4o  provider anthropic  attempt 2  provider_timeout: no answer within 30.0 s
"""  # fmt: skip  # noqa: E501


HEADER = (
    "time          trace     model                 provider    status        latency            ttft"
    "       tokens        cost  error"
)


@pytest.mark.parametrize("json", [False, True])
def test_tail_on_a_terminal_starts_with_a_header_naming_the_columns(tmp_path: Path, json: bool) -> None:
    """Once, above the first line, on a terminal only: not with --json, not into a pipe (the test
    above reads a pipe and gets the rows alone)."""
    write_log(tmp_path, LINES[:2])
    child, out, err = start_tail(
        "--dir", str(tmp_path), "--from-start", *(["--json"] if json else []), terminal=True
    )
    try:
        assert err.next(10) == f"tfgw: following {tmp_path} (^C to stop)\n"
        lines = [out.next().rstrip("\n") for _ in range(2 if json else 3)]
        write_segment(tmp_path, LINES[2:3], name=segment_name(T0, seq=2))
        lines.append(out.next().rstrip("\n"))
    finally:
        code = stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])
    if json:
        assert [orjson.loads(line) for line in lines] == ROWS[:3]
        return
    assert "\n".join(line.rstrip() for line in lines) + "\n" == f"""\
{HEADER}
00:00:00.000  000117fe  gpt-4o                openai      ok 200       800.0 ms                        12/48   $0.000510
00:00:01.000  0002da62  gpt-4o-mini           openai      ok 200       800.0 ms    ttft 95.0 ms       30/120   $0.000077
00:00:02.000  0003946e  gpt-4o                anthropic   ok 200      1500.0 ms                        12/48   $0.000510
"""  # fmt: skip  # noqa: E501


def test_tail_waits_for_the_log_to_appear_as_tail_F_does(tmp_path: Path) -> None:
    """Started before the gateway wrote anything: it says so once, follows the directory once it
    exists (reading its files from their start: all of it is new), and waits again if it goes."""
    log = tmp_path / "not" / "yet"
    child, out, err = start_tail("--json", "--dir", str(log))
    try:
        assert err.next(10) == f"tfgw: waiting for the trace log in {log} to appear (^C to stop)\n"
        err.none_within(0.6)  # four polls: still waiting, and said so once
        write_log(log, LINES[:2])
        assert err.next() == f"tfgw: following {log} (^C to stop)\n"
        assert [orjson.loads(out.next()), orjson.loads(out.next())] == ROWS[:2]
        write_segment(log, LINES[2:3], name=segment_name(T0, seq=2))
        assert orjson.loads(out.next()) == ROWS[2]
        shutil.rmtree(log)
        assert err.next() == f"tfgw: waiting for the trace log in {log} to appear (^C to stop)\n"
        write_log(log, LINES[3:4])
        assert err.next() == f"tfgw: following {log} (^C to stop)\n"
        assert orjson.loads(out.next()) == ROWS[3]
    finally:
        code = stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])
