"""tfgw against the floor: the same chat calls direct, through a bare Quart proxy, and through tfgw.

    python bench/floor.py            # the whole matrix, about 5 minutes with the defaults
    python bench/floor.py --json     # the same as one JSON object

One run starts, all on 127.0.0.1: `bench/fake_upstream.py` twice, zero-delay (a whole stream in
one write) and `--pace-ms 1` (a stream's events about 1 ms apart, as providers stream); **the
floor**, a bare Quart proxy on Hypercorn + uvloop, one worker, forwarding the body with tfgw's
aiohttp session and relaying the answer one upstream read at a time, no auth, no tracing
(`bench/framework_floor.py --serve-quart`); and **tfgw**, `tfgw serve`, one worker, tracing on,
one export target of kind otlp, http/protobuf, at a span-counting receiver
(`bench/export_throughput.py --serve http`), so its exporter child delivers during the run.

Every scenario (JSON, a stream of 20 chunks + usage, a paced stream; several concurrencies) is
measured interleaved, direct once, then floor, tfgw, tfgw, floor (A B B A), each run after its own
warm-up. CPU is utime+stime of each process tree (tfgw's with its exporter) around the measured
window; RSS is each tree's after the load. After the JSON scenarios and after the streaming ones
the exporter is given time to catch up (polled, with a deadline) and the spans the receiver
counted are set against the requests tfgw answered. Last, `tfgw serve --workers 2` against one
worker at c=50, JSON, 1 2 2 1. Every process is stopped on exit, ^C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from framework_floor import PACED_PREFIX
from load import LoadError, LoadResult, exit_on_bad_window, run_load
from run import (
    BENCH_DIR,
    CHAT_PATH,
    CONFIG_TEMPLATE,
    HOST,
    BenchError,
    Settings,
    calibration_ms,
    chat_body,
    cpu_seconds,
    export_stats,
    fmt,
    free_port,
    log_tail,
    machine,
    otlp_receiver,
    progress,
    rss_mib,
    run_command,
    running,
    start,
    start_gateway,
    trace_log_stats,
    wait_for_health,
    wait_for_ready_line,
)

REPO = BENCH_DIR.parent
PACE_MS = 1.0
SETTLE_QUIET_S = 0.5  # the receiver's count unchanged this long once everything expected arrived
SETTLE_GIVE_UP_QUIET_S = 3.0  # ... or this long whatever arrived
SETTLE_DEADLINE_S = 30.0
#: before a run, tfgw's exporters are given this long to deliver what earlier runs left them
IDLE_DEADLINE_S = 30.0
#: ... and a status written this long after the wait began: the trace log's last lines are out
IDLE_AFTER_S = 0.2
SPANS_PER_REQUEST = {"json": 4, "stream": 5}  # SERVER, auth, model.resolve, chat (+ stream)
SPANS_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: str  # json | stream | paced
    concurrency: int

    @property
    def group(self) -> str:
        return "json" if self.kind == "json" else "stream"

    def body(self) -> bytes:
        model = "bench-paced" if self.kind == "paced" else "bench"
        return chat_body(self.kind != "json", model=model, usage=True)


NAMES = ("json-1", "json-10", "json-50", "stream-1", "stream-10", "stream-50", "paced-10", "paced-50")
SCENARIOS = {name: Scenario(name, name.split("-")[0], int(name.split("-")[1])) for name in NAMES}
WORKERS = Scenario("workers-50", "json", 50)

TARGETS: dict[str, tuple[str, str, float]] = {  # key: (what, ">=" or "<=" or "~", bound)
    "rps_ratio_json_c50": ("req/s tfgw / floor, JSON, c=50", ">=", 0.85),
    "rps_ratio_stream_c50": ("req/s tfgw / floor, stream (zero-delay), c=50", ">=", 0.75),
    "rps_ratio_paced_c50": ("req/s tfgw / floor, paced stream, c=50", ">=", 0.9),
    "added_p50_ms_json_c1": ("tfgw added p50 over direct, JSON, c=1 (ms)", "<=", 0.8),
    "added_p99_ms_json_c1": ("tfgw added p99 over direct, JSON, c=1 (ms)", "<=", 2.5),
    "rps_c50_over_c10_json": ("tfgw req/s c=50 / c=10, JSON (must not fall)", ">=", 1.0),
    "rps_c50_over_c10_stream": ("tfgw req/s c=50 / c=10, stream (must not fall)", ">=", 1.0),
    "rss_tfgw_minus_floor_mib": ("RSS tree tfgw - floor (MiB)", "<=", 40.0),
    "workers_2_over_1": ("req/s tfgw 2 workers / 1 worker, JSON, c=50", ">=", 1.6),
    "spans_per_json_request": ("spans delivered per JSON request", "~", 4.0),
    "spans_per_stream_request": ("spans delivered per streamed request", "~", 5.0),
}

EXTRA_CONFIG = """
[providers.paced]
kind = "openai"
base_url = "http://{host}:{paced_port}/v1"
api_key = "sk-bench-not-a-real-key"

[[models]]
name = "bench-paced"
targets = [{{ provider = "paced", model = "gpt-4o-mini" }}]
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }}

[otel.targets.bench]
kind = "otlp"
protocol = "http/protobuf"
endpoint = "{receiver}"
timeout = 2.0
"""


# --- the processes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Something measured: where it listens and whose process tree pays for it."""

    port: int
    pid: int
    log: Path


@dataclass(slots=True)
class Stack:
    directory: Path
    upstream: Endpoint
    paced: Endpoint
    floor: Endpoint
    tfgw: Endpoint
    received: Callable[[], int]  # spans the receiver has counted
    receiver: str  # its endpoint
    processes: list[Any]  # stopped when the run ends

    def url_and_pid(self, path: str, scenario: Scenario) -> tuple[str, int]:
        paced = scenario.kind == "paced"
        if path == "direct":
            target = self.paced if paced else self.upstream
            return f"http://{HOST}:{target.port}{CHAT_PATH}", target.pid
        if path == "floor":
            return f"http://{HOST}:{self.floor.port}{PACED_PREFIX * paced}{CHAT_PATH}", self.floor.pid
        return f"http://{HOST}:{self.tfgw.port}{CHAT_PATH}", self.tfgw.pid


def start_upstream(directory: Path, name: str, pace_ms: float, processes: list[Any]) -> Endpoint:
    port, log = free_port(), directory / f"{name}.log"
    command = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(port)]
    process = start([*command, "--pace-ms", f"{pace_ms:g}"], log, stdout_pipe=True)
    processes.append(process)
    wait_for_ready_line(process, log)
    return Endpoint(port, process.pid, log)


def start_floor(directory: Path, upstream: Endpoint, paced: Endpoint, processes: list[Any]) -> Endpoint:
    port, log = free_port(), directory / "floor.log"
    serve = ["--serve-quart", str(port), str(upstream.port), str(paced.port)]
    process = start([sys.executable, str(BENCH_DIR / "framework_floor.py"), *serve], log)
    processes.append(process)
    wait_for_health(process, port, log)
    return Endpoint(port, process.pid, log)


def start_tfgw(
    args: argparse.Namespace,
    directory: Path,
    upstreams: tuple[Endpoint, Endpoint],
    receiver: str,
    workers: int,
    processes: list[Any],
) -> Endpoint:
    """`tfgw serve` on its own config and trace log in `directory`, exporting to `receiver`."""
    directory.mkdir()
    port = free_port()
    text = CONFIG_TEMPLATE.format(
        host=HOST, port=port, upstream_port=upstreams[0].port, tracing="true", traces=directory / "traces"
    )
    text += EXTRA_CONFIG.format(host=HOST, paced_port=upstreams[1].port, receiver=receiver)
    config = directory / "tfgw.toml"
    config.write_text(text)
    log = directory / "tfgw.log"
    process = start_gateway(args, config, port, log, False, processes, workers=workers)
    return Endpoint(port, process.pid, log)


@contextlib.contextmanager
def stack(args: argparse.Namespace, directory: Path) -> Iterator[Stack]:
    """Everything of one run started, and stopped again whatever happens."""
    with otlp_receiver(directory) as (receiver, received), running([]) as processes:
        upstream = start_upstream(directory, "upstream", 0, processes)
        paced = start_upstream(directory, "upstream-paced", PACE_MS, processes)
        floor = start_floor(directory, upstream, paced, processes)
        tfgw = start_tfgw(args, directory / "tfgw", (upstream, paced), receiver, 1, processes)
        yield Stack(directory, upstream, paced, floor, tfgw, received, receiver, processes)


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloorRun:
    scenario: str
    path: str  # direct | floor | tfgw | tfgw-2w
    result: LoadResult
    cpu_s: float  # utime+stime of the path's process tree in the measured window
    answered: int  # successful answers, warm-up included (for spans per request)

    @property
    def served(self) -> int:
        return self.result.requests - self.result.errors

    @property
    def cpu_us_per_request(self) -> float | None:
        return self.cpu_s * 1e6 / self.served if self.served else None


def measure_run(scenario: Scenario, path: str, url: str, pid: int, settings: Settings) -> FloorRun:
    body, c = scenario.body(), scenario.concurrency
    answered = 0
    if settings.warmup > 0:
        warm = run_load(url, body, c, settings.warmup, settings.tool, settings.threads)
        answered = warm.requests - warm.errors
    before = cpu_seconds(pid)
    result = run_load(url, body, c, settings.duration, settings.tool, settings.threads)
    served = result.requests - result.errors
    run = FloorRun(scenario.name, path, result, cpu_seconds(pid) - before, answered + served)
    progress(
        f"{scenario.name:10} {path:8} {result.rps:9.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms  errors {result.errors}  CPU {fmt(run.cpu_us_per_request, 0)} µs/req"
    )
    return run


def scenario_runs(stack: Stack, scenario: Scenario, settings: Settings) -> list[FloorRun]:
    """Direct once, then floor, tfgw, tfgw, floor, each once tfgw's exporter is idle."""
    runs = []
    for path in ("direct", "floor", "tfgw", "tfgw", "floor"):
        url, pid = stack.url_and_pid(path, scenario)
        exporters_idle([stack.tfgw.port])
        runs.append(measure_run(scenario, path, url, pid, settings))
    return runs


def exporters_idle(ports: list[int]) -> None:
    """Wait (polled, `IDLE_DEADLINE_S`) until the exporter of each tfgw on `ports` has delivered all
    its trace log holds: every target's `pending_bytes` 0 in a status saved `IDLE_AFTER_S` or more
    after the wait began. Then no run shares the cores with the catch-up of the runs before it,
    which at nice 10 can last seconds past a c=50 run and fell on whatever ran next, the floor's
    runs included. Each run's own export still counts: in the tree's CPU of its window, and in
    the group's CPU "incl. catch-up"."""
    start_s, since = time.monotonic(), time.time() + IDLE_AFTER_S
    while time.monotonic() - start_s < IDLE_DEADLINE_S:
        targets = [t for port in ports for t in export_stats(port).values()]
        if all(t.get("pending_bytes") == 0 and (t.get("updated") or 0) >= since for t in targets):
            return
        time.sleep(0.05)


def settle(stack: Stack, before: int, written_before: int, spans_per_trace: int) -> tuple[int, int]:
    """(spans received, traces written) since `before`/`written_before`, once the exporter caught up:
    the receiver's count quiet for a moment after everything written arrived, or quiet for longer
    whatever arrived, or the deadline."""
    start_s = last_change = time.monotonic()
    received = stack.received() - before
    written = 0
    while time.monotonic() - start_s < SETTLE_DEADLINE_S:
        time.sleep(0.1)
        written = int(trace_log_stats(stack.tfgw.port).get("written", 0)) - written_before
        now = stack.received() - before
        if now != received:
            received, last_change = now, time.monotonic()
        quiet = time.monotonic() - last_change
        if quiet >= SETTLE_GIVE_UP_QUIET_S or (quiet >= SETTLE_QUIET_S and now >= written * spans_per_trace):
            break
    return received, written


def group_runs(
    stack: Stack, scenarios: list[Scenario], group: str, settings: Settings
) -> tuple[list[FloorRun], dict[str, Any]]:
    """The scenarios of one group, then what the exporter delivered for them."""
    before, cpu_before = stack.received(), cpu_seconds(stack.tfgw.pid)
    written_before = int(trace_log_stats(stack.tfgw.port).get("written", 0))
    runs = [run for scenario in scenarios for run in scenario_runs(stack, scenario, settings)]
    spans, written = settle(stack, before, written_before, SPANS_PER_REQUEST[group])
    answered = sum(run.answered for run in runs if run.path == "tfgw")
    cpu_s = cpu_seconds(stack.tfgw.pid) - cpu_before
    export = {
        "spans_delivered": spans,
        "requests_answered": answered,
        "traces_written": written,
        "spans_per_request": spans / answered if answered else None,
        "spans_per_trace": spans / written if written else None,
        "expected_spans_per_request": SPANS_PER_REQUEST[group],
        "tfgw_tree_cpu_us_per_request_with_export": cpu_s * 1e6 / answered if answered else None,
    }
    progress(f"{group}: {spans} spans delivered for {answered} requests ({written} traces written)")
    return runs, export


def workers_runs(args: argparse.Namespace, stack: Stack, settings: Settings) -> tuple[list[FloorRun], float]:
    """tfgw with two workers against one, c=50 JSON: 1, 2, 2, 1; and the 2-worker tree's RSS."""
    upstreams = (stack.upstream, stack.paced)
    two = start_tfgw(args, stack.directory / "tfgw-2w", upstreams, stack.receiver, 2, stack.processes)
    url = f"http://{HOST}:{two.port}{CHAT_PATH}"
    one_url, one_pid = stack.url_and_pid("tfgw", WORKERS)
    paths = {"tfgw": (one_url, one_pid), "tfgw-2w": (url, two.pid)}
    runs = []
    for path in ("tfgw", "tfgw-2w", "tfgw-2w", "tfgw"):
        exporters_idle([stack.tfgw.port, two.port])
        runs.append(measure_run(WORKERS, path, *paths[path], settings))
    return runs, rss_mib(two.pid)


# --- the report ----------------------------------------------------------------------------------


@dataclass(slots=True)
class FloorReport:
    date: str
    machine: dict[str, Any]
    duration_s: float
    warmup_s: float
    scenarios: list[str]
    runs: list[FloorRun] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    #: the floor's own figures for the targets that hold tfgw to itself, not to the floor
    floor_own: dict[str, float | None] = field(default_factory=dict)


def mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def aggregate(runs: list[FloorRun]) -> list[dict[str, Any]]:
    """One row per scenario and path: means over its runs, CPU over all its requests, and the
    latency added over the scenario's direct row."""
    keys = list(dict.fromkeys((run.scenario, run.path) for run in runs))
    rows: list[dict[str, Any]] = []
    for scenario, path in keys:
        mine = [run for run in runs if (run.scenario, run.path) == (scenario, path)]
        served = sum(run.served for run in mine)
        rows.append(
            {
                "scenario": scenario,
                "path": path,
                "concurrency": mine[0].result.concurrency,
                "rps": mean([run.result.rps for run in mine]),
                "rps_runs": [run.result.rps for run in mine],
                "p50_ms": mean([run.result.p50_ms for run in mine]),
                "p99_ms": mean([run.result.p99_ms for run in mine]),
                "errors": sum(run.result.errors for run in mine),
                "cpu_us_per_request": sum(run.cpu_s for run in mine) * 1e6 / served if served else None,
            }
        )
    for row in rows:
        for pct in ("p50_ms", "p99_ms"):
            value, base = row[pct], row_value(rows, row["scenario"], "direct", pct)
            added = value is not None and base is not None and row["path"] != "direct"
            row[f"added_{pct}"] = value - base if added else None
    return rows


def row_value(rows: list[dict[str, Any]], scenario: str, path: str, key: str) -> float | None:
    row = next((r for r in rows if (r["scenario"], r["path"]) == (scenario, path)), None)
    return None if row is None else row[key]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def target_values(report: FloorReport) -> dict[str, float | None]:
    rows, rss = report.rows, report.rss_mib

    def rps(scenario: str, path: str) -> float | None:
        return row_value(rows, scenario, path, "rps")

    tfgw_rss, floor_rss = rss.get("tfgw"), rss.get("floor")
    return {
        "rps_ratio_json_c50": ratio(rps("json-50", "tfgw"), rps("json-50", "floor")),
        "rps_ratio_stream_c50": ratio(rps("stream-50", "tfgw"), rps("stream-50", "floor")),
        "rps_ratio_paced_c50": ratio(rps("paced-50", "tfgw"), rps("paced-50", "floor")),
        "added_p50_ms_json_c1": row_value(rows, "json-1", "tfgw", "added_p50_ms"),
        "added_p99_ms_json_c1": row_value(rows, "json-1", "tfgw", "added_p99_ms"),
        "rps_c50_over_c10_json": ratio(rps("json-50", "tfgw"), rps("json-10", "tfgw")),
        "rps_c50_over_c10_stream": ratio(rps("stream-50", "tfgw"), rps("stream-10", "tfgw")),
        "rss_tfgw_minus_floor_mib": tfgw_rss - floor_rss if tfgw_rss and floor_rss else None,
        "workers_2_over_1": ratio(rps(WORKERS.name, "tfgw-2w"), rps(WORKERS.name, "tfgw")),
        "spans_per_json_request": report.export.get("json", {}).get("spans_per_request"),
        "spans_per_stream_request": report.export.get("stream", {}).get("spans_per_request"),
    }


def floor_own(report: FloorReport) -> dict[str, float | None]:
    """The floor's req/s at c=50 over c=10: whether the stack itself, on this machine and in this
    run, falls as concurrency rises (the two "must not fall" targets hold tfgw to its own c=10)."""

    def rps(scenario: str) -> float | None:
        return row_value(report.rows, scenario, "floor", "rps")

    return {
        "rps_c50_over_c10_json": ratio(rps("json-50"), rps("json-10")),
        "rps_c50_over_c10_stream": ratio(rps("stream-50"), rps("stream-10")),
    }


def check_targets(report: FloorReport) -> dict[str, Any]:
    """Every target with its value and verdict (`ok` None when its runs were not made)."""
    out = {}
    for key, value in target_values(report).items():
        what, op, bound = TARGETS[key]
        if value is None:
            ok = None
        elif op == ">=":
            ok = value >= bound
        elif op == "<=":
            ok = value <= bound
        else:
            ok = abs(value - bound) <= bound * SPANS_TOLERANCE
        out[key] = {"what": what, "value": value, "op": op, "bound": bound, "ok": ok}
    return out


def checkout() -> str:
    """The commit measured, and whether tfgw/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    try:
        commit, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "tfgw")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{commit or 'unknown'}{' + uncommitted changes under tfgw/' if dirty else ''}"


def bench(args: argparse.Namespace) -> FloorReport:
    settings = Settings(args.duration, args.warmup, args.tool, args.threads)
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    report = FloorReport(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine(tool, False) | {"checkout": checkout()},
        duration_s=args.duration,
        warmup_s=args.warmup,
        scenarios=[s.name for s in args.scenarios],
    )
    with tempfile.TemporaryDirectory(prefix="tfgw-floor-") as tmp, stack(args, Path(tmp)) as made:
        try:
            measure_all(args, made, settings, report)
        except (BenchError, LoadError):
            progress(
                f"tfgw log tail:\n{log_tail(made.tfgw.log)}\nfloor log tail:\n{log_tail(made.floor.log)}"
            )
            raise
    report.machine["calibration_ms_at_end"] = calibration_ms()
    report.rows = aggregate(report.runs)
    report.targets = check_targets(report)
    report.floor_own = floor_own(report)
    return report


def measure_all(args: argparse.Namespace, made: Stack, settings: Settings, report: FloorReport) -> None:
    for group in ("json", "stream"):
        scenarios = [s for s in args.scenarios if s.group == group]
        if scenarios:
            runs, report.export[group] = group_runs(made, scenarios, group, settings)
            report.runs += runs
    report.rss_mib = {
        "direct": rss_mib(made.upstream.pid),
        "direct_paced": rss_mib(made.paced.pid),
        "floor": rss_mib(made.floor.pid),
        "tfgw": rss_mib(made.tfgw.pid),
    }
    if not args.no_workers:
        runs, report.rss_mib["tfgw_2_workers"] = workers_runs(args, made, settings)
        report.runs += runs
    if any(run.result.errors for run in report.runs):
        progress(f"tfgw log tail:\n{log_tail(made.tfgw.log)}")


# --- output --------------------------------------------------------------------------------------


def header(report: FloorReport) -> str:
    m = report.machine
    runs = f"load: {m['load_tool']}, {report.duration_s:g} s per run after {report.warmup_s:g} s warm-up"
    machine = f"{m['nproc']} CPUs, Python {m['python']}, tfgw at {m['checkout']}"
    return f"{report.date}; {machine}, {runs}, {conditions(m)}"


def conditions(m: dict[str, Any]) -> str:
    """How busy and how fast the machine was: the load average, the calibration loop's times."""
    end = m.get("calibration_ms_at_end")
    return (
        f"load average {m['loadavg_1m_at_start']:g} at start, "
        f"calibration loop {m['calibration_ms_at_start']:g} ms at start"
        + (f", {end:g} ms at end" if end is not None else "")
    )


def runs_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | path | req/s | req/s of each run | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| CPU µs/req (tree) | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        each = " / ".join(fmt(v, 0) for v in r["rps_runs"])
        lines.append(
            f"| {r['scenario']} | {r['path']} | {fmt(r['rps'], 0)} | {each} | {fmt(r['p50_ms'], 3)} | "
            f"{fmt(r['p99_ms'], 3)} | {fmt(r['added_p50_ms'], 3)} | {fmt(r['added_p99_ms'], 3)} | "
            f"{fmt(r['cpu_us_per_request'], 0)} | {r['errors']} |"
        )
    return lines


def targets_table(targets: dict[str, Any]) -> list[str]:
    lines = ["| target | value | bound | verdict |", "| --- | ---: | --- | --- |"]
    for t in targets.values():
        verdict = "n/a (not run)" if t["ok"] is None else "pass" if t["ok"] else "FAIL"
        bound = f"{t['op']} {t['bound']:g}" + (f" ± {SPANS_TOLERANCE:.0%}" if t["op"] == "~" else "")
        lines.append(f"| {t['what']} | {fmt(t['value'], 2)} | {bound} | {verdict} |")
    return lines


def export_table(report: FloorReport) -> list[str]:
    lines = [
        "| tfgw export | spans delivered | requests answered | traces written | spans/request "
        "| spans/trace | tree CPU µs/req incl. catch-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for group, e in report.export.items():
        lines.append(
            f"| {group} (expect {e['expected_spans_per_request']}) | {e['spans_delivered']:,} | "
            f"{e['requests_answered']:,} | {e['traces_written']:,} | {fmt(e['spans_per_request'], 2)} | "
            f"{fmt(e['spans_per_trace'], 2)} | {fmt(e['tfgw_tree_cpu_us_per_request_with_export'], 0)} |"
        )
    rss = ", ".join(f"{name} {value:.1f} MiB" for name, value in report.rss_mib.items())
    return [*lines, "", f"RSS of each process tree after the load: {rss}."]


def markdown(report: FloorReport) -> str:
    tables = (runs_table(report.rows), targets_table(report.targets), export_table(report))
    own = report.floor_own
    floor = (
        f"The floor's own req/s c=50 / c=10 in this run: JSON {fmt(own.get('rps_c50_over_c10_json'), 2)}, "
        f"stream {fmt(own.get('rps_c50_over_c10_stream'), 2)}."
    )
    return "\n\n".join([header(report), *("\n".join(table) for table in tables), floor])


def as_json(report: FloorReport) -> str:
    data = asdict(report)
    data["runs"] = [
        {"scenario": run.scenario, "path": run.path}
        | {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(run.result).items()}
        | {"cpu_us_per_request": run.cpu_us_per_request, "answered_with_warmup": run.answered}
        for run in report.runs
    ]  # NaN percentiles (no successful answer) as null: valid JSON
    return json.dumps(data, indent=2)


# --- command line --------------------------------------------------------------------------------


def scenario_list(text: str) -> list[Scenario] | str:
    """The scenarios named, in their fixed order; or why not."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        return f"unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(SCENARIOS)}"
    return [SCENARIOS[name] for name in SCENARIOS if name in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags; a bad value is one line on stderr naming the flag, and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run (default 1)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    parser.add_argument("--no-workers", action="store_true", help="skip tfgw --workers 2 against one worker")
    parser.add_argument("--tfgw", help="command that runs tfgw (default: the tfgw beside this Python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    scenarios = scenario_list(args.scenarios)
    exit_on_bad_window(parser, args.duration, args.warmup)
    if isinstance(scenarios, str):
        parser.exit(2, f"error: --scenarios: {scenarios}\n")
    args.scenarios = scenarios
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: bench(args), as_json if args.json else markdown)


if __name__ == "__main__":
    sys.exit(main())
