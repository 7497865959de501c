"""What a request costs, split: the floor, tfgw with tracing off, tfgw with it on, in instructions.

    python bench/split.py                        # JSON, streams, paced streams (about 6 minutes)
    python bench/split.py --kinds json,stream --requests 100 --json

Each server in its turn runs under callgrind (`callgrind.py`) with nothing else up but the one
upstream it forwards to: the floor (`framework_floor.py --serve-quart`: a bare Quart app on
Hypercorn + uvloop relaying with tfgw's aiohttp session), `tfgw serve` with tracing off
(`untraced`: `[tracing] enabled = false`; auth, the model's plan, the provider call and the relay
as ever, a stream's events still read for the span's fold) and with it on (`tfgw`: the same plus the
spans, encoded and written to the trace log). One key, nothing of the policy. Each gets the same
chat completions, `--requests` sequential ones a kind on one connection after 20 not counted:
`json`; `stream`, 20 chunks and the usage chunk from the zero-delay upstream (the whole stream
comes in one read); and `paced`, the same stream from an upstream that writes each event
`--pace-ms` after the last (each event a read of its own; under valgrind a server takes a few ms
a read, hence the default of 30). Instruction counts repeat to about 1 % and do not move with the
VM's speed. The report sets each server against the one before: what tfgw's work costs over the
floor, how much of it is the trace, and, from `paced` - `stream`, what one more read costs each.
Everything binds 127.0.0.1; every process is stopped on exit, ^C and errors.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind
import policy_ab
from floor import Endpoint, start_upstream
from run import BENCH_DIR, BenchError, free_port, log_tail, progress, running, tfgw_command

SERVERS = ("floor", "untraced", "tfgw")
KINDS = ("json", "stream", "paced")
#: the upstream's events of a stream: 20 chunks, the usage chunk and `[DONE]`, each a write when paced
EVENTS = 22


def server_command(server: str, directory: Path, upstream: Endpoint, port: int) -> list[str]:
    """`server` under callgrind (its dumps in `directory`), forwarding to `upstream`."""
    counted = callgrind.valgrind_command(directory)
    if server == "floor":
        floor = [sys.executable, str(BENCH_DIR / "framework_floor.py"), "--serve-quart", str(port)]
        return [*counted, *floor, str(upstream.port), str(upstream.port)]
    traces = directory / f"traces-{server}-{port}"
    text = policy_ab.config_text(port, upstream, traces, False, polled=True, tracing=server != "untraced")
    config = directory / f"{server}-{port}.toml"
    config.write_text(text)
    return [*counted, *tfgw_command(None), "serve", "--config", str(config), "--port", str(port)]


def count(
    server: str, directory: Path, upstream: Endpoint, kinds: list[str], requests: int
) -> dict[str, float]:
    """`server` started under callgrind on `upstream`: instructions a request of each of `kinds`
    (sent as `policy_ab`'s chat completions: a paced stream is a stream), then stopped."""
    counted: dict[str, float] = {}
    with running([]) as processes:
        port = free_port()
        log = directory / f"{server}-{port}.log"
        served = callgrind.serve_under_callgrind(
            server_command(server, directory, upstream, port), port, log, processes
        )
        dumps = itertools.count(1)
        try:
            for kind in kinds:
                sent = "json" if kind == "json" else "stream"
                policy_ab.send(port, "none", sent, callgrind.WARMUP)
                callgrind.zero(served)
                policy_ab.send(port, "none", sent, requests)
                dump = directory / f"callgrind.{served.pid}.{next(dumps)}"
                counted[kind] = callgrind.dumped_instructions(served, dump) / requests
                progress(f"{server:8} {kind:6} {counted[kind]:12,.0f} instructions a request")
        except (OSError, subprocess.SubprocessError) as exc:
            raise BenchError(f"callgrind_control failed: {exc}\n{log_tail(log)}") from exc
    return counted


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{server: {kind: instructions a request}}; the paced kind on an upstream of its own."""
    counted: dict[str, dict[str, float]] = {server: {} for server in SERVERS}
    zero_delay = [kind for kind in args.kinds if kind != "paced"]
    paced = ["paced"] * ("paced" in args.kinds)
    groups = [(0.0, zero_delay, args.requests), (args.pace_ms, paced, args.paced_requests)]
    with tempfile.TemporaryDirectory(prefix="tfgw-split-") as tmp:
        directory = Path(tmp)
        for pace_ms, kinds, requests in groups:
            if not kinds:
                continue
            with running([]) as processes:
                upstream = start_upstream(directory, f"upstream-{pace_ms:g}", pace_ms, processes)
                for server in SERVERS:
                    counted[server] |= count(server, directory, upstream, kinds, requests)
    return counted


def report(counted: dict[str, dict[str, float]], kinds: list[str]) -> dict[str, Any]:
    """Per kind: each server's instructions, tfgw's excess over the floor split into the untraced
    work and the trace; with `stream` and `paced` both, what one more read of a stream costs."""
    rows = []
    for kind in kinds:
        floor, untraced, tfgw = (counted[s][kind] for s in SERVERS)
        excess = tfgw - floor
        rows.append(
            {
                "kind": kind,
                **{server: counted[server][kind] for server in SERVERS},
                "tfgw_over_floor": tfgw / floor,
                "untraced_minus_floor": untraced - floor,
                "tfgw_minus_untraced": tfgw - untraced,
                "trace_share_of_excess": (tfgw - untraced) / excess if excess else None,
            }
        )
    per_read = None
    if "stream" in kinds and "paced" in kinds:
        per_read = {s: (counted[s]["paced"] - counted[s]["stream"]) / (EVENTS - 1) for s in SERVERS}
    return {"rows": rows, "per_read": per_read}


def _n(value: float) -> str:
    return f"{value:,.0f}"


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    columns = [
        "kind",
        "floor",
        "tfgw untraced",
        "tfgw",
        "tfgw / floor",
        "untraced - floor",
        "tfgw - untraced",
    ]
    head = "| " + " | ".join([*columns, "the trace's share"]) + " |"
    lines = [
        f"Instructions a request under callgrind, {args.requests} sequential requests a kind and server"
        + (f" ({args.paced_requests} paced, {args.pace_ms:g} ms apart)" if "paced" in args.kinds else "")
        + ":",
        "",
        head,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        share = row["trace_share_of_excess"]
        cells = [row["kind"], *(_n(row[s]) for s in SERVERS), f"{row['tfgw_over_floor']:.2f}"]
        cells += [f"{row['untraced_minus_floor']:+,.0f}", f"{row['tfgw_minus_untraced']:+,.0f}"]
        cells.append("n/a" if share is None else f"{share:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    if per_read := result["per_read"]:
        each = ", ".join(f"{server} {_n(per_read[server])}" for server in SERVERS)
        lines += ["", f"One more read of a stream ((paced - stream) / {EVENTS - 1}): {each} instructions."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="json, stream, paced (default all three)")
    parser.add_argument("--requests", type=int, default=200, help="a server's, JSON and stream (default 200)")
    parser.add_argument("--paced-requests", type=int, default=50, help="a server's, paced (default 50)")
    parser.add_argument("--pace-ms", type=float, default=30.0, help="ms between paced events (default 30)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or not set(args.kinds) <= set(KINDS):
        parser.exit(2, f"error: --kinds takes json, stream and paced, got {','.join(args.kinds)!r}\n")
    if args.requests < 1 or args.paced_requests < 1 or not 1 <= args.pace_ms <= 1000:
        parser.exit(2, "error: --requests, --paced-requests must be at least 1, --pace-ms within 1..1000\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = report(measure(args), args.kinds)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"python": platform.python_version(), "nproc": os.cpu_count(), **result}, indent=1))
    else:
        print(markdown(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
