"""Python bytecodes a request, by package: the floor and tfgw side by side, to the bytecode.

    python bench/bytecodes.py                 # the floor, tfgw, tfgw with all the policy: JSON and stream
    python bench/bytecodes.py --requests 50 --top 20
    python bench/bytecodes.py --json

Each server runs under `opcount.py` (`sys.settrace` opcode events), in turn: the floor
(`framework_floor.py --serve-quart`: a bare Quart app on Hypercorn + uvloop forwarding with tfgw's
aiohttp session), `tfgw serve` with nothing of the policy configured (`none`: one key, tracing on)
and with all of it (`policy`: `policy_ab.py`'s config, the key's rpm, tpm and daily budget, the
model's cache, two input guardrails; every request a cache miss that is stored). Each sends the
same chat completion, JSON and streamed (20 chunks and the usage chunk), `--requests` times one
after another on one connection after 20 not counted, every request distinct. The counts do not
depend on the machine's speed or load: they say which package a request's Python work is in, and
what tfgw does that the floor does not. What they leave out: C (the regular expressions, orjson,
the sockets, the kernel) and the exporter child, which `policy_ab.py --callgrind` and
`export_cpu.py` count in instructions.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policy_ab
from floor import start_upstream
from run import BENCH_DIR, BenchError, free_port, progress, running, start, wait_for_health

from tfgw.serving import ServeOptions

SERVERS = ("floor", "none", "policy")
KINDS = ("json", "stream")
WARMUP = 20


def package(name: str) -> str:
    """The package a `file:line:function` of `opcount.py` is in: `tfgw/<subpackage>`, the
    distribution's top-level name, or `stdlib:<module>`."""
    path = name.split(":", 1)[0]
    if path.startswith("tfgw/"):
        parts = path.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else "tfgw"
    if path.startswith("<"):
        return "other"
    top = path.split("/", 1)[0].removesuffix(".py")
    return top if "/" in path and not _stdlib(top) else f"stdlib:{top}"


def _stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names


def server_command(server: str, directory: Path, upstream: Any, port: int) -> list[str]:
    out = directory / f"{server}.counts"
    counted = [sys.executable, str(BENCH_DIR / "opcount.py"), str(out)]
    if server == "floor":
        floor = str(BENCH_DIR / "framework_floor.py")
        return [*counted, floor, "--serve-quart", str(port), str(upstream.port), str(upstream.port)]
    config = directory / f"{server}.toml"
    traces = directory / f"traces-{server}"
    config.write_text(policy_ab.config_text(port, upstream, traces, server == "policy", polled=True))
    return [*counted, "-m", "tfgw.serving", ServeOptions(config=str(config), port=port).to_json()]


def count(process: Any, out: Path, port: int, kind: str, requests: int) -> dict[str, int]:
    """The bytecodes of `requests` requests of `kind` (after WARMUP), per function."""
    policy_ab.send(port, "policy", kind, WARMUP)
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.3)  # the handler runs between two bytecodes of the main thread: soon, not at once
    policy_ab.send(port, "policy", kind, requests)
    time.sleep(0.5)  # the trace log encodes the last traces between requests, on the event loop
    done = out.with_name(out.name + ".done")
    process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not done.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"{out.name}: no counts written within 30 s")
        time.sleep(0.05)
    done.unlink()
    return dict(json.loads(out.read_text()))


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, int]]]:
    """{server: {kind: {function: bytecodes in all the requests}}}."""
    counted: dict[str, dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="tfgw-bytecodes-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream = start_upstream(directory, "upstream", args.pace_ms, processes)
        for server in SERVERS:
            port, log = free_port(), directory / f"{server}.log"
            process = start(server_command(server, directory, upstream, port), log)
            processes.append(process)
            wait_for_health(process, port, log)
            out = directory / f"{server}.counts"
            counted[server] = {kind: count(process, out, port, kind, args.requests) for kind in KINDS}
            each = (f"{kind} {sum(n.values()) / args.requests:,.0f}" for kind, n in counted[server].items())
            progress(f"{server}: bytecodes a request: " + ", ".join(each))
    return counted


def per_package(functions: dict[str, int], requests: int) -> dict[str, float]:
    totals: collections.Counter[str] = collections.Counter()
    for name, n in functions.items():
        totals[package(name)] += n
    return {name: n / requests for name, n in totals.most_common()}


def difference(more: dict[str, int], less: dict[str, int], requests: int) -> dict[str, float]:
    """Per function, `more` - `less`, a request."""
    return {name: (more.get(name, 0) - less.get(name, 0)) / requests for name in more.keys() | less.keys()}


def report(counted: dict[str, dict[str, dict[str, int]]], requests: int, top: int) -> dict[str, Any]:
    packages = {kind: {s: per_package(counted[s][kind], requests) for s in SERVERS} for kind in KINDS}
    functions = {}
    for kind in KINDS:
        none = counted["none"][kind]
        tfgw = {name: n / requests for name, n in none.items() if name.startswith("tfgw/")}
        extra = difference(counted["policy"][kind], none, requests)
        functions[kind] = {
            "tfgw": sorted(tfgw.items(), key=lambda kv: (-kv[1], kv[0]))[:top],
            "policy_minus_none": sorted(extra.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top],
        }
    return {"requests": requests, "packages": packages, "functions": functions}


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def packages_table(kind: str, by_server: dict[str, dict[str, float]]) -> list[str]:
    """One row a package (of at least 10 bytecodes a request somewhere), the largest first."""
    names = sorted(
        set().union(*by_server.values()), key=lambda p: -max(s.get(p, 0) for s in by_server.values())
    )
    lines = [
        row([f"{kind}: package", *SERVERS, "none - floor"]),
        row(["---", "---:", "---:", "---:", "---:"]),
    ]
    for name in names:
        values = [by_server[s].get(name, 0.0) for s in SERVERS]
        if max(values) >= 10:
            lines.append(row([name, *(f"{v:,.0f}" for v in values), f"{values[1] - values[0]:+,.0f}"]))
    totals = [sum(by_server[s].values()) for s in SERVERS]
    cells = [f"**{v:,.0f}**" for v in totals]
    return [*lines, row(["**total**", *cells, f"**{totals[1] - totals[0]:+,.0f}**"]), ""]


def functions_table(kind: str, tables: dict[str, list[tuple[str, float]]]) -> list[str]:
    head = [f"{kind}: tfgw's functions (none)", "bytecodes", f"{kind}: policy - none", "bytecodes"]
    lines = [row(head), row(["---", "---:", "---", "---:"])]
    for (a, x), (b, y) in zip(tables["tfgw"], tables["policy_minus_none"], strict=False):
        lines.append(row([f"`{a}`", f"{x:,.0f}", f"`{b}`", f"{y:+,.0f}"]))
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Bytecodes a request, {result['requests']} sequential requests a server and kind:", ""]
    for kind, by_server in result["packages"].items():
        lines += packages_table(kind, by_server)
    for kind, tables in result["functions"].items():
        lines += functions_table(kind, tables)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200, help="requests a server and kind (default 200)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of Markdown")
    parser.add_argument(
        "--pace-ms",
        type=float,
        default=0.0,
        help="ms between a stream's events upstream (default 0: one write)",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.top < 0:
        parser.exit(2, "error: --requests must be at least 1 and --top at least 0\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = report(measure(args), args.requests, args.top)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
