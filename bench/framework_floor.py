"""How much of the gateway's cost is the web framework: the same proxy call through a bare ASGI app.

    python bench/framework_floor.py            # ~40 s: c=1 and c=50, non-streaming

Starts `bench/fake_upstream.py`, then a minimal proxy in its own process: a plain ASGI callable
(no Quart, no routing, no request objects) on Hypercorn with uvloop, forwarding each POST body to
the fake upstream with the same aiohttp session settings as tfgw and sending the answer back.
It does none of tfgw's work (no auth, no model resolution, no tracing), so its figures are a floor
for what Hypercorn + h11 + aiohttp cost; the difference to `run.py`'s tfgw rows is Quart plus
everything tfgw does. Everything stays on 127.0.0.1; both processes are stopped on exit.

It also holds the Quart floor `bench/floor.py` measures tfgw against (`--serve-quart PORT
UPSTREAM_PORT PACED_PORT`, started by floor.py): a bare Quart app with tfgw's Quart settings, on
Hypercorn + uvloop bound as tfgw binds, one POST route per upstream that forwards the body with
tfgw's own aiohttp session (`tfgw.providers.http.create_session`) and relays the answer, JSON as
one body and a stream as one response chunk per upstream read (`resp.content.iter_any()`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import run_load
from run import (
    BENCH_DIR,
    CHAT_PATH,
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

PACED_PREFIX = "/paced"  # the Quart floor's route to the paced upstream


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


def quart_floor_app(upstreams: dict[str, str]) -> Any:
    """One POST route per upstream (`prefix + /v1/chat/completions`), forwarding the body as is."""
    from quart import Quart, Response, request

    from tfgw.providers.http import create_session

    app = Quart("floor")  # tfgw's settings (tfgw/gateway/app.py)
    app.config.update(MAX_CONTENT_LENGTH=10 * 1024 * 1024, RESPONSE_TIMEOUT=None, BODY_TIMEOUT=60)
    sessions: list[Any] = []
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench-not-a-real-key"}

    @app.before_serving
    async def open_session() -> None:
        sessions.append(create_session())

    @app.after_serving
    async def close_session() -> None:
        await sessions[0].close()

    @app.get("/healthz")
    async def healthz() -> Any:
        return Response(b'{"status":"ok"}', content_type="application/json")

    def route(upstream: str) -> Callable[[], Any]:
        async def relay() -> Any:
            resp = await sessions[0].post(upstream, data=await request.get_data(), headers=headers)
            content_type = resp.headers.get("content-type", "application/json")
            if not content_type.startswith("text/event-stream"):
                data = await resp.read()
                resp.release()
                return Response(data, status=resp.status, content_type=content_type)

            async def chunks() -> Any:
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            return Response(chunks(), status=resp.status, content_type=content_type)

        return relay

    for prefix, upstream in upstreams.items():
        app.add_url_rule(f"{prefix}{CHAT_PATH}", f"relay{prefix}", route(upstream), methods=["POST"])
    return app


def serve_quart_floor(port: int, upstream_port: int, paced_port: int) -> None:
    """The Quart floor on Hypercorn + uvloop, bound as tfgw binds, until SIGTERM (in the child process);
    `/paced/v1/chat/completions` goes to the upstream at `paced_port`."""
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    upstreams = {"": f"http://{HOST}:{upstream_port}{CHAT_PATH}"}
    upstreams[PACED_PREFIX] = f"http://{HOST}:{paced_port}{CHAT_PATH}"
    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.backlog = 2048
    config.accesslog = None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(quart_floor_app(upstreams), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-quart", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_floor(*args.serve)
        return
    if args.serve_quart:
        serve_quart_floor(*args.serve_quart)
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
