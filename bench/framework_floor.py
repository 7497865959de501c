"""How much of the gateway's cost is the web framework: the same proxy call through a bare ASGI app.

    python bench/framework_floor.py            # ~40 s: c=1 and c=50, non-streaming

Starts `bench/fake_upstream.py`, then a minimal proxy in its own process: a plain ASGI callable
(no Quart, no routing, no request objects) on Hypercorn with uvloop, forwarding each POST body to
the fake upstream with the same aiohttp session settings as tfgw and sending the answer back.
It does none of tfgw's work (no auth, no model resolution, no tracing), so its figures are a floor
for what Hypercorn + h11 + aiohttp cost; the difference to `run.py`'s tfgw rows is Quart plus
everything tfgw does. Everything stays on 127.0.0.1; both processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import run_load
from run import (
    BENCH_DIR,
    HIGH,
    HOST,
    LOW,
    chat_body,
    cpu_seconds,
    free_port,
    running,
    start,
    wait_for_health,
    wait_for_ready_line,
)


def serve_floor(port: int, upstream_port: int) -> None:
    """The bare proxy (runs in the child process)."""
    import aiohttp
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    upstream = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
                    session = aiohttp.ClientSession(connector=connector, trust_env=False)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    assert session is not None
                    await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert session is not None
        headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
        async with session.post(upstream, data=body, headers=headers) as resp:
            data = await resp.read()
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    uvloop.install()
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_floor(*args.serve)
        return
    import tempfile

    results = []
    with tempfile.TemporaryDirectory(prefix="tfgw-floor-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream_port, port = free_port(), free_port()
        upstream = start(
            [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port)],
            directory / "upstream.log",
            stdout_pipe=True,
        )
        processes.append(upstream)
        wait_for_ready_line(upstream, directory / "upstream.log")
        floor = start(
            [sys.executable, __file__, "--serve", str(port), str(upstream_port)], directory / "floor.log"
        )
        processes.append(floor)
        wait_for_health(floor, port, directory / "floor.log")
        url = f"http://{HOST}:{port}/v1/chat/completions"
        for concurrency in (LOW, HIGH):
            run_load(url, chat_body(False), concurrency, args.warmup)
            before = cpu_seconds(floor.pid)
            result = run_load(url, chat_body(False), concurrency, args.duration)
            served = result.requests - result.errors
            cpu = (cpu_seconds(floor.pid) - before) * 1e6 / served if served else None
            results.append(
                {
                    "concurrency": concurrency,
                    "rps": result.rps,
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                    "errors": result.errors,
                    "cpu_us_per_request": cpu,
                }
            )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if args.json:
        print(json.dumps({"date": stamp, "nproc": os.cpu_count(), "runs": results}, indent=2))
        return
    print(f"{stamp}: bare ASGI proxy on Hypercorn + uvloop + aiohttp, {args.duration:g} s runs\n")
    print("| concurrency | req/s | p50 ms | p99 ms | errors | CPU µs/req |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        used = "n/a" if r["cpu_us_per_request"] is None else f"{r['cpu_us_per_request']:,.0f}"
        latency = f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f}"
        print(f"| {r['concurrency']} | {r['rps']:,.0f} | {latency} | {r['errors']} | {used} |")


if __name__ == "__main__":
    main()
