"""What a real `tfgw exporter` process spends in CPU time per span it delivers.

    python bench/export_cpu.py                                  # 4 rounds of 2,000 requests
    python bench/export_cpu.py --protocol grpc --compression none --json
    python bench/export_cpu.py --tree /tmp/before               # the same run on another checkout
    python bench/export_cpu.py --callgrind --requests 500 --rounds 3  # instructions, repeatable

One target (`otlp`, the protocol and compression given) points at export_throughput.py's
span-counting receiver (its own process, niced to 19: it stands for a backend elsewhere). The
exporter is started as `tfgw serve` starts it, `python -m tfgw exporter --config F`, on an empty
trace directory; once its cursor exists, each round renames one segment of fresh lines into the
directory and polls the receiver until it has counted every span of it. A round's figure is the
exporter's utime+stime from /proc/<pid>/stat across it (CPU time, not wall clock: the machine is
shared), divided by the spans delivered; spans/s is of wall time and only indicative. The first
round runs with cold memos, so the report keeps the median of the rounds after it.

`--callgrind` runs the exporter under `valgrind --tool=callgrind` and counts the instructions of
each round instead (`callgrind_control -z` before it, `-d` after): slow, but the same from run to
run, which CPU time on a shared machine is not; the figure for an A/B of two trees.

Lines: `gateway` (default) are made by the gateway's own encoder with the request's content, as
export_throughput.py makes them (4 spans a request, ~7 kB a line); `samples` are tests/samples.py
lines, streaming and non-streaming requests alternating (5 and 4 spans, ~4 kB).

Everything stays on 127.0.0.1; the exporter and the receiver are stopped on exit, errors and ^C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from export_throughput import make_lines, receiver, spans_in  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
DELIVERY_TIMEOUT_S = 120.0
START_TIMEOUT_S = 20.0
TARGET = "bench"

CONFIG = """\
[tracing]
enabled = true
dir = "{traces}"

[otel.targets.{target}]
kind = "otlp"
endpoint = "{endpoint}"
protocol = "{protocol}"
compression = "{compression}"
timeout = 30.0
"""


def sample_lines(count: int, first: int) -> list[bytes]:
    """tests/samples.py lines, streaming every other request (ids unique from `first` on)."""
    from tests.samples import MS, T0, Request, trace_line

    return [
        orjson.dumps(trace_line(Request(n % 65_536, start=T0 + n * 1000 * MS, stream=n % 2 == 1)))
        for n in range(first, first + count)
    ]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def exporter(
    config: Path, tree: Path | None, log: Path, callgrind: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if tree is not None:  # ahead of the editable install: the other checkout's tfgw is imported
        env["PYTHONPATH"] = str(tree)
    with log.open("wb") as sink:
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}/cg.%p"]
        process = subprocess.Popen(
            [
                *(valgrind if callgrind else []),
                sys.executable,
                "-m",
                "tfgw",
                "exporter",
                "--config",
                str(config),
            ],
            cwd=tree or REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Instructions:
    """Instructions callgrind counted in a process between `start()` and `stop()`."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid, self.directory = pid, directory

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.pid)], check=True, capture_output=True)

    def start(self) -> None:
        self._control("-z")

    def stop(self) -> int:
        before = set(self.directory.glob("cg.*.*"))
        self._control("-d")
        [dump] = set(self.directory.glob("cg.*.*")) - before
        for line in dump.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise RuntimeError(f"no summary in {dump}")


def wait_for(check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"the exporter exited with {process.returncode} waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Rounds:
    """The rounds of one run: each a segment renamed into the log, and what delivering it cost."""

    process: subprocess.Popen[bytes]
    traces: Path
    counter: Callable[[], int]
    instructions: Instructions | None
    timeout: float

    def run(self, number: int, lines: list[bytes]) -> dict[str, Any]:
        spans, received = spans_in(lines), self.counter()
        staged = self.traces / f".round-{number}.tmp"
        staged.write_bytes(b"".join(line + b"\n" for line in lines))
        if self.instructions:
            self.instructions.start()
        cpu, wall = cpu_seconds(self.process.pid), time.perf_counter()
        os.replace(staged, self.traces / f"tfgw-20260101-{number:06d}-9999-0001.jsonl")
        wait_for(lambda: self.counter() >= received + spans, self.timeout, "delivery", self.process)
        cpu, wall = cpu_seconds(self.process.pid) - cpu, time.perf_counter() - wall
        counted = self.instructions.stop() if self.instructions else 0
        if (now := self.counter()) != received + spans:
            raise RuntimeError(f"wrote {spans} spans, the receiver counted {now - received}")
        return {
            "round": number,
            "requests": len(lines),
            "spans": spans,
            "cpu_s": round(cpu, 3),
            "cpu_us_per_span": round(cpu / spans * 1e6, 2),
            "cpu_us_per_request": round(cpu / len(lines) * 1e6, 1),
            "spans_per_s": round(spans / wall),
            "peak_rss_mb": peak_rss_mb(self.process.pid),
            **({"instructions_per_span": round(counted / spans)} if self.instructions else {}),
        }


def run_rounds(args: argparse.Namespace, rounds: list[list[bytes]], directory: Path) -> list[dict[str, Any]]:
    traces = directory / "traces"
    traces.mkdir()
    with receiver("grpc" if args.protocol == "grpc" else "http", nice=19) as (endpoint, counter):
        config = directory / "tfgw.toml"
        config.write_text(
            CONFIG.format(
                traces=traces,
                target=TARGET,
                endpoint=f"http://{endpoint}" if args.protocol == "grpc" else endpoint,  # plaintext
                protocol=args.protocol,
                compression=args.compression,
            )
        )
        callgrind = None if args.callgrind is None else Path(args.callgrind or directory)
        slow = 20 if callgrind else 1  # valgrind runs it some 50 times slower
        with exporter(config, args.tree, directory / "exporter.log", callgrind) as process:
            cursor = traces / ".cursors" / f"{TARGET}.json"
            wait_for(cursor.exists, START_TIMEOUT_S * slow, "its cursor", process)
            instructions = Instructions(process.pid, callgrind) if callgrind else None
            run = Rounds(process, traces, counter, instructions, DELIVERY_TIMEOUT_S * slow)
            return [run.run(number, lines) for number, lines in enumerate(rounds, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests (lines) a round.")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds, each a new segment of fresh lines.")
    parser.add_argument("--protocol", default="http/protobuf", choices=("http/protobuf", "http/json", "grpc"))
    parser.add_argument("--compression", default="gzip", choices=("gzip", "none"))
    parser.add_argument("--lines", default="gateway", choices=("gateway", "samples"))
    parser.add_argument("--tree", type=Path, help="Run the exporter of this checkout (PYTHONPATH).")
    parser.add_argument(
        "--callgrind",
        nargs="?",
        const="",
        metavar="DIR",
        help="Count instructions (valgrind); keep the dumps in DIR if given (callgrind_annotate reads them).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()

    total = args.requests * args.rounds
    made = make_lines(total) if args.lines == "gateway" else sample_lines(total, 0)
    rounds = [made[i : i + args.requests] for i in range(0, total, args.requests)]
    with tempfile.TemporaryDirectory(prefix="tfgw-export-cpu-") as tmp:
        results = run_rounds(args, rounds, Path(tmp))
    warm = results[1:] or results
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "tree": str(args.tree or REPO),
        "protocol": args.protocol,
        "compression": args.compression,
        "lines": args.lines,
        "bytes_per_line": round(sum(map(len, made)) / len(made)),
        "rounds": results,
        "cpu_us_per_span": statistics.median(r["cpu_us_per_span"] for r in warm),
        "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in warm),
        "spans_per_s": statistics.median(r["spans_per_s"] for r in warm),
        "peak_rss_mb": results[-1]["peak_rss_mb"],
    }
    if args.callgrind is not None:
        report["instructions_per_span"] = statistics.median(r["instructions_per_span"] for r in warm)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report)


def render(report: dict[str, Any]) -> None:
    results = report["rounds"]
    print(f"$ {report['command']}")
    print(
        f"{report['machine']}; {report['tree']}; {report['protocol']}, compression {report['compression']}; "
        f"{report['lines']} lines, {report['bytes_per_line']:,} bytes a line\n"
    )
    print(
        "| round | requests | spans | CPU s | CPU µs/span | CPU µs/request | spans/s (wall) | peak RSS MB |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['round']} | {r['requests']:,} | {r['spans']:,} | {r['cpu_s']} | {r['cpu_us_per_span']} | "
            f"{r['cpu_us_per_request']} | {r['spans_per_s']:,} | {r['peak_rss_mb']} |"
        )
    if "instructions_per_span" in report:
        for r in results:
            print(f"round {r['round']}: {r['instructions_per_span']:,} instructions a span")
        print(f"\nmedian of rounds 2-{len(results)}: {report['instructions_per_span']:,} instructions a span")
        return
    print(
        f"\nmedian of rounds 2-{len(results)}: {report['cpu_us_per_span']} CPU µs a span, "
        f"{report['cpu_us_per_request']} a request, {report['spans_per_s']:,} spans/s; "
        f"peak RSS {report['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
