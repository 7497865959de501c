"""What `tfgw replay` delivers: spans/s to a local receiver and peak memory, on a large file.

    python bench/replay_throughput.py                  # a ~200 MB file of tfgw trace log lines
    python bench/replay_throughput.py --size-mb 50 --json

The file holds the gateway's own lines (`tests/samples.trace_line`: a SERVER root, `auth`,
`model.resolve`, one LLM span with its conversation, and a `stream` span for every other request;
4.5 spans and about 4.6 KB a line). Each run is the real command, `tfgw replay FILE --endpoint
URL --json`, in its own process, timed from start to exit (both passes: validation, then
encoding and sending), its peak RSS read from `wait4`. The receiver runs in another process
(`--serve`): OTLP/HTTP (aiohttp) and OTLP/gRPC (grpcio) that parse each request with protobuf
and count its spans; every run checks it counted every span. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import samples  # noqa: E402

HOST = "127.0.0.1"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

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


# -- the receiver (its own process) ----------------------------------------------------------------


def serve(http_port: int, grpc_port: int) -> None:
    """Count the spans of every export request on both ports; `GET /count` answers the total."""
    import grpc
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    total = 0

    def count(body: bytes) -> None:
        nonlocal total
        request = ExportTraceServiceRequest.FromString(body)
        total += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        count(body)
        return b""  # an empty ExportTraceServiceResponse

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
    server.add_insecure_port(f"{HOST}:{grpc_port}")
    server.start()

    async def traces(request: web.Request) -> web.Response:
        import gzip

        nonlocal total
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if request.content_type == "application/json":
            data = orjson.loads(body)
            total += sum(len(ss["spans"]) for rs in data["resourceSpans"] for ss in rs["scopeSpans"])
            return web.Response(body=b"{}", content_type="application/json")
        count(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def counted(request: web.Request) -> web.Response:
        return web.Response(text=str(total))

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", traces)
        app.router.add_get("/count", counted)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        await web.TCPSite(runner, HOST, http_port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def receiver() -> Iterator[tuple[int, int]]:
    ports = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(ports[0]), "--grpc-port", str(ports[1])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the receiver did not start")
        yield ports
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def received(http_port: int) -> int:
    import httpx

    return int(httpx.get(f"http://{HOST}:{http_port}/count", trust_env=False).text)


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
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.grpc_port)
        return

    tfgw = shutil.which("tfgw", path=str(Path(sys.executable).parent)) or shutil.which("tfgw")
    if tfgw is None:
        raise SystemExit("tfgw is not installed (pip install -e .)")
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="tfgw-replay-bench-") as tmp,
        receiver() as (http_port, grpc_port),
    ):
        path = Path(tmp) / "traces.jsonl"
        spans = write_file(path, args.size_mb)
        size = path.stat().st_size
        for name, extra in RUNS.items():
            endpoint = f"http://{HOST}:{grpc_port if 'grpc' in extra else http_port}"
            before = received(http_port)
            wall, rss, verdict = replay(tfgw, path, endpoint, extra)
            got = received(http_port) - before
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
