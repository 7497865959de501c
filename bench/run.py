"""The gateway's own cost: the same chat call made directly to a fake provider and through tfgw.

One command (`python bench/run.py`) starts `bench/fake_upstream.py` and `tfgw serve` (one worker,
a temporary config), waits for `GET /healthz`, then loads each with non-streaming chat calls at
concurrency 1 and 50 (each run after its own warm-up), plus streaming calls at concurrency 50.
It reports req/s, p50 and p99 of every run, the latency tfgw adds at concurrency 1, the CPU time the
tfgw process spends per request (utime+stime from /proc/<pid>/stat around the measured run, warm-up
excluded) and its RSS after the runs. `--json` prints the same as one JSON object.
Every process it starts is stopped (SIGTERM, then SIGKILL after a timeout), on error and ^C too.
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import LoadError, LoadResult, Tool, run_load

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOW, HIGH = 1, 50

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
TARGET_RPS_HIGH = 1200.0

CONFIG_TEMPLATE = """\
[server]
host = "{host}"
port = {port}

[providers.fake]
kind = "openai"
base_url = "http://{host}:{upstream_port}/v1"
api_key = "sk-bench-not-a-real-key"

[[models]]
name = "bench"
targets = [{{ provider = "fake", model = "gpt-4o-mini" }}]
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }}

[tracing]
enabled = {tracing}
dir = "{traces}"
"""


class BenchError(RuntimeError):
    """A process did not start, did not become ready, or a load run failed."""


@dataclass(frozen=True, slots=True)
class Run:
    path: str  # "direct" or "tfgw"
    stream: bool
    result: LoadResult
    cpu_us_per_request: float | None = None


@dataclass(slots=True)
class Report:
    date: str
    machine: dict[str, Any]
    duration_s: float
    warmup_s: float
    runs: list[Run] = field(default_factory=list)
    gateway: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    tracing: dict[str, Any] = field(default_factory=dict)


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """Our environment, with loopback never sent through a proxy."""
    env = dict(os.environ)
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost,::1"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def start(
    command: list[str], log: Path, stdout_pipe: bool = False, cpus: set[int] | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` with its output in `log` (stdout piped if asked), on `cpus` if given, in
    the log's directory: never in a checkout, whose `tfgw/` a `python -m` (such as an older
    tfgw's `tfgw serve`, which runs on as `python -m tfgw.serving`) would import ahead of the
    tfgw on PYTHONPATH that a bench sets against this one."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            stderr=sink,
            env=child_env(),
            preexec_fn=(lambda: pin(0, cpus)) if cpus else None,  # before exec: every thread inherits it
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still alive after STOP_TIMEOUT_S; then the same for any
    descendant it left behind (tfgw's exporter runs in a session of its own)."""
    descendants = process_tree(process.pid)[1:] if process.poll() is None else []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()
    for pid in descendants:
        stop_pid(pid)


def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S, for a process that is not our child."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 0.0)):
        if not alive(pid):
            return
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_ready_line(process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the fake upstream prints `ready`."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen = b""
    while b"ready" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise BenchError(f"fake upstream did not print 'ready':\n{log_tail(log)}")
        readable, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if readable:
            seen += os.read(process.stdout.fileno(), 4096)


def get_status(port: int, path: str) -> int | None:
    """One GET on loopback (http.client: never a proxy); None when nothing answers."""
    connection = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def wait_for_health(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"tfgw exited with {process.returncode}:\n{log_tail(log)}")
        if get_status(port, "/healthz") == 200:
            return
        time.sleep(0.2)
    raise BenchError(f"tfgw did not answer GET /healthz = 200 within {READY_TIMEOUT_S:g} s:\n{log_tail(log)}")


def tfgw_command(explicit: str | None) -> list[str]:
    if explicit:
        return shlex.split(explicit)
    beside_python = Path(sys.executable).parent / "tfgw"
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("tfgw")
    return [found] if found else [sys.executable, "-m", "tfgw"]


def write_config(
    directory: Path, port: int, upstream_port: int, tracing: bool = True, export_to: str | None = None
) -> Path:
    label = "traced" if tracing else "untraced"
    path = directory / f"tfgw-{label}{'-export' if export_to else ''}.toml"
    text = CONFIG_TEMPLATE.format(
        host=HOST,
        port=port,
        upstream_port=upstream_port,
        tracing=str(tracing).lower(),
        traces=directory / ("traces-export" if export_to else "traces"),
    )
    if export_to:
        text += f'\n[otel.targets.bench]\nkind = "otlp"\nendpoint = "{export_to}"\ntimeout = 2.0\n'
    path.write_text(text)
    return path


@contextlib.contextmanager
def otlp_receiver(directory: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    """A span-counting OTLP/HTTP receiver in its own process (bench/export_throughput.py --serve)."""
    port = free_port()
    log = directory / "receiver.log"
    # it stands for a backend on another machine: niced, so its parsing does not compete here
    serve = [str(BENCH_DIR / "export_throughput.py"), "--serve", "http", "--port", str(port)]
    process = start(["nice", "-n", "19", sys.executable, *serve], log, stdout_pipe=True)
    try:
        wait_for_ready_line(process, log)

        def count() -> int:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            try:
                connection.request("GET", "/count")
                return int(connection.getresponse().read())
            finally:
                connection.close()

        yield f"http://{HOST}:{port}", count
    finally:
        stop(process)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A port that completes TCP handshakes (the kernel's backlog) and never answers anything."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen(1024)
        yield f"http://{HOST}:{sock.getsockname()[1]}"


def export_runs(
    args: argparse.Namespace, directory: Path, upstream_port: int, settings: Settings, pinned: bool
) -> tuple[list[Run], dict[str, Any]]:
    """The traced gateway with one export target: delivering, black-holed, and down."""
    runs: list[Run] = []
    port = args.port or free_port()
    with otlp_receiver(directory) as (endpoint, received):
        config = write_config(directory, port, upstream_port, export_to=endpoint)
        with running([]) as processes:
            gateway = start_gateway(args, config, port, directory / "export.log", pinned, processes)
            runs.append(measure("export", port, False, LOW, settings, gateway.pid))
            runs.append(measure("export", port, False, HIGH, settings, gateway.pid))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until everything written has been delivered
                written = trace_log_stats(port).get("written", 0)
                delivered = received()
                if delivered >= written * 4:
                    break
                time.sleep(0.2)
    with black_hole() as endpoint:
        config = write_config(directory, port, upstream_port, export_to=endpoint)
        with running([]) as processes:
            gateway = start_gateway(args, config, port, directory / "blackhole.log", pinned, processes)
            runs.append(measure("blackhole", port, False, LOW, settings, gateway.pid))
    config = write_config(directory, port, upstream_port, export_to=f"http://{HOST}:{free_port()}")
    with running([]) as processes:
        gateway = start_gateway(args, config, port, directory / "down.log", pinned, processes)
        runs.append(measure("down", port, False, LOW, settings, gateway.pid))
    return runs, {"traces_written": written, "spans_expected": written * 4, "spans_delivered": delivered}


def trace_log_stats(port: int, key: str | None = None) -> dict[str, Any]:
    """The gateway's trace log counters from `GET /readyz` (written, dropped, errors); with keys
    configured the details need one, `key`."""
    return dict(readyz(port, key).get("tracing") or {})


def export_stats(port: int, key: str | None = None) -> dict[str, dict[str, Any]]:
    """Each export target's counters from `GET /readyz` (delivered, pending_bytes, updated...)."""
    return dict(readyz(port, key).get("export") or {})


def readyz(port: int, key: str | None = None) -> dict[str, Any]:
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", "/readyz", headers={"authorization": f"Bearer {key}"} if key else {})
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


@contextlib.contextmanager
def running(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Stop every process appended to `processes`, in reverse order, whatever happens."""
    try:
        yield processes
    finally:
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                stop(process)


# --- /proc ---------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a multi-worker tfgw forks its workers)."""
    pids: list[int] = []
    todo = [pid]
    while todo and len(pids) < 1000:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, in seconds."""
    ticks = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of the process tree, in MiB."""
    kib = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
    return kib / 1024


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    warmup: float
    tool: Tool
    threads: int


def chat_body(stream: bool, model: str = "bench", usage: bool = False) -> bytes:
    """The same body for direct and gateway calls (the fake upstream ignores the model); `usage`
    asks a stream for its usage chunk (`stream_options.include_usage`)."""
    body: dict[str, Any] = {"model": model, "messages": MESSAGES}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def measure(
    path: str, port: int, stream: bool, concurrency: int, settings: Settings, cpu_pid: int | None
) -> Run:
    """Warm up, then one measured run; with `cpu_pid`, also that process's CPU µs per request."""
    url = f"http://{HOST}:{port}{CHAT_PATH}"
    body = chat_body(stream)
    if settings.warmup > 0:
        run_load(url, body, concurrency, settings.warmup, settings.tool, settings.threads)
    before = cpu_seconds(cpu_pid) if cpu_pid else 0.0
    result = run_load(url, body, concurrency, settings.duration, settings.tool, settings.threads)
    cpu_us = None
    if cpu_pid:
        served = result.requests - result.errors
        cpu_us = (cpu_seconds(cpu_pid) - before) * 1e6 / served if served else None
    progress(
        f"{path:8} stream={stream!s:5} c={concurrency:<3} {result.rps:9.0f} req/s  "
        f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms  errors {result.errors}"
    )
    return Run(path, stream, result, cpu_us)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def direct_runs(upstream_port: int, settings: Settings) -> list[Run]:
    return [
        measure("direct", upstream_port, False, LOW, settings, None),
        measure("direct", upstream_port, False, HIGH, settings, None),
        measure("direct", upstream_port, True, HIGH, settings, None),
    ]


def gateway_runs(port: int, pid: int, settings: Settings, path: str = "tfgw") -> list[Run]:
    return [
        measure(path, port, False, LOW, settings, pid),
        measure(path, port, False, HIGH, settings, pid),
        measure(path, port, True, HIGH, settings, pid),
    ]


def find(runs: list[Run], path: str, stream: bool, concurrency: int) -> LoadResult:
    return next(
        r.result for r in runs if (r.path, r.stream, r.result.concurrency) == (path, stream, concurrency)
    )


def gateway_summary(runs: list[Run], rss: float) -> dict[str, Any]:
    direct, tfgw = find(runs, "direct", False, LOW), find(runs, "tfgw", False, LOW)
    cpu = {(r.stream, r.result.concurrency): r.cpu_us_per_request for r in runs if r.path == "tfgw"}
    return {
        "added_p50_ms_c1": tfgw.p50_ms - direct.p50_ms,
        "added_p99_ms_c1": tfgw.p99_ms - direct.p99_ms,
        "rps_c50": find(runs, "tfgw", False, HIGH).rps,
        "rps_stream_c50": find(runs, "tfgw", True, HIGH).rps,
        "cpu_us_per_request_c50": cpu[(False, HIGH)],
        "cpu_us_per_request_stream_c50": cpu[(True, HIGH)],
        "rss_mib": rss,
    }


def check_targets(gateway: dict[str, Any]) -> dict[str, Any]:
    return {
        "added_p50_ms_c1": {
            "max": TARGET_ADDED_P50_MS,
            "ok": gateway["added_p50_ms_c1"] <= TARGET_ADDED_P50_MS,
        },
        "added_p99_ms_c1": {
            "max": TARGET_ADDED_P99_MS,
            "ok": gateway["added_p99_ms_c1"] <= TARGET_ADDED_P99_MS,
        },
        "rps_c50": {"min": TARGET_RPS_HIGH, "ok": gateway["rps_c50"] >= TARGET_RPS_HIGH},
    }


def calibration_ms(loops: int = 2_000_000, best_of: int = 3) -> float:
    """Best-of time of a fixed pure-Python loop: how fast this (shared, virtual) CPU is right now."""
    best = float("inf")
    for _ in range(best_of):
        start = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def machine(tool: str, pinned: bool) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_tool": tool,
        "pinned": pinned,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "calibration_ms_at_start": calibration_ms(),
    }


def pin(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(pid, cpus)


def bench(args: argparse.Namespace) -> Report:
    settings = Settings(args.duration, args.warmup, args.tool, args.threads)
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    pinned = args.pin and (os.cpu_count() or 1) >= 2
    if pinned:
        pin(0, {1})  # this process, the load generator and the fake upstream on CPU 1; tfgw on CPU 0
    report = Report(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine(tool, pinned),
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    with tempfile.TemporaryDirectory(prefix="tfgw-bench-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream_port = args.upstream_port or free_port()
        upstream_log = directory / "upstream.log"
        upstream = start(
            [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port)],
            upstream_log,
            stdout_pipe=True,
        )
        processes.append(upstream)
        wait_for_ready_line(upstream, upstream_log)
        report.runs += direct_runs(upstream_port, settings)
        if args.only_direct:
            return report
        port = args.port or free_port()
        if args.tracing_ab:  # the same gateway without tracing first, for the cost of tracing alone
            config = write_config(directory, port, upstream_port, tracing=False)
            with running([]) as untraced:
                gateway = start_gateway(args, config, port, directory / "untraced.log", pinned, untraced)
                report.runs += gateway_runs(port, gateway.pid, settings, "untraced")
        config = write_config(directory, port, upstream_port, tracing=not args.no_tracing)
        gateway_log = directory / "tfgw.log"
        gateway = start_gateway(args, config, port, gateway_log, pinned, processes)
        report.runs += gateway_runs(port, gateway.pid, settings)
        report.gateway = gateway_summary(report.runs, rss_mib(gateway.pid))
        report.targets = check_targets(report.gateway)
        if not args.no_tracing:
            report.tracing = trace_log_stats(port)
        if args.tracing_ab:
            report.tracing |= tracing_cost(report.runs)
        if args.export_ab:
            runs, delivery = export_runs(args, directory, upstream_port, settings, pinned)
            report.runs += runs
            report.tracing |= delivery | export_cost(report.runs)
        report.machine["calibration_ms_at_end"] = calibration_ms()
        if any(r.result.errors for r in report.runs):
            progress(f"tfgw log tail:\n{log_tail(gateway_log)}")
    return report


def export_cost(runs: list[Run]) -> dict[str, Any]:
    """One export target against none; and p99 at c=1 while the target is black-holed or down."""
    traced = find(runs, "tfgw", False, HIGH).rps
    return {
        "export_rps_c50_vs_traced": find(runs, "export", False, HIGH).rps / traced if traced else None,
        "p99_ms_c1_traced": find(runs, "tfgw", False, LOW).p99_ms,
        "p99_ms_c1_exporting": find(runs, "export", False, LOW).p99_ms,
        "p99_ms_c1_blackholed": find(runs, "blackhole", False, LOW).p99_ms,
        "p99_ms_c1_down": find(runs, "down", False, LOW).p99_ms,
    }


def start_gateway(
    args: argparse.Namespace,
    config: Path,
    port: int,
    log: Path,
    pinned: bool,
    processes: list[subprocess.Popen[bytes]],
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    command = [*tfgw_command(args.tfgw), "serve", "--config", str(config), "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    gateway = start(command, log, cpus={0} if pinned else None)
    processes.append(gateway)
    wait_for_health(gateway, port, log)
    return gateway


def tracing_cost(runs: list[Run]) -> dict[str, Any]:
    """What tracing adds: the traced gateway minus the same gateway with `[tracing] enabled = false`."""
    cpu = {(r.path, r.stream): r.cpu_us_per_request for r in runs if r.result.concurrency == HIGH}
    return {
        "added_cpu_us_per_request_c50": (cpu[("tfgw", False)] or 0) - (cpu[("untraced", False)] or 0),
        "added_cpu_us_per_stream_c50": (cpu[("tfgw", True)] or 0) - (cpu[("untraced", True)] or 0),
        "added_p99_ms_c1": find(runs, "tfgw", False, LOW).p99_ms - find(runs, "untraced", False, LOW).p99_ms,
        "p99_ms_c1_over_direct": find(runs, "tfgw", False, LOW).p99_ms
        - find(runs, "direct", False, LOW).p99_ms,
    }


# --- output --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| path | stream | concurrency | req/s | p50 ms | p99 ms | errors | tfgw CPU µs/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        r = run.result
        lines.append(
            f"| {run.path} | {'yes' if run.stream else 'no'} | {r.concurrency} | {fmt(r.rps, 0)} | "
            f"{fmt(r.p50_ms, 3)} | {fmt(r.p99_ms, 3)} | {r.errors} | {fmt(run.cpu_us_per_request, 0)} |"
        )
    return lines


def verdict(targets: dict[str, Any], key: str) -> str:
    target = targets[key]
    bound = f"<= {target['max']:g} ms" if "max" in target else f">= {target['min']:,.0f}"
    return f"{bound} ({'pass' if target['ok'] else 'FAIL'})"


def gateway_table(gateway: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    def row(label: str, key: str, digits: int, unit: str = "") -> str:
        target = verdict(targets, key) if key in targets else ""
        return f"| {label} | {fmt(gateway[key], digits)}{unit} | {target} |"

    return [
        "| gateway cost (one worker) | value | target |",
        "| --- | ---: | --- |",
        row("added p50 at c=1", "added_p50_ms_c1", 3, " ms"),
        row("added p99 at c=1", "added_p99_ms_c1", 3, " ms"),
        row("req/s at c=50, non-streaming", "rps_c50", 0),
        row("req/s at c=50, streaming", "rps_stream_c50", 0),
        row("CPU per request at c=50", "cpu_us_per_request_c50", 0, " µs"),
        row("CPU per streamed request at c=50", "cpu_us_per_request_stream_c50", 0, " µs"),
        row("RSS after the runs", "rss_mib", 1, " MiB"),
    ]


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"{report.date}; {m['nproc']} CPUs, Python {m['python']}, load: {m['load_tool']}, "
        f"{report.duration_s:g} s per run after {report.warmup_s:g} s warm-up, "
        f"load average {m['loadavg_1m_at_start']:g} at start, "
        f"calibration loop {m['calibration_ms_at_start']:g} ms at start"
        + (f", {m['calibration_ms_at_end']:g} ms at end" if "calibration_ms_at_end" in m else "")
        + (", tfgw pinned to CPU 0, everything else to CPU 1" if m["pinned"] else ""),
        "",
        *runs_table(report.runs),
    ]
    if report.gateway:
        lines += ["", *gateway_table(report.gateway, report.targets)]
    if report.tracing:
        lines += ["", "| tracing | value |", "| --- | ---: |"]
        lines += [f"| {key} | {fmt(value, 3) if isinstance(value, float) else value} |"
                  for key, value in report.tracing.items()]  # fmt: skip
    return "\n".join(lines)


def as_json(report: Report) -> str:
    data = asdict(report)
    data["runs"] = [
        {"path": r.path, "stream": r.stream, **asdict(r.result), "cpu_us_per_request": r.cpu_us_per_request}
        for r in report.runs
    ]
    return json.dumps(data, indent=2)


# --- command line --------------------------------------------------------------------------------


def interrupted(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up before each run (default 2)"
    )
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--only-direct", action="store_true", help="measure the fake upstream alone")
    parser.add_argument(
        "--pin", action="store_true", help="tfgw on CPU 0, load generator and upstream on CPU 1"
    )
    parser.add_argument("--tfgw", help="command that runs tfgw (default: the tfgw beside this Python)")
    parser.add_argument("--port", type=int, default=0, help="tfgw port (default: a free one)")
    parser.add_argument(
        "--upstream-port", type=int, default=0, help="fake upstream port (default: a free one)"
    )
    parser.add_argument("--no-tracing", action="store_true", help="run tfgw with [tracing] enabled = false")
    parser.add_argument(
        "--tracing-ab",
        action="store_true",
        help="also run tfgw with tracing off first, and report what tracing adds",
    )
    parser.add_argument(
        "--export-ab",
        action="store_true",
        help="also run tfgw with one export target: delivering, black-holed and down",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    return parser.parse_args(argv)


R = TypeVar("R")


def run_command(measure: Callable[[], R], render: Callable[[R], str]) -> int:
    """A bench command's frame: SIGTERM stops it like ^C, every started process is stopped on the
    way out, a failed run is one line and exit 1, ^C exit 130; else the report is printed."""
    signal.signal(signal.SIGTERM, interrupted)
    try:
        report = measure()
    except (BenchError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130
    print(render(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: bench(args), as_json if args.json else markdown)


if __name__ == "__main__":
    sys.exit(main())
