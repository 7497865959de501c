"""`tfgw traces diff A B` as a user and a CI job run it, on two logs written as the gateway writes
them with known differences: the whole table, the whole `--json` object, every `--fail-if` form
holding and not holding, the sources (directories, files, `.gz`, a Collector's file, windows of
the log) and bad input (exit 2, naming the argument). Times in UTC, plain text unless on a
terminal."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REPO
from tests.samples import MS, T0, Failure, Request, row_of, trace_line, write_log
from tfgw.cli import main
from tfgw.tracing import otlp
from tfgw.tracing import semconv as sc
from tfgw.tracing.diff import Condition, parse_condition

HOUR = 3_600_000 * MS

#: the baseline: three gpt-4o (one stream, one fallback), two gpt-4o-mini (one stopped at length)
A = [
    Request(1, start=T0, duration_ms=800.0),
    Request(2, start=T0 + 1000 * MS, duration_ms=1000.0, stream=True, ttft_ms=200.0),
    Request(3, start=T0 + 2000 * MS, model="gpt-4o-mini", stream=True, ttft_ms=100.0, duration_ms=600.0,
            tokens=(30, 120)),
    Request(4, start=T0 + 3000 * MS, provider="anthropic", route_model="claude-sonnet-4-5",
            failures=(Failure(),), duration_ms=1500.0),
    Request(5, start=T0 + 4000 * MS, model="gpt-4o-mini", duration_ms=400.0, tokens=(30, 120),
            finish_reason="length"),
]  # fmt: skip
#: an hour later: gpt-4o faster but with a 502 and more output, gpt-4o-mini stopping at length,
#: and two models A never saw (one an embedding: another route)
B = [
    Request(11, start=T0 + HOUR, duration_ms=900.0, tokens=(12, 60)),
    Request(12, start=T0 + HOUR + 1000 * MS, duration_ms=1300.0, stream=True, ttft_ms=260.0, tokens=(12, 60)),
    Request(13, start=T0 + HOUR + 2000 * MS, model="gpt-4o-mini", stream=True, ttft_ms=100.0,
            duration_ms=600.0, tokens=(30, 120), finish_reason="length"),
    Request(14, start=T0 + HOUR + 3000 * MS, status=502,
            failures=(Failure(), Failure("anthropic", "claude-sonnet-4-5", "provider_error"))),
    Request(15, start=T0 + HOUR + 4000 * MS, model="gpt-4o-mini", duration_ms=400.0, tokens=(30, 120),
            finish_reason="length"),
    Request(16, start=T0 + HOUR + 5000 * MS, model="claude-sonnet", provider="anthropic",
            route_model="claude-sonnet-4-5", key="batch", duration_ms=2000.0, tokens=(100, 400)),
    Request(17, start=T0 + HOUR + 6000 * MS, embeddings=True, model="text-embedding-3-small", tokens=(8, 0)),
]  # fmt: skip
LINES_A, LINES_B = [trace_line(r) for r in A], [trace_line(r) for r in B]


#: plain text (no terminal, no colour overrides) and UTC times, in-process and in children
pytestmark = pytest.mark.usefixtures("plain_utc")


@pytest.fixture
def logs(tmp_path: Path) -> tuple[str, str]:
    write_log(tmp_path / "a", LINES_A, per_segment=3)
    write_log(tmp_path / "b", LINES_B, per_segment=4)
    return str(tmp_path / "a"), str(tmp_path / "b")


Run = tuple[pytest.MonkeyPatch, pytest.CaptureFixture[str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    return monkeypatch, capsys


def tfgw(run: Run, *args: str) -> tuple[int, str, str]:
    """The CLI in this process, through `main()`: exit code, stdout (trailing blanks of each line
    stripped), stderr."""
    monkeypatch, capsys = run
    monkeypatch.setattr(sys, "argv", ["tfgw", *args])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), "\n".join(line.rstrip() for line in out.split("\n")), err


# -- the table -------------------------------------------------------------------------------------


def test_the_whole_table_per_model(run: Run, logs: tuple[str, str]) -> None:
    a, b = logs
    assert tfgw(run, "traces", "diff", a, b) == (0, f"""\
A: {a}: 5 requests, 2024-01-01 00:00:00.000 to 2024-01-01 00:00:04.000
B: {b}: 7 requests, 2024-01-01 01:00:00.000 to 2024-01-01 01:00:06.000
model                   metric                          A          B   change
gpt-4o                  requests                        3          3     0.0%
                        error_rate                   0.0%      33.3%     +inf
                        p50_latency             1000.0 ms   900.0 ms   -10.0%
                        p95_latency             1500.0 ms  1300.0 ms   -13.3%
                        p99_latency             1500.0 ms  1300.0 ms   -13.3%
                        p50_ttft                 200.0 ms   260.0 ms   +30.0%
                        p95_ttft                 200.0 ms   260.0 ms   +30.0%
                        tokens_in_per_request        12.0        8.0   -33.3%
                        tokens_out_per_request       48.0       40.0   -16.7%
                        cost_per_request        $0.000510  $0.000420   -17.6%
                        cost_total              $0.001530  $0.001260   -17.6%
                        finish_reason.stop         100.0%     100.0%     0.0%
                        fallback_rate               33.3%      33.3%     0.0%

gpt-4o-mini             requests                        2          2     0.0%
                        error_rate                   0.0%       0.0%     0.0%
                        p50_latency              400.0 ms   400.0 ms     0.0%
                        p95_latency              600.0 ms   600.0 ms     0.0%
                        p99_latency              600.0 ms   600.0 ms     0.0%
                        p50_ttft                 100.0 ms   100.0 ms     0.0%
                        p95_ttft                 100.0 ms   100.0 ms     0.0%
                        tokens_in_per_request        30.0       30.0     0.0%
                        tokens_out_per_request      120.0      120.0     0.0%
                        cost_per_request        $0.000077  $0.000077     0.0%
                        cost_total              $0.000153  $0.000153     0.0%
                        finish_reason.length        50.0%     100.0%  +100.0%
                        finish_reason.stop          50.0%       0.0%  -100.0%
                        fallback_rate                0.0%       0.0%     0.0%

claude-sonnet           requests                        0          1     +inf
                        error_rate                      -       0.0%        -
                        p50_latency                     -  2000.0 ms        -
                        p95_latency                     -  2000.0 ms        -
                        p99_latency                     -  2000.0 ms        -
                        tokens_in_per_request           -      100.0        -
                        tokens_out_per_request          -      400.0        -
                        cost_per_request                -  $0.006300        -
                        cost_total                      -  $0.006300        -
                        finish_reason.stop              -     100.0%        -
                        fallback_rate                   -       0.0%        -

text-embedding-3-small  requests                        0          1     +inf
                        error_rate                      -       0.0%        -
                        p50_latency                     -   800.0 ms        -
                        p95_latency                     -   800.0 ms        -
                        p99_latency                     -   800.0 ms        -
                        tokens_in_per_request           -        8.0        -
                        fallback_rate                   -       0.0%        -

all                     requests                        5          7   +40.0%
                        error_rate                   0.0%      14.3%     +inf
                        p50_latency              800.0 ms   800.0 ms     0.0%
                        p95_latency             1500.0 ms  2000.0 ms   +33.3%
                        p99_latency             1500.0 ms  2000.0 ms   +33.3%
                        p50_ttft                 100.0 ms   100.0 ms     0.0%
                        p95_ttft                 200.0 ms   260.0 ms   +30.0%
                        tokens_in_per_request        19.2       27.4   +42.9%
                        tokens_out_per_request       76.8      108.6   +41.4%
                        cost_per_request        $0.000337  $0.001102  +227.3%
                        cost_total              $0.001683  $0.007713  +358.3%
                        finish_reason.stop          80.0%      60.0%   -25.0%
                        finish_reason.length        20.0%      40.0%  +100.0%
                        fallback_rate               20.0%      14.3%   -28.6%
""", "")  # fmt: skip


def test_on_a_terminal_worse_is_red_and_better_green(run: Run, logs: tuple[str, str]) -> None:
    """Only errors, latency, TTFT, cost and fallbacks are judged, and only from 1 %."""
    for name, value in (("FORCE_COLOR", "1"), ("COLUMNS", "100"), ("TERM", "xterm-256color")):
        run[0].setenv(name, value)
    code, out, _ = tfgw(run, "traces", "diff", *logs, "--by", "provider")
    red, green, end = "\x1b[31m", "\x1b[32m", "\x1b[0m"
    assert (code, out.splitlines()[3:17]) == (0, [
        "openai     requests                        4          6    +50.0%",
        f"           error_rate                   0.0%      16.7%  {red}    +inf{end}",
        f"           p50_latency              600.0 ms   800.0 ms  {red}  +33.3%{end}",
        f"           p95_latency             1000.0 ms  1300.0 ms  {red}  +30.0%{end}",
        f"           p99_latency             1000.0 ms  1300.0 ms  {red}  +30.0%{end}",
        "           p50_ttft                 100.0 ms   100.0 ms      0.0%",
        f"           p95_ttft                 200.0 ms   260.0 ms  {red}  +30.0%{end}",
        "           tokens_in_per_request        21.0       15.3    -27.0%",
        "           tokens_out_per_request       84.0       60.0    -28.6%",
        f"           cost_per_request        $0.000293  $0.000236  {green}  -19.7%{end}",
        f"           cost_total              $0.001173  $0.001413  {red}  +20.5%{end}",
        "           finish_reason.stop          75.0%      50.0%    -33.3%",
        "           finish_reason.length        25.0%      50.0%   +100.0%",
        f"           fallback_rate                0.0%      16.7%  {red}    +inf{end}",
    ])  # fmt: skip


def test_requests_without_a_key_are_a_group_of_their_own(run: Run, tmp_path: Path) -> None:
    write_log(tmp_path / "a", [trace_line(Request(1)), trace_line(Request(2, key=None))])
    write_log(tmp_path / "b", [trace_line(Request(3, key=None, status=502))])
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert tfgw(run, "traces", "diff", a, b, "--by", "key", "--fail-if", "error_rate > 0.5") == (1, f"""\
A: {a}: 2 requests, 2024-01-01 00:00:00.000 to 2024-01-01 00:00:00.000
B: {b}: 1 requests, 2024-01-01 00:00:00.000 to 2024-01-01 00:00:00.000
key  metric                          A         B   change
-    requests                        1         1     0.0%
     error_rate                   0.0%    100.0%     +inf
     p50_latency              800.0 ms  800.0 ms     0.0%
     p95_latency              800.0 ms  800.0 ms     0.0%
     p99_latency              800.0 ms  800.0 ms     0.0%
     tokens_in_per_request        12.0         -        -
     tokens_out_per_request       48.0         -        -
     cost_per_request        $0.000510         -        -
     cost_total              $0.000510         -        -
     finish_reason.stop         100.0%         -        -
     fallback_rate                0.0%      0.0%     0.0%

ci   requests                        1         0  -100.0%
     error_rate                   0.0%         -        -
     p50_latency              800.0 ms         -        -
     p95_latency              800.0 ms         -        -
     p99_latency              800.0 ms         -        -
     tokens_in_per_request        12.0         -        -
     tokens_out_per_request       48.0         -        -
     cost_per_request        $0.000510         -        -
     cost_total              $0.000510         -        -
     finish_reason.stop         100.0%         -        -
     fallback_rate                0.0%         -        -

all  requests                        2         1   -50.0%
     error_rate                   0.0%    100.0%     +inf
     p50_latency              800.0 ms  800.0 ms     0.0%
     p95_latency              800.0 ms  800.0 ms     0.0%
     p99_latency              800.0 ms  800.0 ms     0.0%
     tokens_in_per_request        12.0         -        -
     tokens_out_per_request       48.0         -        -
     cost_per_request        $0.000510         -        -
     cost_total              $0.001020         -        -
     finish_reason.stop         100.0%         -        -
     fallback_rate                0.0%      0.0%     0.0%
""", """\
tfgw: --fail-if 'error_rate > 0.5' holds for all requests: 0.0% -> 100.0% (+inf)
tfgw: --fail-if 'error_rate > 0.5' holds for key -: 0.0% -> 100.0% (+inf)
""")  # fmt: skip


# -- --json ----------------------------------------------------------------------------------------


def m(a: Any, b: Any, delta: Any = None, change: Any = None) -> dict[str, Any]:
    """One metric of the report: A's value, B's, B - A and (B - A) / A."""
    return {"a": a, "b": b, "delta": delta, "change": change}


def test_json_is_one_object_pinned_whole(run: Run, logs: tuple[str, str]) -> None:
    a, b = logs
    code, out, err = tfgw(
        run, "traces", "diff", a, b, "--by", "route", "--json", "--fail-if", "requests > +10%"
    )
    chat = {
        "requests": m(5, 6, 1, 0.2),
        "error_rate": m(0.0, 0.166666666667, 0.166666666667),
        "p50_latency": m(800.0, 800.0, 0.0, 0.0),
        "p95_latency": m(1500.0, 2000.0, 500.0, 0.333333333),
        "p99_latency": m(1500.0, 2000.0, 500.0, 0.333333333),
        "p50_ttft": m(100.0, 100.0, 0.0, 0.0),
        "p95_ttft": m(200.0, 260.0, 60.0, 0.3),
        "tokens_in_per_request": m(19.2, 30.666666666667, 11.466666666667, 0.597222222),
        "tokens_out_per_request": m(76.8, 126.666666666667, 49.866666666667, 0.649305556),
        "cost_per_request": m(0.0003366, 0.0012855, 0.0009489, 2.819073084),
        "cost_total": m(0.001683, 0.007713, 0.00603, 3.582887701),
        "finish_reason.stop": m(0.8, 0.6, -0.2, -0.25),
        "finish_reason.length": m(0.2, 0.4, 0.2, 1.0),
        "fallback_rate": m(0.2, 0.166666666667, -0.033333333333, -0.166666667),
    }
    assert (code, orjson.loads(out), err) == (1, {
        "by": "route",
        "a": {"source": a, "requests": 5, "from": T0, "to": T0 + 4000 * MS},
        "b": {"source": b, "requests": 7, "from": T0 + HOUR, "to": T0 + HOUR + 6000 * MS},
        "all": {"metrics": {
            "requests": m(5, 7, 2, 0.4),
            "error_rate": m(0.0, 0.142857142857, 0.142857142857),
            "p50_latency": m(800.0, 800.0, 0.0, 0.0),
            "p95_latency": m(1500.0, 2000.0, 500.0, 0.333333333),
            "p99_latency": m(1500.0, 2000.0, 500.0, 0.333333333),
            "p50_ttft": m(100.0, 100.0, 0.0, 0.0),
            "p95_ttft": m(200.0, 260.0, 60.0, 0.3),
            "tokens_in_per_request": m(19.2, 27.428571428571, 8.228571428571, 0.428571429),
            "tokens_out_per_request": m(76.8, 108.571428571429, 31.771428571429, 0.413690476),
            "cost_per_request": m(0.0003366, 0.001101857143, 0.000765257143, 2.273491215),
            "cost_total": m(0.001683, 0.007713, 0.00603, 3.582887701),
            "finish_reason.stop": m(0.8, 0.6, -0.2, -0.25),
            "finish_reason.length": m(0.2, 0.4, 0.2, 1.0),
            "fallback_rate": m(0.2, 0.142857142857, -0.057142857143, -0.285714286),
        }},
        "groups": [
            {"route": "POST /v1/chat/completions", "metrics": chat},
            {"route": "POST /v1/embeddings", "metrics": {
                "requests": m(0, 1, 1),
                "error_rate": m(None, 0.0),
                "p50_latency": m(None, 800.0),
                "p95_latency": m(None, 800.0),
                "p99_latency": m(None, 800.0),
                "p50_ttft": m(None, None),
                "p95_ttft": m(None, None),
                "tokens_in_per_request": m(None, 8.0),
                "tokens_out_per_request": m(None, None),
                "cost_per_request": m(None, None),
                "cost_total": m(None, None),
                "fallback_rate": m(None, 0.0),
            }},
        ],
        "fail_if": ["requests > +10%"],
        "failed": [
            {"condition": "requests > +10%", "group": None, "metric": "requests", **m(5, 7, 2, 0.4)},
            {"condition": "requests > +10%", "group": {"route": "POST /v1/chat/completions"},
             "metric": "requests", **m(5, 6, 1, 0.2)},
            {"condition": "requests > +10%", "group": {"route": "POST /v1/embeddings"},
             "metric": "requests", **m(0, 1, 1)},
        ],
    }, """\
tfgw: --fail-if 'requests > +10%' holds for all requests: 5 -> 7 (+40.0%)
tfgw: --fail-if 'requests > +10%' holds for route POST /v1/chat/completions: 5 -> 6 (+20.0%)
tfgw: --fail-if 'requests > +10%' holds for route POST /v1/embeddings: 0 -> 1 (+inf)
""")  # fmt: skip


# -- --fail-if -------------------------------------------------------------------------------------

ALL, GPT4O, MINI, CLAUDE = "all requests", "model gpt-4o", "model gpt-4o-mini", "model claude-sonnet"


@pytest.mark.parametrize(
    ("condition", "held"),
    [
        # a relative change, B against A
        ("cost_per_request > +10%", {ALL: "$0.000337 -> $0.001102 (+227.3%)"}),
        ("cost_per_request > +250%", {}),
        ("cost_per_request < -15%", {GPT4O: "$0.000510 -> $0.000420 (-17.6%)"}),
        ("p95_latency > +20%", {ALL: "1500.0 ms -> 2000.0 ms (+33.3%)"}),
        ("p95_ttft >= +30%", {ALL: "200.0 ms -> 260.0 ms (+30.0%)", GPT4O: "200.0 ms -> 260.0 ms (+30.0%)"}),
        ("p95_ttft > +30%", {}),
        ("p95_latency > +34%", {}),
        ("finish_reason.length > +5%", {ALL: "20.0% -> 40.0% (+100.0%)", MINI: "50.0% -> 100.0% (+100.0%)"}),
        ("finish_reason.length > +100%", {}),
        ("finish_reason.stop < -50%", {MINI: "50.0% -> 0.0% (-100.0%)"}),
        ("fallback_rate < -20%", {ALL: "20.0% -> 14.3% (-28.6%)"}),
        ("requests < -1%", {}),
        ("error_rate > +0%", {ALL: "0.0% -> 14.3% (+inf)", GPT4O: "0.0% -> 33.3% (+inf)"}),
        # a change in the metric's own unit
        ("p95_latency > +250ms", {ALL: "1500.0 ms -> 2000.0 ms (+33.3%)"}),
        ("p95_latency > +500ms", {}),
        ("p95_latency >= +0.5s", {ALL: "1500.0 ms -> 2000.0 ms (+33.3%)"}),
        ("p50_ttft > +50", {GPT4O: "200.0 ms -> 260.0 ms (+30.0%)"}),
        ("tokens_out_per_request > +30", {ALL: "76.8 -> 108.6 (+41.4%)"}),
        ("cost_total > +$0.006", {ALL: "$0.001683 -> $0.007713 (+358.3%)"}),
        ("requests > +1", {ALL: "5 -> 7 (+40.0%)"}),
        ("requests > +2", {}),
        # B's value
        ("error_rate > 0.01", {ALL: "0.0% -> 14.3% (+inf)", GPT4O: "0.0% -> 33.3% (+inf)"}),
        ("error_rate > 20%", {GPT4O: "0.0% -> 33.3% (+inf)"}),
        ("error_rate > 0.5", {}),
        ("p95_latency > 1.9s", {ALL: "1500.0 ms -> 2000.0 ms (+33.3%)", CLAUDE: "- -> 2000.0 ms (-)"}),
        ("p50_ttft <= 100ms", {ALL: "100.0 ms -> 100.0 ms (0.0%)", MINI: "100.0 ms -> 100.0 ms (0.0%)"}),
        ("cost_total > $0.005", {ALL: "$0.001683 -> $0.007713 (+358.3%)", CLAUDE: "- -> $0.006300 (-)"}),
        ("requests < 2", {CLAUDE: "0 -> 1 (+inf)", "model text-embedding-3-small": "0 -> 1 (+inf)"}),
        ("finish_reason.content_filter > 0", {}),  # no request ended so: holds nowhere
    ],
)
def test_each_fail_if_form_holds_where_it_should(
    run: Run, logs: tuple[str, str], condition: str, held: dict[str, str]
) -> None:
    code, _, err = tfgw(run, "traces", "diff", *logs, "--fail-if", condition)
    if not held:
        assert (code, err) == (0, "tfgw: --fail-if: none of 1 held\n")
        return
    lines = "".join(
        f"tfgw: --fail-if {condition!r} holds for {where}: {what}\n" for where, what in held.items()
    )
    assert (code, err) == (1, lines)


def test_every_condition_that_holds_is_named(run: Run, logs: tuple[str, str]) -> None:
    code, out, err = tfgw(
        run, "traces", "diff", *logs, "--fail-if", "p95_latency > +20%", "--fail-if", "requests < -1%",
        "--fail-if", "error_rate > 0.01", "--json",
    )  # fmt: skip
    assert (code, [(f["condition"], f["group"]) for f in orjson.loads(out)["failed"]], err) == (1, [
        ("p95_latency > +20%", None),
        ("error_rate > 0.01", None),
        ("error_rate > 0.01", {"model": "gpt-4o"}),
    ], """\
tfgw: --fail-if 'p95_latency > +20%' holds for all requests: 1500.0 ms -> 2000.0 ms (+33.3%)
tfgw: --fail-if 'error_rate > 0.01' holds for all requests: 0.0% -> 14.3% (+inf)
tfgw: --fail-if 'error_rate > 0.01' holds for model gpt-4o: 0.0% -> 33.3% (+inf)
""")  # fmt: skip


def test_a_run_against_itself_passes_every_gate(run: Run, logs: tuple[str, str]) -> None:
    gates = ["cost_per_request > +0%", "p99_latency > +0ms", "error_rate > +0%", "finish_reason.length > +0%"]
    code, _, err = tfgw(run, "traces", "diff", logs[0], logs[0], *[f"--fail-if={g}" for g in gates])
    assert (code, err) == (0, "tfgw: --fail-if: none of 4 held\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cost_per_request > +10%", Condition("cost_per_request > +10%", "cost_per_request", ">", "change", 0.1)),  # noqa: E501
        (" requests<-5% ", Condition("requests<-5%", "requests", "<", "change", -0.05)),
        ("error_rate > 0.01", Condition("error_rate > 0.01", "error_rate", ">", "value", 0.01)),
        ("error_rate >= 1%", Condition("error_rate >= 1%", "error_rate", ">=", "value", 0.01)),
        ("p95_latency > 2s", Condition("p95_latency > 2s", "p95_latency", ">", "value", 2000.0)),
        ("p95_latency > +250ms", Condition("p95_latency > +250ms", "p95_latency", ">", "delta", 250.0)),
        ("p50_ttft <= 300", Condition("p50_ttft <= 300", "p50_ttft", "<=", "value", 300.0)),
        ("cost_total > $1.5", Condition("cost_total > $1.5", "cost_total", ">", "value", 1.5)),
        ("finish_reason.length > +5%",
         Condition("finish_reason.length > +5%", "finish_reason.length", ">", "change", 0.05)),
        ("finish_reason.tool_calls < 50%",
         Condition("finish_reason.tool_calls < 50%", "finish_reason.tool_calls", "<", "value", 0.5)),
        ("fallback_rate > .05", Condition("fallback_rate > .05", "fallback_rate", ">", "value", 0.05)),
    ],
)  # fmt: skip
def test_conditions_parse(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


METRIC_LIST = (
    "requests, error_rate, p50_latency, p95_latency, p99_latency, p50_ttft, p95_ttft, "
    "tokens_in_per_request, tokens_out_per_request, cost_per_request, cost_total, "
    "finish_reason.<reason>, fallback_rate"
)
SHAPE = "expected <metric> <op> <value>, such as 'cost_per_request > +10%' or 'error_rate > 0.01'"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("p95 > +10%", f"unknown metric 'p95'; one of {METRIC_LIST}"),
        ("finish_reason. > 1%", SHAPE),
        ("cost_per_request > 10 %%", SHAPE),
        ("cost_per_request = +10%", SHAPE),
        ("cost_per_request > ten", SHAPE),
        ("", SHAPE),
        ("p95_latency > 10%", "p95_latency is not a share: write a change with its sign, such as +10%"),
        ("error_rate > 5ms", "'ms' is for latency and ttft metrics, not error_rate"),
        ("p95_latency > $1", "'$' is for cost_per_request and cost_total, not p95_latency"),
    ],
)
def test_a_bad_condition_exits_2_naming_it(run: Run, logs: tuple[str, str], text: str, reason: str) -> None:
    assert tfgw(run, "traces", "diff", *logs, "--fail-if", "error_rate > 0.01", "--fail-if", text) == (
        2,
        "",
        f"tfgw: --fail-if {text!r}: {reason}\n",
    )


# -- the sources -----------------------------------------------------------------------------------


def report_of(run: Run, *args: str) -> dict[str, Any]:
    """The `--json` report, without the sides' names (what differs between sources of the same
    requests)."""
    code, out, err = tfgw(run, "traces", "diff", *args, "--json")
    assert (code, err) == (0, "")
    report = orjson.loads(out)
    for side in ("a", "b"):
        del report[side]["source"]
    return dict(report)


def test_files_gz_and_a_collectors_file_read_as_the_directory_does(
    run: Run, logs: tuple[str, str], tmp_path: Path
) -> None:
    """A segment named as any file (no rows file), the same gzipped, and a Collector's file where
    a line holds spans of several traces and a trace spans lines."""
    expected = report_of(run, *logs)
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in LINES_A))
    packed = tmp_path / "b.jsonl.gz"
    pairs = [pair for line in LINES_B for pair in otlp.spans_of(line)]
    halves = [pairs[: len(pairs) // 2 + 3], pairs[len(pairs) // 2 + 3 :]]
    collector = [
        {
            "resourceSpans": [
                {"resource": r, "scopeSpans": [{"scope": {"name": "tfgw"}, "spans": [s]}]} for r, s in half
            ]
        }
        for half in halves
    ]
    packed.write_bytes(gzip.compress(b"".join(orjson.dumps(line) + b"\n" for line in collector)))
    assert report_of(run, str(plain), str(packed)) == expected
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "b.jsonl.gz").write_bytes(packed.read_bytes())
    assert report_of(run, str(plain), str(mixed)) == expected


def test_damaged_lines_of_a_gz_file_are_skipped_with_a_warning(
    run: Run, logs: tuple[str, str], tmp_path: Path
) -> None:
    packed = tmp_path / "a.jsonl.gz"
    good = b"".join(orjson.dumps(line) + b"\n" for line in LINES_A)
    packed.write_bytes(gzip.compress(good[:-1] + b"\n{not json\n[1]\n" + orjson.dumps(LINES_A[0])[:40]))
    code, out, err = tfgw(run, "traces", "diff", str(packed), logs[1], "--json")
    assert (code, orjson.loads(out)["a"]["requests"], err) == (
        0,
        5,
        f"""\
tfgw: warning: {packed}:6: invalid JSON, line skipped
tfgw: warning: {packed}:7: not an OTLP/JSON trace request, line skipped
tfgw: warning: {packed}:8: torn last line skipped (no newline at the end)
""",
    )
    del good


def test_windows_of_the_log(run: Run, tmp_path: Path) -> None:
    """`log:SINCE..UNTIL` by times (UTC here, or named zones) and by durations ago."""
    both = tmp_path / "log"
    write_log(both, [*LINES_A, *LINES_B], per_segment=5)
    write_log(tmp_path / "a", LINES_A)
    write_log(tmp_path / "b", LINES_B)
    expected = report_of(run, str(tmp_path / "a"), str(tmp_path / "b"))
    windows = ("log:2024-01-01T00:00..2024-01-01T00:30", "log:2024-01-01T00:30+00:00..")
    assert report_of(run, *windows, "--dir", str(both)) == expected
    code, out, _ = tfgw(run, "traces", "diff", *windows, "--dir", str(both), "--json")
    assert [orjson.loads(out)[side]["source"] for side in ("a", "b")] == list(windows)
    now = time.time_ns()
    recent = tmp_path / "recent"
    write_log(
        recent,
        [trace_line(Request(n, start=now - age * 60 * 10**9)) for n, age in ((1, 90), (2, 70), (3, 20))],
    )
    code, out, _ = tfgw(run, "traces", "diff", "log:2h..1h", "log:1h", "--dir", str(recent), "--json")
    sides = orjson.loads(out)
    assert (code, sides["a"]["requests"], sides["b"]["requests"]) == (0, 2, 1)


def test_the_log_of_the_config_is_the_default_for_windows(run: Run, _isolated_home: Path) -> None:
    Path("tfgw.toml").write_text('[tracing]\ndir = "traces"\n')
    write_log(Path("traces"), [*LINES_A, *LINES_B])
    code, out, _ = tfgw(run, "traces", "diff", "log:..2024-01-01T00:30", "log:2024-01-01T00:30..", "--json")
    sides = orjson.loads(out)
    assert (code, sides["a"]["requests"], sides["b"]["requests"]) == (0, 5, 7)


def test_bad_input_exits_2_naming_the_argument(run: Run, logs: tuple[str, str], tmp_path: Path) -> None:
    a, b = logs
    (tmp_path / "empty").mkdir()
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "x.jsonl").write_text("")
    missing = tmp_path / "none.jsonl"
    cases = {
        (str(missing), b): f"A: cannot read {missing}: No such file or directory",
        (a, str(tmp_path / "empty")): f"B: {tmp_path / 'empty'}: no trace files here (*.jsonl, *.json, or either .gz)",  # noqa: E501
        (a, str(tmp_path / "nothing")): f"B: {tmp_path / 'nothing'}: no requests to compare",
        ("-", b): "A: -: standard input cannot be one side of a diff: name a file",
        (a, "log:2x"): "B: log:2x: expected log:SINCE[..UNTIL], each a duration ago (30s, 15m, 1h, 2d, 1w) "
        "or a time (2026-12-01T09:30), got '2x'",
        ("log:1h..2h", b): "A: log:1h..2h: the window ends before it starts",
        (a, "log:1h"): f"B: {tmp_path / 'none'}: no trace log here (pass --dir, or set [tracing] dir in the config)",  # noqa: E501
    }  # fmt: skip
    for (first, second), message in cases.items():
        assert tfgw(run, "traces", "diff", first, second, "--dir", str(tmp_path / "none")) == (
            2,
            "",
            f"tfgw: {message}\n",
        ), message
    assert tfgw(run, "traces", "diff", a, b, "--by", "colour")[0] == 2


# -- rows ------------------------------------------------------------------------------------------


def test_a_row_has_the_finish_reason_of_the_attempt_that_answered() -> None:
    def finish(line: dict[str, Any]) -> tuple[Any, Any]:
        row = row_of(line)
        return row["finish_reason"], row["attempts"]

    assert [finish(line) for line in LINES_B] == [
        ("stop", 1), ("stop", 1), ("length", 1), (None, 2), ("length", 1), ("stop", 1), (None, 1),
    ]  # fmt: skip
    semconv_only = trace_line(Request(1, finish_reason="tool_calls"))
    for span in semconv_only["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["attributes"] = [kv for kv in span["attributes"] if kv["key"] != sc.LLM_FINISH]
    assert finish(semconv_only) == ("tool_calls", 1)


# -- the CI recipe ---------------------------------------------------------------------------------


def test_the_ci_recipe_config_loads_and_its_script_parses() -> None:
    from tfgw.config import load

    settings = load(REPO / "configs" / "ci" / "traffic.toml", resolve_secrets=False)
    assert (settings.tracing.dir, settings.tracing.exclude_request_data) == (".tfgw-ci/traces", False)
    script = REPO / "configs" / "ci" / "traffic-gate.sh"
    assert os.access(script, os.X_OK)
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
