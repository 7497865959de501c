"""bench/split.py: the report it derives from the counts, its flags, and one run under callgrind.

Nothing here asserts a count's size, only what the report makes of the counts and that a run
counts each server and kind once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.processes import running

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import split  # noqa: E402  (bench/ is not a package)

COUNTED = {
    "floor": {"json": 2_000_000.0, "stream": 2_400_000.0, "paced": 4_500_000.0},
    "untraced": {"json": 2_300_000.0, "stream": 3_200_000.0, "paced": 5_720_000.0},
    "tfgw": {"json": 2_800_000.0, "stream": 3_700_000.0, "paced": 6_220_000.0},
}


def test_the_excess_over_the_floor_is_split_into_the_untraced_work_and_the_trace() -> None:
    result = split.report(COUNTED, ["json", "stream", "paced"])

    assert result == {
        "rows": [
            {
                "kind": "json",
                "floor": 2_000_000.0,
                "untraced": 2_300_000.0,
                "tfgw": 2_800_000.0,
                "tfgw_over_floor": 1.4,
                "untraced_minus_floor": 300_000.0,
                "tfgw_minus_untraced": 500_000.0,
                "trace_share_of_excess": 0.625,
            },
            {
                "kind": "stream",
                "floor": 2_400_000.0,
                "untraced": 3_200_000.0,
                "tfgw": 3_700_000.0,
                "tfgw_over_floor": 3_700_000.0 / 2_400_000.0,
                "untraced_minus_floor": 800_000.0,
                "tfgw_minus_untraced": 500_000.0,
                "trace_share_of_excess": 500_000.0 / 1_300_000.0,
            },
            {
                "kind": "paced",
                "floor": 4_500_000.0,
                "untraced": 5_720_000.0,
                "tfgw": 6_220_000.0,
                "tfgw_over_floor": 6_220_000.0 / 4_500_000.0,
                "untraced_minus_floor": 1_220_000.0,
                "tfgw_minus_untraced": 500_000.0,
                "trace_share_of_excess": 500_000.0 / 1_720_000.0,
            },
        ],
        # 21 more reads than the zero-delay stream's one
        "per_read": {"floor": 100_000.0, "untraced": 120_000.0, "tfgw": 120_000.0},
    }


def test_without_both_streams_there_is_no_cost_a_read() -> None:
    result = split.report({s: {"json": COUNTED[s]["json"]} for s in split.SERVERS}, ["json"])

    assert [row["kind"] for row in result["rows"]] == ["json"]
    assert result["per_read"] is None


def test_the_markdown_report() -> None:
    args = split.parse_args(["--requests", "100", "--paced-requests", "40"])

    assert split.markdown(split.report(COUNTED, args.kinds), args).splitlines() == [
        "Instructions a request under callgrind, 100 sequential requests a kind and server"
        " (40 paced, 30 ms apart):",
        "",
        "| kind | floor | tfgw untraced | tfgw | tfgw / floor | untraced - floor | tfgw - untraced"
        " | the trace's share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| json | 2,000,000 | 2,300,000 | 2,800,000 | 1.40 | +300,000 | +500,000 | 62% |",
        "| stream | 2,400,000 | 3,200,000 | 3,700,000 | 1.54 | +800,000 | +500,000 | 38% |",
        "| paced | 4,500,000 | 5,720,000 | 6,220,000 | 1.38 | +1,220,000 | +500,000 | 29% |",
        "",
        "One more read of a stream ((paced - stream) / 21): floor 100,000, untraced 120,000, tfgw 120,000"
        " instructions.",
    ]


COUNTS = "error: --requests, --paced-requests must be at least 1, --pace-ms within 1..1000"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kinds", "json,sse"], "error: --kinds takes json, stream and paced, got 'json,sse'"),
        (["--requests", "0"], COUNTS),
        (["--pace-ms", "0"], COUNTS),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_code_2(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "split.py"), *flags], capture_output=True, text=True, timeout=60
    )

    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="valgrind is not installed")
def test_one_run_counts_each_server_under_callgrind() -> None:
    command = [sys.executable, str(BENCH / "split.py"), "--json", "--kinds", "json", "--requests", "2"]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    data = json.loads(out)

    (row,) = data["rows"]
    assert row["kind"] == "json"
    assert all(row[server] > 1_000_000 for server in split.SERVERS)  # a request is millions
    assert row["untraced_minus_floor"] == row["untraced"] - row["floor"]
    assert row["tfgw_minus_untraced"] == row["tfgw"] - row["untraced"]
    assert data["per_read"] is None
