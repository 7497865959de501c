"""bench/floor.py works as one command, and the fake upstream's paced streams are the same bytes.

A smoke test, not a benchmark: the runs are a fraction of a second and nothing here asserts a
speed, only the shape of the report and the counts (every row, no errors, every span delivered).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import REPO
from tests.processes import running

pytestmark = pytest.mark.e2e

BENCH = REPO / "bench"
PATHS = ["direct", "floor", "tfgw", "tfgw", "floor"]
TARGET_KEYS = {
    "rps_ratio_json_c50",
    "rps_ratio_stream_c50",
    "rps_ratio_paced_c50",
    "added_p50_ms_json_c1",
    "added_p99_ms_json_c1",
    "rps_c50_over_c10_json",
    "rps_c50_over_c10_stream",
    "rss_tfgw_minus_floor_mib",
    "workers_2_over_1",
    "spans_per_json_request",
    "spans_per_stream_request",
}
MEASURED = {"added_p50_ms_json_c1", "added_p99_ms_json_c1", "rss_tfgw_minus_floor_mib", "workers_2_over_1"}
MEASURED |= {"spans_per_json_request", "spans_per_stream_request"}


def test_floor_reports_every_row_and_every_span_reaches_the_receiver() -> None:
    command = [sys.executable, str(BENCH / "floor.py"), "--json", "--tool", "python"]
    command += ["--duration", "0.3", "--warmup", "0.1", "--scenarios", "json-1,paced-10"]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    report = json.loads(out)

    workers = ["tfgw", "tfgw-2w", "tfgw-2w", "tfgw"]
    expected_runs = [("json-1", p) for p in PATHS] + [("paced-10", p) for p in PATHS]
    expected_runs += [("workers-50", p) for p in workers]
    assert [(r["scenario"], r["path"]) for r in report["runs"]] == expected_runs
    assert [r["errors"] for r in report["runs"]] == [0] * len(expected_runs)
    assert all(r["requests"] > 0 and r["cpu_us_per_request"] is not None for r in report["runs"])
    assert [(r["scenario"], r["path"]) for r in report["rows"]] == list(dict.fromkeys(expected_runs))
    assert report["scenarios"] == ["json-1", "paced-10"]
    assert report["machine"]["load_tool"] == "python"

    targets = report["targets"]
    assert set(targets) == TARGET_KEYS
    assert {key for key, t in targets.items() if t["ok"] is not None} == MEASURED
    assert {key for key, t in targets.items() if t["value"] is not None} == MEASURED
    assert set(report["rss_mib"]) == {"direct", "direct_paced", "floor", "tfgw", "tfgw_2_workers"}
    # json-10/50 and stream-10/50 were not run: the floor's own c=50 / c=10 has nothing to say
    assert report["floor_own"] == {"rps_c50_over_c10_json": None, "rps_c50_over_c10_stream": None}

    for group, spans in (("json", 4), ("stream", 5)):
        export = report["export"][group]
        answered = export["requests_answered"]
        assert answered > 0
        assert (export["traces_written"], export["spans_delivered"]) == (answered, spans * answered)


def test_the_floors_own_fall_from_c10_to_c50_is_reported_beside_the_targets() -> None:
    sys.path.insert(0, str(BENCH))
    import floor

    report = floor.FloorReport("now", {}, 1.0, 0.0, [])
    for scenario, path, rps in (
        ("json-10", "floor", 2000.0),
        ("json-50", "floor", 1600.0),
        ("json-50", "tfgw", 1500.0),
        ("stream-10", "tfgw", 900.0),
        ("stream-50", "floor", 1000.0),
    ):
        report.rows.append({"scenario": scenario, "path": path, "rps": rps})

    # tfgw's rows and a scenario the floor did not run have no part in it
    assert floor.floor_own(report) == {"rps_c50_over_c10_json": 0.8, "rps_c50_over_c10_stream": None}


# -- the fake upstream's paced mode ---------------------------------------------------------------

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s"
)
STREAM_BODY = b'{"model": "bench", "stream": true, "stream_options": {"include_usage": true}}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upstream(*flags: str) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port), *flags]
    with running(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        yield port


@pytest.fixture
def zero_delay() -> Iterator[int]:
    yield from upstream()


@pytest.fixture
def paced() -> Iterator[int]:
    yield from upstream("--pace-ms", "1")


def streams(port: int, count: int) -> tuple[bytes, int]:
    """`count` streamed requests sent at once on one connection: the bytes until the last one
    ended, and how many reads that took."""
    request = REQUEST % (len(STREAM_BODY), STREAM_BODY)
    data, reads = b"", 0
    deadline = time.monotonic() + 10
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request * count)
        while data.count(b"0\r\n\r\n") < count and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data, reads = data + chunk, reads + 1
    return data, reads


def test_a_paced_stream_is_the_zero_delay_bytes_in_many_writes(zero_delay: int, paced: int) -> None:
    whole, _ = streams(zero_delay, 1)
    assert whole.count(b"data: ") == 22  # 20 chunks, usage, [DONE]
    paced_bytes, reads = streams(paced, 1)
    assert paced_bytes == whole
    assert reads > 1


def test_requests_behind_a_paced_stream_are_answered_in_order(zero_delay: int, paced: int) -> None:
    whole, _ = streams(zero_delay, 1)
    assert streams(paced, 3)[0] == whole * 3
