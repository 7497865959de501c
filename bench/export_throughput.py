"""What an exporter can deliver: OTLP encoding alone, and end to end to a local receiver.

    python bench/export_throughput.py                      # 10,000 requests = 40,000 spans
    python bench/export_throughput.py --requests 2000 --json

The trace log lines are made by the gateway's own encoder (`tfgw.tracing.encode.Encoder`), with
the request's content, as `tfgw serve` writes them: per request a SERVER root, `auth`,
`model.resolve` and one LLM span (a 6-message conversation with a tool call, one tool, usage
and price), about 17 attributes a span on average and 50 on the LLM span. Every line has its
own ids. They are kept as the bytes of the file, so each run parses them as the exporter does.

1. **Encoding**: `orjson.loads` + `encode.prepare` + `encode.batches` in this process, for
   protobuf and OTLP/JSON, content kept and excluded. Reports spans/s of CPU time.
2. **End to end**: the same, plus `send.sender_for(target).send(batch)` one batch after another
   (as one exporter thread does), to a receiver in its own process (`--serve`, started here):
   OTLP/HTTP (aiohttp), which keeps each body and parses it with protobuf (upb) when asked for its
   count (it stands for a backend on another machine: while a run lasts it costs the cores only
   the reading), or OTLP/gRPC (grpcio), which parses each request as it comes; so the receiver
   costs little and the figure is the exporter's. Batches of
   500 and 2,000 spans; gzip on and off. Reports spans/s of wall time, and of this process's CPU
   time. Every run checks the receiver counted every span.

Everything stays on 127.0.0.1; the receiver is stopped on exit, on errors and ^C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfgw.export import encode, send  # noqa: E402
from tfgw.tracing.encode import Encoder  # noqa: E402
from tfgw.tracing.spans import LlmCall, RequestTrace  # noqa: E402

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0

SYSTEM = "You are a careful assistant. Answer in one short paragraph and cite your sources."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@dataclass(frozen=True)
class Target:
    """The fields of a resolved target that encode and send read."""

    endpoint: str
    protocol: str
    compression: str | None
    name: str = "bench"
    kind: str = "otlp"
    insecure: bool = True
    headers: Any = field(default_factory=dict)
    project: str = "bench"
    exclude_request_data: bool = False
    timeout: float = 30.0
    secrets: tuple[str, ...] = ()
    conventions: tuple[str, ...] = ("openinference", "gen_ai")
    metrics: bool = False


# -- the lines ---------------------------------------------------------------------------------------


def make_lines(count: int) -> list[bytes]:
    """`count` trace file lines, as the gateway writes them (see the module docstring)."""
    encoder = Encoder("bench")
    out = []
    for n in range(count):
        trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
        trace.root.attributes.update(
            {"http.request.method": "POST", "url.path": "/v1/chat/completions", "session.id": f"s-{n % 50}"}
        )
        trace.child("auth").attributes.update({"tfgw.key.name": "ci", "tfgw.auth.outcome": "ok"})
        trace.child("model.resolve").attributes.update(
            {"tfgw.model.requested": "smart", "tfgw.route.provider": "openai", "tfgw.route.model": "gpt-4o"}
        )
        question = f"Question {n}: what is the weather in city {n % 97}, and should I take an umbrella?"
        request = {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{n}", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps({"city": f"c{n % 97}"})}},
                ]},
                {"role": "tool", "tool_call_id": f"call_{n}", "content": "rain, 12 C"},
                {"role": "assistant", "content": "It rains: 12 C."},
                {"role": "user", "content": "Thanks. And tomorrow?"},
            ],
            "tools": TOOLS,
            "temperature": 0.2,
            "max_tokens": 300,
        }  # fmt: skip
        call = LlmCall("chat", "openai", "openai", "https://api.openai.com/v1", "gpt-4o", "smart", 1, request)
        span = trace.llm(call)
        call.response = {
            "id": f"chatcmpl-{n}",
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Tomorrow: sun, 18 C (forecast {n})."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 180 + n % 40, "completion_tokens": 12, "total_tokens": 192 + n % 40},
        }
        span.attributes["tfgw.route.attempt"] = 1
        trace.finish()
        out.append(orjson.dumps(encoder.line(trace)))
    return out


def attribute_counts(raw: list[bytes]) -> tuple[float, int, int]:
    counts = [
        len(span["attributes"])
        for line in raw[:200]
        for rs in orjson.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    return sum(counts) / len(counts), min(counts), max(counts)


def spans_in(raw: list[bytes]) -> int:
    return sum(raw_line.count(b'"spanId"') for raw_line in raw)


# -- measuring ---------------------------------------------------------------------------------------


def pipeline(raw: list[bytes], target: Target, max_spans: int) -> Iterator[encode.EncodedBatch]:
    """What an exporter thread does with a chunk of the log, up to sending."""
    lines = [encode.prepare(orjson.loads(line), target) for line in raw]
    yield from encode.batches(lines, target.protocol, max_spans=max_spans)


def chunks(raw: list[bytes], lines_per_chunk: int) -> Iterator[list[bytes]]:
    for i in range(0, len(raw), lines_per_chunk):
        yield raw[i : i + lines_per_chunk]


def measure_parsing(raw: list[bytes], repeat: int) -> dict[str, Any]:
    spans, best = spans_in(raw), float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for chunk in chunks(raw, 500):
            [orjson.loads(line) for line in chunk]
        best = min(best, time.process_time() - start)
    return {
        "stage": "parse",
        "spans": spans,
        "spans_per_cpu_s": round(spans / best),
        "us_per_span": round(best / spans * 1e6, 2),
    }


def measure_encoding(raw: list[bytes], protocol: str, exclude: bool, repeat: int) -> dict[str, Any]:
    target = Target("", protocol, None, exclude_request_data=exclude)
    spans, best = spans_in(raw), float("inf")
    size = 0
    for _ in range(repeat):
        start = time.process_time()
        size = 0
        for chunk in chunks(raw, 500):
            for batch in pipeline(chunk, target, 2000):
                size += len(batch.body)
        best = min(best, time.process_time() - start)
    return {
        "stage": "encode",
        "protocol": protocol,
        "content": "excluded" if exclude else "kept",
        "spans": spans,
        "spans_per_cpu_s": round(spans / best),
        "us_per_span": round(best / spans * 1e6, 2),
        "bytes_per_span": round(size / spans),
    }


def measure_send(
    raw: list[bytes], target: Target, max_spans: int, counter: Callable[[], int], repeat: int
) -> dict[str, Any]:
    spans = spans_in(raw)
    lines_per_chunk = max(1, max_spans // 4)  # 4 spans a request: one batch per chunk
    best_wall, best_cpu = float("inf"), float("inf")
    with send.sender_for(target) as sender:  # type: ignore[arg-type]
        for batch in pipeline(raw[:lines_per_chunk], target, max_spans):  # connect, warm up
            assert sender.send(batch).outcome == "accepted"
        for _ in range(repeat):
            before = counter()
            wall, cpu = time.perf_counter(), time.process_time()
            batches = 0
            for chunk in chunks(raw, lines_per_chunk):
                for batch in pipeline(chunk, target, max_spans):
                    result = sender.send(batch)
                    if result.outcome != "accepted":
                        raise RuntimeError(f"the receiver answered {result}")
                    batches += 1
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            received = counter() - before
            if received != spans:
                raise RuntimeError(f"sent {spans} spans, the receiver counted {received}")
            best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return {
        "stage": "send",
        "protocol": target.protocol,
        "gzip": target.compression == "gzip",
        "batch_spans": max_spans,
        "batches": batches,
        "spans": spans,
        "spans_per_s": round(spans / best_wall),
        "spans_per_cpu_s": round(spans / best_cpu),
    }


# -- the receiver (its own process) ------------------------------------------------------------------


def serve(kind: str, port: int) -> None:
    """Count the spans of every export request; `GET /count` (HTTP) or stdout lines answer how many."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    total = 0

    def count(body: bytes) -> None:
        nonlocal total
        request = ExportTraceServiceRequest.FromString(body)
        total += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

    if kind == "grpc":
        import grpc

        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            count(body)
            data: bytes = ExportTraceServiceResponse().SerializeToString()
            return data

        def counted(body: bytes, context: grpc.ServicerContext) -> bytes:
            return str(total).encode()

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        handlers = {
            "Export": grpc.unary_unary_rpc_method_handler(export),
            "Count": grpc.unary_unary_rpc_method_handler(counted),
        }
        service = "opentelemetry.proto.collector.trace.v1.TraceService"
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_insecure_port(f"{HOST}:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return

    import gzip

    from aiohttp import web

    # Bodies are kept as they came and counted when `GET /count` asks: the receiver stands for a
    # backend on another machine, so while a run lasts it costs the shared cores only the reading
    # (a 4 MiB body parsed at once is several ms of one core that nothing can preempt)
    received: list[tuple[bytes, str, bool]] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        json = request.content_type == "application/json"
        received.append((body, request.content_type, request.headers.get("content-encoding") == "gzip"))
        return web.Response(body=b"{}" if json else b"", content_type=request.content_type)

    def count_received() -> None:
        nonlocal total
        bodies = received.copy()
        received.clear()
        for body, content_type, gzipped in bodies:
            body = gzip.decompress(body) if gzipped else body
            if content_type == "application/json":
                data = orjson.loads(body)
                total += sum(len(ss["spans"]) for rs in data["resourceSpans"] for ss in rs["scopeSpans"])
            else:
                count(body)

    async def counted(request: web.Request) -> web.Response:
        count_received()
        return web.Response(text=str(total))

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", traces)
        app.router.add_get("/count", counted)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def receiver(kind: str, nice: int = 0) -> Iterator[tuple[str, Callable[[], int]]]:
    """A span-counting receiver in its own process (at `nice`), and how to ask it its count."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(["nice", "-n", str(nice)] if nice else []),
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = proc.stdout.readline()
        if line.strip() != "ready" or time.monotonic() > deadline:
            raise RuntimeError(f"the {kind} receiver did not start")
        if kind == "grpc":
            import grpc

            channel = grpc.insecure_channel(f"{HOST}:{port}")
            method = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Count",
                request_serializer=None,
                response_deserializer=None,
            )
            yield f"{HOST}:{port}", lambda: int(method(b"", timeout=10))
            channel.close()
        else:
            import httpx

            with httpx.Client(trust_env=False) as client:
                yield (
                    f"http://{HOST}:{port}/v1/traces",
                    lambda: int(client.get(f"http://{HOST}:{port}/count").text),
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="Requests of 4 spans each.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each measurement (best kept).")
    parser.add_argument("--batch-spans", default="500,2000", help="Batch sizes to send, comma-separated.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument(
        "--gc-threshold", type=int, default=0, help="gc.set_threshold(N) first (0: Python's default, 700)."
    )
    parser.add_argument("--serve", choices=("http", "grpc"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold)
    gc.collect()
    started = time.perf_counter()
    raw = make_lines(args.requests)
    made_s = time.perf_counter() - started
    mean, low, high = attribute_counts(raw)
    results: list[dict[str, Any]] = [measure_parsing(raw, args.repeat)]
    for protocol in ("http/protobuf", "http/json"):
        for exclude in (False, True):
            results.append(measure_encoding(raw, protocol, exclude, args.repeat))
    sizes = [int(s) for s in args.batch_spans.split(",")]
    for kind, protocols in (("http", ("http/protobuf", "http/json")), ("grpc", ("grpc",))):
        with receiver(kind) as (endpoint, counter):
            for protocol in protocols:
                for compression in (None, "gzip"):
                    for max_spans in sizes:
                        target = Target(endpoint, protocol, compression)
                        results.append(measure_send(raw, target, max_spans, counter, args.repeat))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "gc_threshold": gc.get_threshold()[0],
        "lines": len(raw),
        "spans": spans_in(raw),
        "attributes_per_span": {"mean": round(mean, 1), "min": low, "max": high},
        "bytes_per_line": round(sum(map(len, raw)) / len(raw)),
        "made_in_s": round(made_s, 1),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"$ {report['command']}")
    print(
        f"{report['machine']}, gc threshold {report['gc_threshold']}; "
        f"{report['lines']:,} lines, {report['spans']:,} spans, "
        f"{mean:.1f} attributes a span ({low}-{high}), {report['bytes_per_line']:,} bytes a line\n"
    )
    print("| stage | protocol | content / gzip | batch | spans/s (wall) | spans/CPU-s | µs/span | B/span |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        if r["stage"] == "parse":
            print(f"| parse (orjson.loads) | | | | | {r['spans_per_cpu_s']:,} | {r['us_per_span']} | |")
        elif r["stage"] == "encode":
            print(
                f"| parse+prepare+encode | {r['protocol']} | content {r['content']} | 2000 | | "
                f"{r['spans_per_cpu_s']:,} | {r['us_per_span']} | {r['bytes_per_span']} |"
            )
        else:
            gzip = "on" if r["gzip"] else "off"
            print(
                f"| end to end | {r['protocol']} | gzip {gzip} | {r['batch_spans']} | {r['spans_per_s']:,} | "
                f"{r['spans_per_cpu_s']:,} | {1e6 / r['spans_per_cpu_s']:.1f} | |"
            )


if __name__ == "__main__":
    main()
