"""bench/policy_ab.py: its verdicts, and runs of it as one command on loopback.

Nothing here asserts a speed: the runs are a fraction of a second; only shapes, counts (every
request distinct, each a cache miss on the `policy` gateway, one request a hit again and again,
every guardrail verdict a pass) and the arithmetic of the report are pinned.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.processes import running

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import load  # noqa: E402  (bench/ is not a package)
import policy_ab  # noqa: E402

MACHINE = {
    "nproc": 2,
    "python": "3.11.7",
    "checkout": "abc1234",
    "load_tool": "wrk",
    "loadavg_1m_at_start": 0.5,
    "calibration_ms_at_start": 80.0,
    "calibration_ms_at_end": 90.0,
}
REQUIREMENTS = [
    ("none configured against the tree before", "none", "before", "<= +1 %"),
    ("all of it configured, every request a cache miss stored", "policy", "none", "<= 80 µs"),
    ("all of it configured, every request a cache hit", "hit", "none", "<= 80 µs"),
]


def counted_report() -> policy_ab.PolicyReport:
    """JSON only: CPU µs 1,000 / 1,010 / 1,100 / 700 a request, 3.00 / 3.02 / 3.25 / 2.0 M instructions."""
    report = policy_ab.PolicyReport("2026-12-01T12:00:00+00:00", MACHINE, ["json"], {}, 200, 1000)
    cpu = {"before": 1000.0, "none": 1010.0, "policy": 1100.0, "hit": 700.0}
    counted = {"before": 3_000_000.0, "none": 3_020_000.0, "policy": 3_250_000.0, "hit": 2_000_000.0}
    report.sequential = [
        {"kind": "json", "path": path, "requests": 1000, "cpu_us_per_request": cpu[path]}
        for path in policy_ab.ORDER
    ]
    report.callgrind = [
        {"kind": "json", "path": path, "instructions": counted[path]} for path in policy_ab.PATHS
    ]
    report.trees = {"before": "ecc465c (git archive)", "none": "abc1234", "policy": "abc1234"}
    report.us_per_instruction = policy_ab.calibrations(report)
    report.verdicts = policy_ab.verdicts(report)
    return report


def test_instructions_are_converted_at_nones_us_per_instruction_and_set_against_each_bound() -> None:
    report = counted_report()
    scale = 1010.0 / 3_020_000.0
    assert report.us_per_instruction == {"json": scale}
    assert report.verdicts == [
        {
            "requirement": "none configured against the tree before",
            "kind": "json",
            "path": "none",
            "reference": "before",
            "excess_instructions": 20_000.0,
            "excess_pct": 20_000.0 / 3_000_000.0 * 100,
            "excess_us": 20_000.0 * scale,
            "us_from": "instructions",
            "sequential_cpu_excess_us": 10.0,
            "bound": "<= +1 %",
            "ok": True,
        },
        {
            "requirement": "all of it configured, every request a cache miss stored",
            "kind": "json",
            "path": "policy",
            "reference": "none",
            "excess_instructions": 230_000.0,
            "excess_pct": 230_000.0 / 3_020_000.0 * 100,
            "excess_us": 230_000.0 * scale,
            "us_from": "instructions",
            "sequential_cpu_excess_us": 90.0,
            "bound": "<= 80 µs",
            "ok": True,  # 76.9 µs
        },
        {
            "requirement": "all of it configured, every request a cache hit",
            "kind": "json",
            "path": "hit",
            "reference": "none",
            "excess_instructions": -1_020_000.0,
            "excess_pct": -1_020_000.0 / 3_020_000.0 * 100,
            "excess_us": -1_020_000.0 * scale,
            "us_from": "instructions",
            "sequential_cpu_excess_us": -310.0,
            "bound": "<= 80 µs",
            "ok": True,
        },
    ]


def test_without_instructions_the_excess_is_the_sequential_cpu_time_and_none_has_no_verdict() -> None:
    report = counted_report()
    report.callgrind, report.callgrind_requests = [], 0
    report.us_per_instruction = policy_ab.calibrations(report)
    assert report.us_per_instruction == {"json": None}
    assert [(v["excess_us"], v["us_from"], v["ok"]) for v in policy_ab.verdicts(report)] == [
        (10.0, "cpu", None),
        (90.0, "cpu", False),
        (-310.0, "cpu", True),
    ]


MARKDOWN = """\
2026-12-01T12:00:00+00:00; 2 CPUs, Python 3.11.7, tfgw at abc1234 against ecc465c (git archive), \
callgrind, 200 sequential requests a path, 1000 sequential requests a path and run without valgrind, \
load average 0.5 at start, calibration loop 80 ms at start, 90 ms at end

| kind | path | tree | config | instructions a request | CPU µs/req, sequential (each run) |
| --- | --- | --- | --- | ---: | ---: |
| json | before | before | plain | 3,000,000 | 1,000 (1,000 / 1,000) |
| json | none | this checkout | plain | 3,020,000 | 1,010 (1,010 / 1,010) |
| json | policy | this checkout | all, distinct requests | 3,250,000 | 1,100 (1,100 / 1,100) |
| json | hit | this checkout | all, one request | 2,000,000 | 700 (700 / 700) |

µs per instruction (`none`'s sequential CPU µs over its instructions): json 0.334 µs per 1,000.

| requirement | kind | path - reference | instructions | µs | bound | verdict |
| --- | --- | --- | ---: | ---: | --- | --- |
| none configured against the tree before | json | none - before | +20,000 (+0.7 %) | +6.7 | <= +1 % | pass |
| all of it configured, every request a cache miss stored | json | policy - none | +230,000 (+7.6 %) | \
+76.9 | <= 80 µs | pass |
| all of it configured, every request a cache hit | json | hit - none | -1,020,000 (-33.8 %) | -341.1 \
| <= 80 µs | pass |

The `policy` gateway's trace log: 4,000 traces, 2,001 cache misses, 1,999 hits, 8,000 guardrail \
verdicts pass, 0 not."""


def test_the_markdown_report() -> None:
    report = counted_report()
    report.policy_seen = {
        "traces": 4000,
        "cache_misses": 2001,
        "cache_hits": 1999,
        "guardrails_passed": 8000,
        "guardrails_not_passed": 0,
    }
    assert policy_ab.markdown(report) == MARKDOWN


def test_a_numbered_wrk_script_sends_each_request_its_own_number_and_the_headers() -> None:
    script = load.lua_script(b'{"q": "x-%s"}', {"authorization": "Bearer k"}, True)
    assert script == (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        'wrk.body = "{\\34q\\34: \\34x-%s\\34}"\nwrk.headers["authorization"] = "Bearer k"\n'
        'local head, tail, serial, threads = "{\\34q\\34: \\34x-", "\\34}", 0, 0\n'
        'function setup(thread)\n  threads = threads + 1\n  thread:set("id", threads)\nend\n'
        "request = function()\n  serial = serial + 1\n"
        '  return wrk.format(nil, nil, nil, head .. string.format("%d-%09d", id or 0, serial) .. tail)\nend\n'
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kinds", "json,paced"], "error: --kinds: json, stream or both, got 'json,paced'\n"),
        (["--callgrind", "-1"], "error: --callgrind: must be within 0..10000, got -1\n"),
        (["--sequential", "0"], "error: --sequential: must be within 1..100000, got 0\n"),
        (["--rounds", "0"], "error: --rounds: must be within 1..100, got 0\n"),
        (["--duration", "0"], "error: --duration: must be within (0, 600] s, got 0\n"),
        (["--before", "no-such-commit"], f"error: --before: 'no-such-commit' is not a commit of {REPO}\n"),
        (["--tree", "/nonexistent"], "error: --tree: /nonexistent holds no tfgw/__init__.py\n"),
        (["--here", "no-such-commit"], f"error: --here: 'no-such-commit' is not a commit of {REPO}\n"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_code_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        policy_ab.parse_args(flags)
    assert (exited.value.code, capsys.readouterr().err) == (2, message)


# -- the script as one command ---------------------------------------------------------------------


def run_script(*flags: str, timeout: float = 120) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "policy_ab.py"), "--json", *flags]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return dict(json.loads(out))


@pytest.mark.e2e
def test_one_run_sets_none_against_before_and_all_of_it_against_none() -> None:
    data = run_script("--callgrind", "0", "--sequential", "20", "--rounds", "1")

    assert data["kinds"] == ["json", "stream"]
    here = data["machine"]["checkout"]
    assert data["trees"] == {"before": "ecc465c (git archive)", "none": here, "policy": here}
    runs = [(r["kind"], r["path"], r["requests"]) for r in data["sequential"]]
    assert runs == [(kind, path, 20) for kind in ("json", "stream") for path in policy_ab.ORDER]
    assert all(r["cpu_us_per_request"] >= 0 for r in data["sequential"])
    assert (data["callgrind"], data["us_per_instruction"]) == ([], {"json": None, "stream": None})
    verdicts = [
        (v["requirement"], v["kind"], v["path"], v["reference"], v["bound"]) for v in data["verdicts"]
    ]
    assert verdicts == [
        (what, k, p, ref, bound) for k in ("json", "stream") for what, p, ref, bound in REQUIREMENTS
    ]
    assert {(v["excess_instructions"], v["us_from"]) for v in data["verdicts"]} == {(None, "cpu")}
    # a kind: policy and hit twice 20 + 20 warm-up requests each; hit's first one is a miss
    assert data["policy_seen"] == {
        "traces": 320,
        "cache_misses": 162,
        "cache_hits": 158,
        "guardrails_passed": 640,
        "guardrails_not_passed": 0,
    }
    assert (data["load_runs"], data["load_rows"]) == ([], [])


TOOLS = ["python"] + (["wrk"] if shutil.which("wrk") else [])


@pytest.mark.e2e
@pytest.mark.parametrize("tool", TOOLS)
def test_under_load_every_policy_request_is_distinct_and_the_hit_path_repeats_one(tool: str) -> None:
    flags = [
        "--callgrind",
        "0",
        "--sequential",
        "1",
        "--rounds",
        "1",
        "--kinds",
        "json",
        "--load",
        "--tool",
        tool,
    ]
    data = run_script(*flags, "--duration", "0.3", "--warmup", "0.1", "--concurrency", "2")

    assert [(r["scenario"], r["path"]) for r in data["load_runs"]] == [("json-2", p) for p in policy_ab.ORDER]
    assert [r["errors"] for r in data["load_runs"]] == [0] * len(policy_ab.ORDER)
    assert [(r["scenario"], r["path"]) for r in data["load_rows"]] == [("json-2", p) for p in policy_ab.PATHS]
    seen = data["policy_seen"]
    served = {
        path: sum(r["requests"] for r in data["load_runs"] if r["path"] == path) for path in ("policy", "hit")
    }
    assert served["policy"] > 0 and served["hit"] > 0
    assert seen["cache_misses"] + seen["cache_hits"] == seen["traces"]
    assert seen["cache_misses"] >= served["policy"]  # no policy request answered from the cache
    assert seen["cache_hits"] >= served["hit"] - 1
    assert (seen["guardrails_passed"], seen["guardrails_not_passed"]) == (2 * seen["traces"], 0)
