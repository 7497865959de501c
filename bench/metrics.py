"""What metrics cost (docs/metrics.md), in four parts:

1. `sdk`: one request's worth of OpenTelemetry SDK instrument calls (12: `counter.add` and
   `histogram.record` with attributes) against `Aggregate.add` of one row, CPU µs each.
2. `rows`: `summarize_decoded` (what the gateway runs per request, after its answer) on three
   request shapes, this tree against `--rows-before REV`'s `tfgw/tracing/rows.py`.
3. `ingest`: the deriver's whole cost per row (read, parse, aggregate) over a rows file.
4. `scrape`: a real `tfgw serve` whose exporter derives 1,000,000 requests across 200 models and
   50 keys, written as rows files after it started; the time until `/metrics` counts them all,
   the snapshot's size and write time, and the time of a scrape (best and median of 20).

    python bench/metrics.py                    # everything, about a minute and a half
    python bench/metrics.py --parts sdk,rows --rows-before HEAD~3
    python bench/metrics.py --requests 100000  # a smaller scrape part
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.gateway import Gateway  # noqa: E402
from tests.samples import Failure, Request, trace_line  # noqa: E402
from tfgw.metrics.aggregate import Aggregate  # noqa: E402
from tfgw.metrics.follow import RowsFollower  # noqa: E402
from tfgw.metrics.prometheus import render  # noqa: E402
from tfgw.tracing import otlp  # noqa: E402
from tfgw.tracing.rows import summarize_decoded  # noqa: E402


def cpu_us(fn: Any, n: int, rounds: int = 5) -> float:
    """The best of `rounds` of `n` calls, CPU µs a call."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def row(i: int, rand: random.Random | None = None) -> dict[str, Any]:
    """A full row of a chat request to model `i % 200` by key `i // 200 % 50` (a stream every fourth)."""
    model, key = f"model-{i % 200}", f"key-{i // 200 % 50}"  # every one of the 10,000 pairs
    stream = i % 4 == 0
    return {
        "time": 1_704_067_200_000_000_000 + i, "trace_id": f"{i:032x}", "name": "POST /v1/chat/completions",
        "model": model, "response_model": model, "provider": f"p{i % 5}", "key": key,
        "status": "ok" if i % 20 else "error", "http_status": 200 if i % 20 else 503,
        "error_type": None if i % 20 else "503",
        "duration_ms": 50.0 + (rand.random() if rand else 0.5) * 2000,
        "ttft_ms": 120.0 if stream else None, "tokens_in": 12 + i % 1000, "tokens_out": 48 + i % 300,
        "cost": 0.0001, "stream": stream, "attempts": 1, "finish_reason": "stop", "spans": 5 if stream else 4,
        "project": "bench", "route": "/v1/chat/completions", "operation": "chat", "provider_system": "openai",
        "tokens_cached": None, "tokens_reasoning": None, "cache_hit": None, "retries": 0, "fallbacks": 0,
        "chunks": 20 if stream else None, "guardrails": None, "refusal": None,
    }  # fmt: skip


def sdk_part() -> dict[str, float]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("tfgw")
    requests, tokens, cost = (meter.create_counter(n) for n in ("tfgw.requests", "tfgw.tokens", "tfgw.cost"))
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    usage = meter.create_histogram("gen_ai.client.token.usage")

    def instruments(i: int) -> None:
        r = row(i)
        by_key = {"model": r["model"], "provider": r["provider"], "key": r["key"]}
        requests.add(1, {**by_key, "route": r["route"], "status": r["status"], "code": r["http_status"]})
        for kind in ("input", "output", "cached", "reasoning"):
            tokens.add(10, {**by_key, "type": kind})
        cost.add(r["cost"], by_key)
        genai = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": r["model"],
        }
        duration.record(r["duration_ms"] / 1000, genai)
        usage.record(r["tokens_in"], {**genai, "gen_ai.token.type": "input"})
        usage.record(r["tokens_out"], {**genai, "gen_ai.token.type": "output"})
        requests.add(1, {"model": r["model"]})
        requests.add(1, {"model": r["model"], "x": "y"})
        requests.add(1, {"model": r["model"], "y": "z"})

    aggregate = Aggregate(0)
    rows = [row(i) for i in range(20_000)]
    return {
        "sdk_instruments_us": cpu_us(instruments, 20_000, 3),
        "aggregate_add_us": cpu_us(lambda i: aggregate.add(rows[i]), 20_000, 3),
        "building_the_row_us": cpu_us(row, 20_000, 3),
    }


def rows_part(before: str | None) -> dict[str, Any]:
    def decoded(line: dict[str, Any]) -> list[Any]:
        return [(s, otlp.decode_attributes(s.get("attributes") or ())) for _, s in otlp.spans_of(line)]

    shapes = {
        "json": Request(1),
        "stream": Request(2, stream=True),
        "fallback": Request(3, failures=(Failure(provider="anthropic"),)),
    }
    functions = {"after": summarize_decoded}
    if before:
        functions["before"] = _rows_of(before)
    out: dict[str, Any] = {}
    for name, req in shapes.items():
        spans = decoded(trace_line(req))
        for label, fn in functions.items():
            out[f"{name}_{label}_us"] = round(cpu_us(lambda _, f=fn, s=spans: f(s, 0, "p"), 50_000, 7), 2)
    return out


def _rows_of(rev: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{rev}:tfgw/tracing/rows.py"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "rows_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("rows_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rows_before"] = module
    spec.loader.exec_module(module)
    return module.summarize_decoded


def write_rows(directory: Path, requests: int, files: int = 4) -> int:
    """`requests` rows in `files` rows files, as the workers write them; their total size."""
    rand = random.Random(7)
    size = 0
    per = requests // files
    for f in range(files):
        path = directory / f"tfgw-20240101-000000-{1000 + f}-0001.rows"
        with path.open("wb") as out:
            for i in range(f * per, (f + 1) * per):
                line = orjson.dumps({**row(i, rand), "end": i}) + b"\n"
                out.write(line)
                size += len(line)
    return size


def ingest_part(requests: int = 200_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        size = write_rows(Path(tmp), requests)
        follower, aggregate = RowsFollower(Path(tmp), {}), Aggregate(0)
        t0 = time.process_time()
        while True:
            rows = list(follower.poll())
            if not rows:
                break
            for r in rows:
                aggregate.add(r)
        cpu = time.process_time() - t0
        t1 = time.perf_counter()
        text = render(aggregate)
        render_s = time.perf_counter() - t1
    return {
        "rows": requests,
        "row_bytes": round(size / requests),
        "ingest_us_per_row": round(cpu / requests * 1e6, 2),
        "render_ms": round(render_s * 1000, 1),
        "snapshot_bytes": len(text),
    }


def scrape_part(requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tfgw.toml"
        traces = Path(tmp) / "traces"
        config.write_text(
            f'[tracing]\ndir = "{traces}"\n[providers.mock]\nkind = "mock"\n'
            '[[models]]\nname = "demo"\ntargets = [{ provider = "mock", model = "demo-1" }]\n'
        )
        with Gateway(config) as gw:
            traces.mkdir(exist_ok=True)
            written = time.perf_counter()
            write_rows(traces, requests)
            wrote_s = time.perf_counter() - written
            counted_s = _until_counted(gw, requests, written)
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                body = httpx.get(f"{gw.url}/metrics", timeout=10).content
                times.append(time.perf_counter() - t0)
        aggregate = Aggregate(0)
        for i in range(requests):
            aggregate.add(row(i))
        prefixes: Any = {}
        t0 = time.perf_counter()
        text = render(aggregate, prefixes)
        render_s = time.perf_counter() - t0
        aggregate.add(row(0))
        t0 = time.perf_counter()
        render(aggregate, prefixes)  # what the deriver does every second while requests come
        rewrite_s = time.perf_counter() - t0
    return {
        "requests": requests,
        "write_rows_s": round(wrote_s, 1),
        "derived_within_s": round(counted_s, 1),
        "snapshot_bytes": len(body),
        "snapshot_render_ms": round(render_s * 1000, 1),
        "snapshot_rewrite_ms": round(rewrite_s * 1000, 1),
        "snapshot_lines": text.count("\n"),
        "scrape_best_ms": round(min(times) * 1000, 1),
        "scrape_median_ms": round(statistics.median(times) * 1000, 1),
    }


def _until_counted(gw: Gateway, requests: int, since: float, timeout: float = 600) -> float:
    """Seconds from `since` until `/metrics` counts `requests` requests."""
    while time.perf_counter() - since < timeout:
        text = httpx.get(f"{gw.url}/metrics", timeout=10).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tfgw_requests_total")
        )
        if counted >= requests:
            return time.perf_counter() - since
        time.sleep(0.5)
    raise RuntimeError(f"/metrics did not count {requests} requests within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="sdk,rows,ingest,scrape")
    parser.add_argument(
        "--rows-before", default=None, metavar="REV", help="compare rows.py with this revision's"
    )
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests the scrape part derives")
    args = parser.parse_args()
    parts = args.parts.split(",")
    out: dict[str, Any] = {}
    if "sdk" in parts:
        out["sdk"] = {k: round(v, 2) for k, v in sdk_part().items()}
    if "rows" in parts:
        out["rows"] = rows_part(args.rows_before)
    if "ingest" in parts:
        out["ingest"] = ingest_part()
    if "scrape" in parts:
        out["scrape"] = scrape_part(args.requests)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
