"""What `tfgw replay` delivers: spans/s to a local receiver and peak memory, on a large file.

    python bench/replay_throughput.py                  # a ~200 MB file of tfgw trace log lines
    python bench/replay_throughput.py --size-mb 50 --json

The file holds the gateway's own lines (`tests/samples.trace_line`: a SERVER root, `auth`,
`model.resolve`, one LLM span with its conversation, and a `stream` span for every other request;
4.5 spans and about 4.6 KB a line). Each run is the real command, `tfgw replay FILE --endpoint
URL --json`, in its own process, timed from start to exit (both passes: validation, then
encoding and sending), its peak RSS read from `wait4`. The receivers are export_throughput.py's,
each in its own process: OTLP/HTTP (aiohttp) and OTLP/gRPC (grpcio) that parse each request and
count its spans; every run checks they counted every span. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from export_throughput import receiver as otlp_receiver  # noqa: E402  (a span-counting receiver process)

from tests import samples  # noqa: E402

HOST = "127.0.0.1"

RUNS = {
    "http/protobuf": [],
    "grpc": ["--protocol", "grpc"],
    "http/json": ["--protocol", "http/json"],
    "http/protobuf, --rebase-time --new-ids --exclude-request-data --project bench": [
        "--rebase-time",
        "--new-ids",
        "--exclude-request-data",
        "--project",
        "bench",
    ],
    "--dry-run (validation pass alone)": ["--dry-run"],
}


def write_file(path: Path, size_mb: float) -> int:
    """tfgw trace log lines up to `size_mb` MB; the number of spans written."""
    spans = 0
    limit = int(size_mb * 1e6)
    with path.open("wb") as out:
        i = 0
        while out.tell() < limit:
            i += 1
            req = samples.Request(i % 60_000 + 1, start=samples.T0 + i * 10**9, stream=i % 2 == 0)
            line = samples.trace_line(req)
            spans += len(line["resourceSpans"][0]["scopeSpans"][0]["spans"])
            out.write(orjson.dumps(line) + b"\n")
    return spans


# -- one run ------------------------------------------------------------------------------------------


def replay(tfgw: str, path: Path, endpoint: str, extra: list[str]) -> tuple[float, int, dict[str, Any]]:
    """(wall seconds, peak RSS in bytes, verdict) of one `tfgw replay` process."""
    args = [tfgw, "replay", str(path), "--endpoint", endpoint, "--json", *extra]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        verdict = orjson.loads(out.read())
    if proc.returncode != 0:
        raise RuntimeError(f"tfgw replay {' '.join(extra)} exited {proc.returncode}: {verdict}")
    return wall, usage.ru_maxrss * 1024, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="Size of the trace file to replay.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()

    tfgw = shutil.which("tfgw", path=str(Path(sys.executable).parent)) or shutil.which("tfgw")
    if tfgw is None:
        raise SystemExit("tfgw is not installed (pip install -e .)")
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="tfgw-replay-bench-") as tmp,
        otlp_receiver("http") as (http_url, http_count),
        otlp_receiver("grpc") as (grpc_target, grpc_count),
    ):
        path = Path(tmp) / "traces.jsonl"
        spans = write_file(path, args.size_mb)
        size = path.stat().st_size
        for name, extra in RUNS.items():
            grpc = "grpc" in extra
            endpoint = f"http://{grpc_target}" if grpc else http_url  # http://: a plaintext channel
            received = grpc_count if grpc else http_count
            before = received()
            wall, rss, verdict = replay(tfgw, path, endpoint, extra)
            got = received() - before
            if "--dry-run" not in extra and (verdict["accepted"], got) != (spans, spans):
                raise RuntimeError(f"{name}: {verdict['accepted']} accepted, {got} received, {spans} sent")
            results.append(
                {
                    "run": name,
                    "seconds": round(wall, 2),
                    "spans_per_s": round(spans / wall),
                    "peak_rss_mb": round(rss / 1e6, 1),
                }
            )
    report = {
        "file_mb": round(size / 1e6, 1),
        "spans": spans,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    python, cpus = report["python"], report["cpus"]
    print(f"tfgw replay of {report['file_mb']} MB, {spans:,} spans (Python {python}, {cpus} CPUs)")
    width = max(len(r["run"]) for r in results)
    for r in results:
        figures = (
            f"{r['seconds']:6.2f} s  {r['spans_per_s']:>8,} spans/s  {r['peak_rss_mb']:6.1f} MB peak RSS"
        )
        print(f"  {r['run']:<{width}}  {figures}")


if __name__ == "__main__":
    main()
