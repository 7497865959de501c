"""`tfgw traces stats` and `tfgw traces list` on a big trace log, timed as a user runs them.

    python bench/traces_stats.py                  # 200,000 requests x 5 spans = 1,000,000 spans
    python bench/traces_stats.py --requests 20000 --json
    python bench/traces_stats.py --dir /tmp/big --keep   # reuse the log with --reuse next time

Writes a log as the gateway writes it (tests/samples.py builds the lines): two worker processes'
segments (`--segments` in all), each `tfgw-….jsonl` with its `.rows` file, the requests spread
over the last 20 hours, each segment's mtime set to its last request's end as a live gateway
leaves it. Five request shapes of exactly five spans each, in turn: a streamed gpt-4o-mini call,
a streamed claude-sonnet call, a fallback (a failed openai attempt, then anthropic), a 502 after
two failed attempts, and a streamed gpt-4o call on another key. Lines are made from templates
with fresh ids and times (bytes %-formatting), so writing a million spans takes seconds.

Then runs, each `--repeat` times, as subprocesses:
    tfgw traces stats --json --dir D        (the default window, 24h: every request)
    tfgw traces list --limit 50 --json --dir D
and reports the best and median wall time and the peak RSS of each (`os.wait4`, the child's own
`ru_maxrss`), after checking the answers (request count; 50 rows, newest first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.samples import T0, Failure, Request, row_of, segment_name, span_id, trace_id, trace_line  # noqa: E402

HOURS = 20
WORKERS = 2
NS = 1_000_000_000


def shapes() -> list[Request]:
    return [
        Request(1, model="gpt-4o-mini", stream=True, ttft_ms=180.0, duration_ms=900.0, tokens=(40, 160)),
        Request(2, model="claude-sonnet", provider="anthropic", route_model="claude-sonnet-4-5", stream=True,
                ttft_ms=420.0, duration_ms=2400.0, tokens=(300, 700)),
        Request(3, provider="anthropic", route_model="claude-sonnet-4-5", failures=(Failure(),),
                duration_ms=1500.0),
        Request(4, status=502,
                failures=(Failure(), Failure("anthropic", "claude-sonnet-4-5", "provider_error"))),
        Request(5, key="batch", stream=True, ttft_ms=250.0, duration_ms=1200.0, tokens=(1200, 300)),
    ]  # fmt: skip


class Template:
    """One request shape as a bytes %-format: fresh trace id, span ids and start time per request."""

    def __init__(self, req: Request) -> None:
        line = trace_line(req)
        raw = orjson.dumps(line).replace(b"%", b"%%")
        self.row = row_of(line)
        ids = {span_id(req.n, i).encode(): f"span{i}" for i in range(20)}
        ids[trace_id(req.n).encode()] = "trace"
        self.holes: list[tuple[str, int]] = []

        def hole(m: re.Match[bytes]) -> bytes:
            value = m[1]
            if value in ids:
                self.holes.append((ids[value], 0))
                return b'"%s"'
            if len(value) == 19 and value.isdigit():
                self.holes.append(("time", int(value) - T0))
                return b'"%d"'
            return m[0]

        self.format = re.sub(rb'"([0-9a-f]{32}|[0-9a-f]{16}|\d{19})"', hole, raw) + b"\n"

    def render(self, start: int, rand: random.Random) -> tuple[bytes, bytes]:
        """The line and the trace id of a request of this shape starting at `start`."""
        tid = b"%032x" % rand.getrandbits(128)
        spans: dict[str, bytes] = {}
        values: list[Any] = []
        for name, offset in self.holes:
            if name == "time":
                values.append(start + offset)
            elif name == "trace":
                values.append(tid)
            else:
                values.append(spans.setdefault(name, b"%016x" % rand.getrandbits(64)))
        return self.format % tuple(values), tid


def generate(directory: Path, requests: int, segments: int, seed: int = 7) -> dict[str, Any]:
    """Write the log; returns what was written."""
    rand = random.Random(seed)
    templates = [Template(req) for req in shapes()]
    now = time.time_ns()
    first = now - HOURS * 3600 * NS
    step = HOURS * 3600 * NS // requests
    per_worker = max(1, segments // WORKERS)
    began = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    spans = written = 0
    for worker in range(WORKERS):
        mine = range(worker, requests, WORKERS)  # workers take requests in turn: their segments overlap
        size = -(-len(mine) // per_worker)
        for seq in range(1, per_worker + 1):
            numbers = mine[(seq - 1) * size : seq * size]
            if numbers:
                path = directory / segment_name(first + numbers[0] * step, pid=1000 + worker, seq=seq)
                shaped = [(templates[i % len(templates)], first + i * step) for i in numbers]
                written += write_segment(path, shaped, rand)
                spans += len(numbers) * 5
    return {
        "requests": requests,
        "spans": spans,
        "segments": len(list(directory.glob("*.jsonl"))),
        "segment_bytes": written,
        "rows_bytes": sum(p.stat().st_size for p in directory.glob("*.rows")),
        "generate_s": round(time.perf_counter() - began, 2),
    }


def write_segment(path: Path, requests: list[tuple[Template, int]], rand: random.Random) -> int:
    """One segment and its rows file, mtimes at the last request's end; returns the segment's size."""
    lines, rows, end, last = [], [], 0, 0
    for template, start in requests:
        line, tid = template.render(start, rand)
        end += len(line)
        lines.append(line)
        row = {**template.row, "time": start, "trace_id": tid.decode(), "end": end}
        rows.append(orjson.dumps(row) + b"\n")
        last = max(last, start + round(template.row["duration_ms"] * 1e6))
    path.write_bytes(b"".join(lines))
    path.with_suffix(".rows").write_bytes(b"".join(rows))
    for p in (path, path.with_suffix(".rows")):
        os.utime(p, ns=(last, last))
    return end


def generate_apart(directory: Path, requests: int, segments: int) -> dict[str, Any]:
    """`generate()` in a child process. A child's ru_maxrss starts from its parent's peak (Linux
    carries the pre-exec high-water mark over), so this process must stay small for the figures
    of the commands it times to be theirs."""
    done = subprocess.run(
        [sys.executable, __file__, "--generate-only", "--dir", str(directory),
         "--requests", str(requests), "--segments", str(segments)],
        check=True, capture_output=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def timed(args: list[str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (KiB) and stdout of one `python -m tfgw ...` run."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "tfgw", *args], stdout=subprocess.PIPE)
    out = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"tfgw {' '.join(args)} exited {child.returncode}")
    return wall, usage.ru_maxrss, out


def measure(args: list[str], repeat: int, check: Any) -> dict[str, Any]:
    walls, peaks = [], []
    for _ in range(repeat):
        wall, peak, out = timed(args)
        check(out)
        walls.append(wall)
        peaks.append(peak)
    return {
        "command": "tfgw " + " ".join([*args[:-1], "D"]),
        "best_s": round(min(walls), 3),
        "median_s": round(statistics.median(walls), 3),
        "peak_rss_mib": round(max(peaks) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="Where to write the log (default: a temporary directory).")
    parser.add_argument("--requests", type=int, default=200_000, help="Requests of 5 spans each.")
    parser.add_argument("--segments", type=int, default=8, help="Segments, over two worker processes.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each command.")
    parser.add_argument("--reuse", action="store_true", help="Time the log already in --dir.")
    parser.add_argument("--keep", action="store_true", help="Leave the log in place.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.generate_only:
        print(json.dumps(generate(opts.dir, opts.requests, opts.segments)))
        return
    directory = opts.dir or Path(tempfile.mkdtemp(prefix="tfgw-bench-traces-"))
    try:
        if opts.reuse:
            log: dict[str, Any] = {"requests": opts.requests, "reused": str(directory)}
        else:
            log = generate_apart(directory, opts.requests, opts.segments)

        def stats_ok(out: bytes) -> None:
            assert orjson.loads(out)["all"]["requests"] == opts.requests, "stats counted a wrong number"

        def list_ok(out: bytes) -> None:
            times = [orjson.loads(line)["time"] for line in out.splitlines()]
            assert len(times) == min(50, opts.requests) and times == sorted(times, reverse=True), "bad list"

        d = str(directory)
        results = {
            "log": log,
            "stats": measure(["traces", "stats", "--json", "--dir", d], opts.repeat, stats_ok),
            "list": measure(["traces", "list", "--limit", "50", "--json", "--dir", d], opts.repeat, list_ok),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
    finally:
        if not opts.keep and opts.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    if opts.json:
        print(json.dumps(results))
        return
    log = results["log"]
    if "reused" in log:
        print(f"log: {log['reused']} (reused)")
    else:
        mib = {key: f"{log[key] / 2**20:,.0f} MiB" for key in ("segment_bytes", "rows_bytes")}
        print(
            f"log: {log['requests']:,} requests, {log['spans']:,} spans, {log['segments']} segments, "
            f"{mib['segment_bytes']} of segments + {mib['rows_bytes']} of rows, "
            f"written in {log['generate_s']} s"
        )
    print("| command | best | median | peak RSS |\n| --- | --- | --- | --- |")
    for key in ("stats", "list"):
        r = results[key]
        print(f"| `{r['command']}` | {r['best_s']} s | {r['median_s']} s | {r['peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
