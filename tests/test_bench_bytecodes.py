"""bench/bytecodes.py: packages and the report, and one run of it as one command on loopback.

Nothing here asserts a count's size: only which packages each server runs, what the report
derives from the counts, and the command's shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.processes import running

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import bytecodes  # noqa: E402  (bench/ is not a package)


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("tfgw/tracing/encode.py:148:Encoder._spans", "tfgw/tracing"),
        ("tfgw/retry.py:10:backoff", "tfgw"),
        ("h11/_util.py:84:validate", "h11"),
        ("asyncio/events.py:78:Handle._run", "stdlib:asyncio"),
        ("typing.py:300:inner", "stdlib:typing"),
        ("bench/framework_floor.py:128:relay", "bench"),
        ("<string>:2:__create_fn__.<locals>.__init__", "other"),
    ],
)
def test_each_function_is_counted_in_its_package(name: str, package: str) -> None:
    assert bytecodes.package(name) == package


def test_the_report_is_per_request_and_sets_policy_against_none() -> None:
    counted = {
        "floor": {"json": {"h11/a.py:1:f": 40}, "stream": {"h11/a.py:1:f": 60}},
        "none": {
            "json": {"h11/a.py:1:f": 40, "tfgw/tracing/b.py:1:g": 20},
            "stream": {"h11/a.py:1:f": 60, "tfgw/tracing/b.py:1:g": 30},
        },
        "policy": {
            "json": {"h11/a.py:1:f": 40, "tfgw/tracing/b.py:1:g": 24, "tfgw/policy/c.py:1:h": 8},
            "stream": {"h11/a.py:1:f": 60, "tfgw/tracing/b.py:1:g": 30, "tfgw/policy/c.py:1:h": 10},
        },
    }
    result = bytecodes.report(counted, 2, 5)

    assert result["packages"]["json"] == {
        "floor": {"h11": 20.0},
        "none": {"h11": 20.0, "tfgw/tracing": 10.0},
        "policy": {"h11": 20.0, "tfgw/tracing": 12.0, "tfgw/policy": 4.0},
    }
    assert result["functions"]["stream"] == {
        "tfgw": [("tfgw/tracing/b.py:1:g", 15.0)],
        "policy_minus_none": [
            ("tfgw/policy/c.py:1:h", 5.0),
            ("h11/a.py:1:f", 0.0),
            ("tfgw/tracing/b.py:1:g", 0.0),
        ],
    }
    table = bytecodes.markdown(result).splitlines()
    assert "| json: package | floor | none | policy | none - floor |" in table
    assert "| h11 | 20 | 20 | 20 | +0 |" in table
    assert "| tfgw/tracing | 0 | 10 | 12 | +10 |" in table
    assert "| **total** | **20** | **30** | **36** | **+10** |" in table


@pytest.mark.e2e
def test_one_run_counts_the_floor_tfgw_and_tfgw_with_its_policy() -> None:
    command = [sys.executable, str(BENCH / "bytecodes.py"), "--json", "--requests", "3", "--top", "3"]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    data: dict[str, Any] = json.loads(out)

    assert data["requests"] == 3
    for kind in ("json", "stream"):
        floor, none, policy = (set(data["packages"][kind][s]) for s in ("floor", "none", "policy"))
        assert {"quart", "hypercorn", "h11", "aiohttp"} <= floor & none & policy
        assert not any(p.startswith("tfgw") for p in floor)
        assert {"tfgw/gateway", "tfgw/tracing"} <= none & policy
        assert ("tfgw/policy" in none, "tfgw/policy" in policy) == (False, True)
        assert [len(data["functions"][kind][t]) for t in ("tfgw", "policy_minus_none")] == [3, 3]
