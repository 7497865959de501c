"""`tfgw traces diff A B` as a CI gate on two big logs, timed as a user runs it.

    python bench/traces_diff.py                   # two logs of 200,000 requests x 5 spans each
    python bench/traces_diff.py --requests 20000 --json
    python bench/traces_diff.py --dir /tmp/big --keep    # reuse both logs with --reuse next time

The logs are written by bench/traces_stats.py's generator, as the gateway writes a log (segments of
two workers with their rows files, 20 hours of requests, five request shapes of five spans each).
B is A with two known changes: its gpt-4o-mini stream takes 1,200 ms instead of 900 ms and its
claude-sonnet stream answers 770 output tokens instead of 700.

Then runs, `--repeat` times, as a subprocess:
    tfgw traces diff A B --json --fail-if 'p95_latency > +20%' --fail-if 'cost_per_request > +10%'
and reports the best and median wall time and the peak RSS (`os.wait4`), after checking the
answer: 200,000 requests a side, exit 1, and exactly the changes above holding (gpt-4o-mini's
p95 latency +33.3 %; claude-sonnet's cost per request is +9.2 %, under the 10 % gate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import traces_stats  # noqa: E402

SHAPES_A = traces_stats.shapes

GATES = ("p95_latency > +20%", "cost_per_request > +10%")
#: (condition, group) of every gate that must hold on the generated logs, in report order
EXPECTED = [("p95_latency > +20%", {"model": "gpt-4o-mini"})]


def shapes_b() -> list[Any]:
    """traces_stats' shapes with B's two changes."""
    shapes = SHAPES_A()
    shapes[0] = dataclasses.replace(shapes[0], duration_ms=1200.0)
    shapes[1] = dataclasses.replace(shapes[1], tokens=(300, 770))
    return shapes


def generate_apart(directory: Path, requests: int, segments: int, side: str) -> dict[str, Any]:
    """One log written by a child process (so that this one stays small: see traces_stats)."""
    done = subprocess.run(
        [sys.executable, __file__, "--generate-only", side, "--dir", str(directory),
         "--requests", str(requests), "--segments", str(segments)],
        check=True, capture_output=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def timed(args: list[str]) -> tuple[float, int, int, bytes]:
    """Wall seconds, peak RSS (KiB), exit code and stdout of one `python -m tfgw ...` run."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "tfgw", *args], stdout=subprocess.PIPE)
    out = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - began, usage.ru_maxrss, os.waitstatus_to_exitcode(status), out


def check(code: int, out: bytes, requests: int) -> None:
    report = orjson.loads(out)
    sides = (report["a"]["requests"], report["b"]["requests"])
    assert sides == (requests, requests), f"diff counted {sides} requests"
    failed = [(f["condition"], f["group"]) for f in report["failed"]]
    assert (code, failed) == (1, EXPECTED), f"exit {code}, gates that held: {failed}"


def measure(a: Path, b: Path, requests: int, repeat: int) -> dict[str, Any]:
    args = ["traces", "diff", str(a), str(b), "--json", *(f"--fail-if={gate}" for gate in GATES)]
    walls, peaks = [], []
    for _ in range(repeat):
        wall, peak, code, out = timed(args)
        check(code, out, requests)
        walls.append(wall)
        peaks.append(peak)
    return {
        "command": "tfgw traces diff A B --json " + " ".join(f"--fail-if '{gate}'" for gate in GATES),
        "best_s": round(min(walls), 3),
        "median_s": round(statistics.median(walls), 3),
        "peak_rss_mib": round(max(peaks) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, help="Where to write the logs, as a/ and b/ (default: a temp dir)."
    )
    parser.add_argument("--requests", type=int, default=200_000, help="Requests of 5 spans each, per log.")
    parser.add_argument("--segments", type=int, default=8, help="Segments per log, over two workers.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of the command.")
    parser.add_argument("--reuse", action="store_true", help="Time the logs already in --dir.")
    parser.add_argument("--keep", action="store_true", help="Leave the logs in place.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--generate-only", choices=("a", "b"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.generate_only:
        if opts.generate_only == "b":
            traces_stats.shapes = shapes_b  # type: ignore[assignment]  # generate() reads the module's
        print(json.dumps(traces_stats.generate(opts.dir, opts.requests, opts.segments)))
        return
    root = opts.dir or Path(tempfile.mkdtemp(prefix="tfgw-bench-diff-"))
    a, b = root / "a", root / "b"
    try:
        logs: dict[str, Any] = {"reused": str(root)}
        if not opts.reuse:
            logs = {
                side: generate_apart(root / side, opts.requests, opts.segments, side) for side in ("a", "b")
            }
        results: dict[str, Any] = {
            "logs": logs,
            "diff": measure(a, b, opts.requests, opts.repeat),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
    finally:
        if not opts.keep and opts.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        print(json.dumps(results))
        return
    if "reused" in logs:
        print(f"logs: {logs['reused']} (reused)")
    for side in ("a", "b"):
        if side in logs:
            log = logs[side]
            mib = {key: f"{log[key] / 2**20:,.0f} MiB" for key in ("segment_bytes", "rows_bytes")}
            print(
                f"{side.upper()}: {log['requests']:,} requests, {log['spans']:,} spans, {log['segments']} "
                f"segments, {mib['segment_bytes']} of segments + {mib['rows_bytes']} of rows, "
                f"written in {log['generate_s']} s"
            )
    r = results["diff"]
    print("| command | best | median | peak RSS |\n| --- | --- | --- | --- |")
    print(f"| `{r['command']}` | {r['best_s']} s | {r['median_s']} s | {r['peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
