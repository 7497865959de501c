"""What exporter workers deliver from the NATS JetStream stream: one worker, then two sharing the
consumer, each in its own process, to a local receiver.

    python bench/nats_export.py                       # 10,000 requests = 40,000 spans, best of 3
    python bench/nats_export.py --requests 4000 --repeat 1 --json

The lines are `bench/export_throughput.py`'s (the gateway's own encoder, content kept, 4 spans a
request), published once to a stream of a `nats-server -js` started here (its store in a temporary
directory), with a `Nats-Msg-Id` each as the gateway's publisher sends them
(`tfgw.bus.publish.msg_id`). Every run makes a new durable consumer on that stream
(`tfgw.bus.consume.consumer_config`, from the stream's start) and starts N worker processes, each
a `tfgw.bus.consume.TargetConsumer` (fetch, encode as http/protobuf without gzip, send, ack), all
on that one consumer. The clock runs from the moment every worker is ready and told to go until
the receiver (`export_throughput.py`'s, its own process) has counted every span; each worker
reports its CPU time. Everything stays on 127.0.0.1; the server, the receiver and the workers are
stopped on exit, on errors and ^C too.

For comparison, measured in the same run: the same lines through the log mode's pipeline (parse,
prepare, encode, send, 2,000-span payloads; `export_throughput.measure_send`), without NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from export_throughput import Target, make_lines, measure_send, receiver, spans_in  # noqa: E402

from tfgw.bus.connect import connect  # noqa: E402
from tfgw.bus.consume import consumer_config  # noqa: E402
from tfgw.bus.publish import msg_id  # noqa: E402
from tfgw.bus.stream import ensure_stream  # noqa: E402
from tfgw.config_bus import BusSettings  # noqa: E402

HOST = "127.0.0.1"
NATS_SERVER = Path(sys.executable).with_name("nats-server")


# -- the server and the stream ----------------------------------------------------------------------


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="tfgw-bench-nats-") as store:
        command = [str(NATS_SERVER), "-js", "-a", HOST, "-p", str(port), "-sd", store]
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("nats-server did not start") from None
                    time.sleep(0.02)
            yield f"nats://{HOST}:{port}"
        finally:
            _end(proc)


def _end(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _publish(bus: BusSettings, raw: list[bytes]) -> None:
    nc = await connect(bus, "bench")
    js = nc.jetstream()
    await ensure_stream(js, bus)

    def headers(line: bytes) -> dict[str, str]:
        return {"Nats-Msg-Id": msg_id(line)}

    for i in range(0, len(raw), 500):
        chunk = raw[i : i + 500]
        await asyncio.gather(*(js.publish(bus.subject, line, headers=headers(line)) for line in chunk))
    await nc.close()


async def _add_consumer(bus: BusSettings, target: str) -> None:
    nc = await connect(bus, "bench")
    await nc.jetstream().add_consumer(bus.stream, consumer_config(bus, target))
    await nc.close()


# -- a worker (its own process) -------------------------------------------------------------------


def work(url: str, target: str, endpoint: str) -> None:
    """A `TargetConsumer` on `target`'s consumer, started by a "go" line on stdin and stopped by
    SIGTERM; prints "ready" once imported, and its CPU seconds when it ends."""
    import gc

    from tfgw.bus.consume import TargetConsumer

    gc.set_threshold(20_000, 10, 10)  # as the exporter process
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bus = BusSettings(kind="nats", urls=(url,))
    consumer = TargetConsumer(Target(endpoint, "http/protobuf", None, name=target), bus, stop)  # type: ignore[arg-type]
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.process_time()
    consumer.run()
    print(json.dumps({"cpu_s": time.process_time() - start, **consumer.stats}), flush=True)


def measure(
    url: str, workers: int, run: int, endpoint: str, counter: Callable[[], int], spans: int
) -> dict[str, Any]:
    target = f"bench-{workers}w-{run}"
    bus = BusSettings(kind="nats", urls=(url,))
    asyncio.run(_add_consumer(bus, target))
    command = [sys.executable, __file__, "--worker", url, "--target", target, "--endpoint", endpoint]
    procs = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        before, busy = counter(), machine_busy_s()
        wall = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        while counter() - before < spans:
            time.sleep(0.005)
        wall = time.perf_counter() - wall
        busy = machine_busy_s() - busy
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        reports = [json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            _end(proc)
    if counter() - before != spans:
        raise RuntimeError(f"sent {spans} spans, the receiver counted {counter() - before}")
    cpu = sum(r["cpu_s"] for r in reports)
    return {
        "workers": workers,
        "spans": spans,
        "wall_s": round(wall, 3),
        "spans_per_s": round(spans / wall),
        "spans_per_cpu_s": round(spans / cpu),
        "worker_cores": round(cpu / wall, 2),
        "machine_cores_busy": round(busy / wall, 2),
        "delivered_by_worker": [r["delivered"] for r in reports],
        "redelivered": sum(r["redelivered"] for r in reports),
    }


def machine_busy_s() -> float:
    """Seconds the machine's CPUs were busy since boot, all of them together (/proc/stat: every
    state but idle and iowait): over a run, how many cores the run kept busy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="Requests of 4 spans each.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each measurement (best kept).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args.worker, args.target, args.endpoint)
        return
    import gc

    raw = make_lines(args.requests)
    spans = spans_in(raw)
    gc.collect()
    gc.freeze()  # the lines made here are not a worker's: the pipeline measured here skips them
    gc.set_threshold(20_000, 10, 10)  # as an exporter process (and each worker here) sets it
    best: dict[int, dict[str, Any]] = {}
    with nats_server() as url, receiver("http") as (endpoint, counter):
        # the same lines sent by the log mode's pipeline, without NATS, in this process
        local = measure_send(raw, Target(endpoint, "http/protobuf", None), 2000, counter, args.repeat)
        asyncio.run(_publish(BusSettings(kind="nats", urls=(url,)), raw))
        for workers in (1, 2):
            for run in range(args.repeat):
                result = measure(url, workers, run, endpoint, counter, spans)
                if workers not in best or result["spans_per_s"] > best[workers]["spans_per_s"]:
                    best[workers] = result
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "lines": len(raw),
        "spans": spans,
        "bytes_per_line": round(sum(map(len, raw)) / len(raw)),
        "local_log_pipeline": {k: local[k] for k in ("spans_per_s", "spans_per_cpu_s", "batch_spans")},
        "results": list(best.values()),
        "speedup_2w": round(best[2]["spans_per_s"] / best[1]["spans_per_s"], 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"$ {report['command']}")
    size = report["bytes_per_line"]
    print(f"{report['machine']}; {len(raw):,} lines, {spans:,} spans, {size:,} bytes a line\n")
    print(
        "| workers | spans/s (wall) | spans/CPU-s (workers) | cores: workers / machine busy"
        " | spans by worker | redelivered |"
    )
    print("| ---: | ---: | ---: | ---: | --- | ---: |")
    rate, cpu = f"{local['spans_per_s']:,}", f"{local['spans_per_cpu_s']:,}"
    print(f"| no NATS: the log mode's pipeline | {rate} | {cpu} | | | |")
    for r in report["results"]:
        by = ", ".join(f"{n:,}" for n in r["delivered_by_worker"])
        rate, cpu = f"{r['spans_per_s']:,}", f"{r['spans_per_cpu_s']:,}"
        cores = f"{r['worker_cores']} / {r['machine_cores_busy']}"
        print(f"| {r['workers']} | {rate} | {cpu} | {cores} | {by} | {r['redelivered']} |")
    print(f"\ntwo workers: {report['speedup_2w']}x one")


if __name__ == "__main__":
    main()
