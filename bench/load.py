"""A bounded HTTP load generator: fixed concurrency, fixed duration, POST of one JSON body.

`wrk` (the Debian package) is used when it is on PATH: a Lua script sets the method, body and
content type, and `--latency` prints the percentiles that are parsed here. Otherwise a Python
aiohttp loop with N concurrent workers (one keep-alive connection each) runs for the same duration
and records every request's latency. `headers` are sent with every request; with `numbered`, the
body's one `%s` is each request's own number instead (`<wrk thread>-<serial>`), so no two requests
of a run are the same (a response cache sees every one as new).

Both are closed-loop generators: a worker sends its next request only when the previous answer
has arrived, so a stall delays the requests that would have been sent during it and they are never
measured (coordinated omission). The percentiles are those of the requests that were sent, which is
fine for comparing a direct call with a call through the gateway under the same generator, but they
understate the tail a steady open-loop arrival rate would see.

Usage: `python bench/load.py URL --body '{"model": "bench", ...}' --concurrency 50 --duration 10`
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import aiohttp

Tool = Literal["auto", "wrk", "python"]

MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 1000
MAX_PYTHON_SAMPLES = 5_000_000
REQUEST_TIMEOUT_S = 10.0

LUA_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""
LUA_NUMBERED = """\
local head, tail, serial, threads = {head}, {tail}, 0, 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
request = function()
  serial = serial + 1
  return wrk.format(nil, nil, nil, head .. string.format("%d-%09d", id or 0, serial) .. tail)
end
"""

UNITS_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True, slots=True)
class LoadResult:
    """`requests` counts every answer, `errors` the failed ones; `rps` is successful answers per second."""

    tool: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


class LoadError(RuntimeError):
    """The generator could not run or its output could not be read."""


def exit_on_bad_window(parser: argparse.ArgumentParser, duration: float, warmup: float) -> None:
    """A bench's `--duration` and `--warmup` checked: out of range, one line naming the flag and
    exit code 2 (`parser.exit`)."""
    if not 0 < duration <= MAX_DURATION_S:
        parser.exit(2, f"error: --duration: must be within (0, {MAX_DURATION_S:g}] s, got {duration:g}\n")
    if not 0 <= warmup <= MAX_DURATION_S:
        parser.exit(2, f"error: --warmup: must be within [0, {MAX_DURATION_S:g}] s, got {warmup:g}\n")


def check_bounds(url: str, concurrency: int, duration: float) -> None:
    if not url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
        raise LoadError(f"refusing a non-loopback target: {url}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadError(f"concurrency must be within 1..{MAX_CONCURRENCY}")
    if not 0 < duration <= MAX_DURATION_S:
        raise LoadError(f"duration must be within (0, {MAX_DURATION_S}] seconds")


def run_load(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    tool: Tool = "auto",
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    numbered: bool = False,
) -> LoadResult:
    """Load `url` with `concurrency` connections for `duration` seconds and return what was seen."""
    check_bounds(url, concurrency, duration)
    if numbered and body.count(b"%s") != 1:
        raise LoadError("a numbered body holds exactly one %s")
    sent = {"Content-Type": "application/json", **(headers or {})}
    if tool == "wrk" or (tool == "auto" and shutil.which("wrk")):
        return run_wrk(url, body, concurrency, duration, threads, sent, numbered)
    return run_python(url, body, concurrency, duration, sent, numbered)


# --- wrk -----------------------------------------------------------------------------------------


def lua_string(data: bytes) -> str:
    """`data` as a Lua string literal (decimal escapes for anything but printable ASCII)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b}" for b in data) + '"'


def lua_script(body: bytes, headers: Mapping[str, str], numbered: bool) -> str:
    head, _, tail = body.partition(b"%s")
    script = LUA_SCRIPT.format(body=lua_string(body))
    script += "".join(
        f"wrk.headers[{lua_string(k.encode())}] = {lua_string(v.encode())}\n" for k, v in headers.items()
    )
    return script + (LUA_NUMBERED.format(head=lua_string(head), tail=lua_string(tail)) if numbered else "")


def run_wrk(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    threads: int,
    headers: Mapping[str, str],
    numbered: bool = False,
) -> LoadResult:
    threads = max(1, min(threads, concurrency))
    with tempfile.TemporaryDirectory(prefix="tfgw-bench-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers, numbered))
        command = [
            "wrk",
            f"--threads={threads}",
            f"--connections={concurrency}",
            f"--duration={max(1, round(duration))}s",
            f"--timeout={REQUEST_TIMEOUT_S:g}s",
            "--latency",
            f"--script={script}",
            url,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"wrk did not finish within {duration + 30:g} s") from exc
    if done.returncode != 0:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout, concurrency)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def to_ms(value: str, unit: str) -> float:
    return float(value) * UNITS_TO_MS[unit]


def parse_wrk(output: str, concurrency: int) -> LoadResult:
    """Read requests, duration, errors and the 50%/99% lines of `wrk --latency` output."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if not (total and p50 and p99):
        raise LoadError(f"could not parse wrk output:\n{output}")
    requests = int(total.group(1))
    errors = min(requests, wrk_errors(output))
    elapsed_s = to_ms(total.group(2), total.group(3)) / 1000.0
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        duration_s=elapsed_s,
        requests=requests,
        errors=errors,
        rps=rate(requests - errors, elapsed_s),
        p50_ms=to_ms(p50.group(1), p50.group(2)),
        p99_ms=to_ms(p99.group(1), p99.group(2)),
    )


def wrk_errors(output: str) -> int:
    """Non-2xx/3xx answers plus socket errors (connect, read, write, timeout)."""
    errors = 0
    status = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if status:
        errors += int(status.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return errors


# --- Python fallback -----------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    latencies: list[float]
    errors: int = 0


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Iterator[bytes],
    headers: Mapping[str, str],
    deadline: float,
    tally: Tally,
) -> None:
    while time.perf_counter() < deadline and len(tally.latencies) < MAX_PYTHON_SAMPLES:
        start = time.perf_counter()
        try:
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
                ok = resp.status < 400
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        if ok:
            tally.latencies.append(time.perf_counter() - start)
        else:
            tally.errors += 1


async def python_load(
    url: str, bodies: Iterator[bytes], headers: Mapping[str, str], concurrency: int, duration: float
) -> tuple[Tally, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    tally = Tally(latencies=[])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        start = time.perf_counter()
        deadline = start + duration
        workers = [worker(session, url, bodies, headers, deadline, tally) for _ in range(concurrency)]
        await asyncio.wait_for(asyncio.gather(*workers), timeout=duration + REQUEST_TIMEOUT_S + 5)
        elapsed = time.perf_counter() - start
    return tally, elapsed


def percentile_ms(sorted_seconds: list[float], pct: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_seconds:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_seconds)))
    return sorted_seconds[rank - 1] * 1000.0


def run_python(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    headers: Mapping[str, str] | None = None,
    numbered: bool = False,
) -> LoadResult:
    head, _, tail = body.partition(b"%s")
    bodies = (head + b"0-%09d" % n + tail for n in itertools.count(1)) if numbered else itertools.repeat(body)
    load = python_load(url, bodies, headers or {"Content-Type": "application/json"}, concurrency, duration)
    try:
        import uvloop

        tally, elapsed = uvloop.run(load)
    except ImportError:
        tally, elapsed = asyncio.run(load)
    latencies = sorted(tally.latencies)
    done = len(latencies) + tally.errors
    return LoadResult(
        tool="python",
        concurrency=concurrency,
        duration_s=elapsed,
        requests=done,
        errors=tally.errors,
        rps=rate(len(latencies), elapsed),
        p50_ms=percentile_ms(latencies, 50),
        p99_ms=percentile_ms(latencies, 99),
    )


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("url", help="a loopback URL, e.g. http://127.0.0.1:9000/v1/chat/completions")
    parser.add_argument(
        "--body", default='{"model": "bench", "messages": [{"role": "user", "content": "Hi"}]}'
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    args = parser.parse_args(argv)
    try:
        result = run_load(
            args.url, args.body.encode(), args.concurrency, args.duration, args.tool, args.threads
        )
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
