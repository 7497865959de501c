"""Does memory grow? The gateway under steady load for minutes, tracing and exporting, RSS sampled.

    python bench/soak.py                   # 3 minutes: 9 slices of 20 s at concurrency 10
    python bench/soak.py --slices 30       # 10 minutes

Starts `bench/fake_upstream.py`, a span-counting OTLP receiver (`export_throughput.py --serve`),
and `tfgw serve` with tracing on and one export target (so its `tfgw exporter` child runs too).
Each slice is a load run (plain and streamed chat calls in turn) followed by the RSS of the
gateway process alone and of the exporter child, read from /proc. Reports the RSS per slice and
the growth in MiB per minute over the second half as a least-squares slope (after warm-up: caches,
pools and allocator arenas have filled by then), and checks every span written was delivered.
All on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import run_load
from run import (
    BENCH_DIR,
    HOST,
    chat_body,
    free_port,
    otlp_receiver,
    process_tree,
    running,
    start,
    start_gateway,
    trace_log_stats,
    wait_for_ready_line,
    write_config,
)


def rss(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spans_in_log(trace_dir: Path) -> int:
    """Spans written, from the per-request rows beside each segment."""
    total = 0
    for rows in trace_dir.glob("*.rows"):
        total += sum(orjson.loads(line)["spans"] for line in rows.read_bytes().splitlines())
    return total


def slope(samples: list[tuple[float, float, float]], column: int) -> float:
    """MiB per minute, least squares over the samples (one noisy sample cannot make a trend)."""
    xs = [t / 60 for t, *_ in samples]
    ys = [sample[column] for sample in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=9)
    parser.add_argument("--slice-seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    run_args = argparse.Namespace(tfgw=None, port=0)
    samples: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="tfgw-soak-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream_port, port = free_port(), free_port()
        upstream = start(
            [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port)],
            directory / "upstream.log",
            stdout_pipe=True,
        )
        processes.append(upstream)
        wait_for_ready_line(upstream, directory / "upstream.log")
        with otlp_receiver(directory) as (endpoint, received):
            config = write_config(directory, port, upstream_port, export_to=endpoint)
            gateway = start_gateway(run_args, config, port, directory / "soak.log", False, processes)
            url = f"http://{HOST}:{port}/v1/chat/completions"
            started = time.monotonic()
            for i in range(args.slices):
                run_load(url, chat_body(i % 2 == 1), args.concurrency, args.slice_seconds)
                children = [p for p in process_tree(gateway.pid) if p != gateway.pid]
                samples.append((time.monotonic() - started, rss(gateway.pid), sum(rss(p) for p in children)))
                print(f"slice {i + 1}: {samples[-1][1]:.1f} MiB gateway, {samples[-1][2]:.1f} MiB exporter",
                      file=sys.stderr)  # fmt: skip
            deadline = time.monotonic() + 60
            while True:  # until the exporter has sent every span the log holds
                written = spans_in_log(directory / "traces-export")
                delivered = received()
                if delivered >= written or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            traces = trace_log_stats(port).get("written", 0)
    half = samples[len(samples) // 2 :]
    print(f"{args.slices} slices of {args.slice_seconds:g} s at concurrency {args.concurrency}\n")
    print("| after | gateway RSS MiB | exporter RSS MiB |")
    print("| ---: | ---: | ---: |")
    for t, gw, ex in samples:
        print(f"| {t:.0f} s | {gw:.1f} | {ex:.1f} |")
    print(
        f"\ngrowth over the second half (least squares): gateway {slope(half, 1):+.2f} MiB/min, "
        f"exporter {slope(half, 2):+.2f} MiB/min; "
        f"{traces:,} traces written, {delivered:,} of their {written:,} spans delivered"
    )


if __name__ == "__main__":
    main()
