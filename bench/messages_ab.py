"""What `POST /v1/messages` costs against a chat completion: passed through, and translated.

    python bench/messages_ab.py          # the A/B runs and the micro-benchmark, about 3 minutes
    python bench/messages_ab.py --json   # the same as one JSON object
    python bench/messages_ab.py --micro-only   # the translation alone, no server
    python bench/messages_ab.py --callgrind 200   # instructions a request instead of CPU time

One run starts, on 127.0.0.1, `bench/fake_upstream.py` (chat completions and Anthropic messages)
and one `tfgw serve`, one worker, tracing on, the model `bench` on an `openai` provider and
`bench-claude` on an `anthropic` provider, both at the fake upstream. Three paths are measured:

1. `chat`: a chat completion to `bench` (the reference);
2. `passthrough`: `/v1/messages` to `bench-claude`, body and answer passed on as they are;
3. `translated`: `/v1/messages` to `bench`, translated to a chat completion and its answer back.

Streamed and non-streaming, at each concurrency, interleaved chat, passthrough, translated,
translated, passthrough, chat (A B B A), each run after its own warm-up; CPU is utime+stime of the
`tfgw serve` process tree around the measured window. Paths 2 and 3 are set against 1: CPU µs a
request, and for a translated stream µs per event the client got (counted on a probe request).
`--callgrind N` counts instructions instead (tfgw under valgrind, N sequential requests a path):
repeatable where CPU time on a shared VM is not. Then a micro-benchmark without any server
(timeit, GC off): the translation functions on their own. Every process is stopped on exit, ^C,
SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_upstream
from callgrind import WARMUP, dumped_instructions, serve_under_callgrind, valgrind_command, zero
from floor import Endpoint, FloorRun, aggregate, checkout, conditions, ratio, row_value, start_upstream
from load import LoadError, exit_on_bad_window, run_load
from run import (
    CHAT_PATH,
    CONFIG_TEMPLATE,
    HOST,
    MESSAGES,
    BenchError,
    Settings,
    calibration_ms,
    chat_body,
    cpu_seconds,
    fmt,
    free_port,
    log_tail,
    machine,
    progress,
    run_command,
    running,
    start_gateway,
    tfgw_command,
)

import tfgw
from tfgw.formats.messages import MessageEvents, to_chat_request, to_message
from tfgw.providers.anthropic import StreamTranslator, from_messages_response
from tfgw.providers.http import sse_events

MESSAGES_PATH = "/v1/messages"
TFGW_HERE = str(Path(__file__).resolve().parent.parent / "tfgw")  # this checkout's package
PATHS = ("chat", "passthrough", "translated")
ORDER = ("chat", "passthrough", "translated", "translated", "passthrough", "chat")
MODEL = {"chat": "bench", "passthrough": "bench-claude", "translated": "bench"}
MAX_TOKENS = 256
JSON_HEADERS = {"content-type": "application/json"}
BOUND_REQUEST_US = 50.0  # translation: at most this much CPU a request ...
BOUND_EVENT_US = 3.0  # ... plus this much a streamed event; a pass-through: no more than chat

EXTRA_CONFIG = """
[providers.claude]
kind = "anthropic"
base_url = "http://{host}:{upstream_port}"
api_key = "sk-ant-bench-not-a-real-key"

[[models]]
name = "bench-claude"
targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]
price = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # stream-10, json-50, ...
    stream: bool
    concurrency: int


def scenarios(kinds: list[str], concurrencies: list[int]) -> list[Scenario]:
    return [Scenario(f"{kind}-{c}", kind == "stream", c) for kind in kinds for c in concurrencies]


def request_path(path: str) -> str:
    return CHAT_PATH if path == "chat" else MESSAGES_PATH


def body(path: str, stream: bool) -> bytes:
    """The same question on every path: a chat body (a stream asks for the usage chunk, as the
    translation does upstream) or a Messages body."""
    if path == "chat":
        return chat_body(stream, model=MODEL[path], usage=True)
    out: dict[str, Any] = {"model": MODEL[path], "max_tokens": MAX_TOKENS, "messages": MESSAGES}
    if stream:
        out["stream"] = True
    return json.dumps(out).encode()


# --- the processes and the probe -----------------------------------------------------------------


def write_config(directory: Path, port: int, upstream: Endpoint) -> Path:
    """One worker, tracing on, `bench` and `bench-claude` on `upstream`."""
    text = CONFIG_TEMPLATE.format(
        host=HOST, port=port, upstream_port=upstream.port, tracing="true", traces=directory / "traces"
    )
    config = directory / "tfgw.toml"
    config.write_text(text + EXTRA_CONFIG.format(host=HOST, upstream_port=upstream.port))
    return config


def start_tfgw(
    args: argparse.Namespace, directory: Path, upstream: Endpoint, processes: list[Any]
) -> Endpoint:
    """`tfgw serve` on `write_config`'s config."""
    port = free_port()
    log = directory / "tfgw.log"
    process = start_gateway(args, write_config(directory, port, upstream), port, log, False, processes)
    return Endpoint(port, process.pid, log)


def probe(port: int, path: str, stream: bool, count: int = 1) -> int:
    """`count` requests on `path`, one after another on one connection; the SSE events of the last
    (0 for JSON). A path that does not answer 200 with what it should is a BenchError."""
    if stream:
        expected = b"data: [DONE]" if path == "chat" else b"event: message_stop"
    else:
        expected = b'"object":"chat.completion"' if path == "chat" else b'"type":"message"'
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for _ in range(count):
            connection.request("POST", request_path(path), body(path, stream), JSON_HEADERS)
            response = connection.getresponse()
            status, data = response.status, response.read()
            if status != 200 or expected not in data:
                raise BenchError(f"{path}: POST {request_path(path)} answered {status}: {data[:300]!r}")
    except OSError as exc:
        raise BenchError(f"{path}: POST {request_path(path)} failed: {exc}") from exc
    finally:
        connection.close()
    return data.replace(b"\r\n", b"\n").count(b"\n\n") if stream else 0


# --- measuring -----------------------------------------------------------------------------------


def measure_run(scenario: Scenario, path: str, tfgw: Endpoint, settings: Settings) -> FloorRun:
    url = f"http://{HOST}:{tfgw.port}{request_path(path)}"
    data, c = body(path, scenario.stream), scenario.concurrency
    answered = 0
    if settings.warmup > 0:
        warm = run_load(url, data, c, settings.warmup, settings.tool, settings.threads)
        answered = warm.requests - warm.errors
    before = cpu_seconds(tfgw.pid)
    result = run_load(url, data, c, settings.duration, settings.tool, settings.threads)
    served = result.requests - result.errors
    run = FloorRun(scenario.name, path, result, cpu_seconds(tfgw.pid) - before, answered + served)
    progress(
        f"{scenario.name:10} {path:11} {result.rps:9.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms  errors {result.errors}  CPU {fmt(run.cpu_us_per_request, 0)} µs/req"
    )
    return run


def rows_of(runs: list[FloorRun]) -> list[dict[str, Any]]:
    """One row per scenario and path (floor.py's aggregation: means over its runs, CPU over all
    its requests), with each run's CPU beside it; no direct path here, so no added latency."""
    rows = aggregate(runs)
    for row in rows:
        del row["added_p50_ms"], row["added_p99_ms"]
        mine = [run for run in runs if (run.scenario, run.path) == (row["scenario"], row["path"])]
        row["cpu_us_runs"] = [run.cpu_us_per_request for run in mine]
    return rows


def minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def differences(rows: list[dict[str, Any]], events: dict[str, int]) -> list[dict[str, Any]]:
    """Passthrough and translated against chat, per scenario: CPU µs a request (and for a
    translated stream per event the client got), req/s ratio, added p50/p99, against the bound."""
    out = []
    for scenario in dict.fromkeys(row["scenario"] for row in rows):

        def value(path: str, key: str, scenario: str = scenario) -> Any:
            return row_value(rows, scenario, path, key)

        for path in ("passthrough", "translated"):
            if value(path, "rps") is None or value("chat", "rps") is None:
                continue
            cpu = minus(value(path, "cpu_us_per_request"), value("chat", "cpu_us_per_request"))
            n = events.get(path, 0) if scenario.startswith("stream") and path == "translated" else 0
            bound = 0.0 if path == "passthrough" else BOUND_REQUEST_US + BOUND_EVENT_US * n
            out.append(
                {
                    "scenario": scenario,
                    "path": path,
                    "rps_ratio": ratio(value(path, "rps"), value("chat", "rps")),
                    "added_p50_ms": minus(value(path, "p50_ms"), value("chat", "p50_ms")),
                    "added_p99_ms": minus(value(path, "p99_ms"), value("chat", "p99_ms")),
                    "cpu_us_per_request": cpu,
                    "events_per_stream": n or None,
                    "cpu_us_per_event": cpu / n if cpu is not None and n else None,
                    "bound_us_per_request": bound,
                    "ok": None if cpu is None else cpu <= bound,
                }
            )
    return out


# --- instructions (--callgrind) ------------------------------------------------------------------


def start_callgrind(
    args: argparse.Namespace, directory: Path, upstream: Endpoint, processes: list[Any]
) -> Endpoint:
    """`tfgw serve` under `valgrind --tool=callgrind`, its dumps in `directory` (`--tfgw` must name
    the Python process itself: set PYTHONPATH to measure another tree)."""
    port = free_port()
    serve = [*tfgw_command(args.tfgw), "serve", "--config", str(write_config(directory, port, upstream))]
    command = [*valgrind_command(directory), *serve, "--port", str(port)]
    return serve_under_callgrind(command, port, directory / "tfgw-callgrind.log", processes)


def callgrind_rows(gateway: Endpoint, directory: Path, kinds: list[str], count: int) -> list[dict[str, Any]]:
    """Instructions a request of every path (sequential, after a warm-up), and their excess over chat."""
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        chat = 0.0
        for path in PATHS:
            probe(gateway.port, path, kind == "stream", WARMUP)
            zero(gateway)
            probe(gateway.port, path, kind == "stream", count)
            dump = directory / f"callgrind.{gateway.pid}.{len(rows) + 1}"
            per_request = dumped_instructions(gateway, dump) / count
            chat = per_request if path == "chat" else chat
            rows.append(
                {"kind": kind, "path": path, "instructions": per_request, "minus_chat": per_request - chat}
            )
            progress(f"{kind:6} {path:11} {per_request:,.0f} instructions a request")
    return rows


# --- the micro-benchmark -------------------------------------------------------------------------

#: a request of an agent's kind: a system prompt, a few turns, a tool, a stream
TYPICAL = {
    "model": "bench",
    "max_tokens": 1024,
    "system": "You are a concise assistant. Answer in one short paragraph.",
    "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
        {"role": "user", "content": [{"type": "text", "text": "And its population, roughly?"}]},
    ],
    "tools": [{"name": "lookup", "description": "Look a fact up.", "input_schema": {"type": "object"}}],
    "metadata": {"user_id": "user-1"},
    "stream": True,
}


FOLD = "sse_events + orjson.loads + StreamTranslator.feed"
PARSE = "sse_events + orjson.loads"


def best_us(fn: Callable[[], object], repeat: int) -> float:
    """Best of `repeat` timeit rounds (each long enough for the clock), µs a call."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e6


def micro(repeat: int) -> list[dict[str, Any]]:
    """µs of CPU each piece of the translation takes on its own, and the pass-through's side work."""
    bench_body = orjson.loads(body("translated", False))
    completion = orjson.loads(fake_upstream.completion_json())
    chat_block = b"".join(fake_upstream.stream_events(True))  # with the usage chunk
    chunks = [orjson.loads(event[6:]) for event in fake_upstream.stream_events(True)[:-1]]
    block = b"".join(fake_upstream.message_events())
    message = fake_upstream.message_json()

    def feed_all() -> None:
        events = MessageEvents("bench")
        for chunk in chunks:
            events.feed(chunk)

    def parse_all() -> None:  # what OpenAIStream does with a read: the reference path's side work
        for _, raw in sse_events(chat_block):
            if raw != b"[DONE]":
                orjson.loads(raw)

    def fold_all() -> None:
        translator = StreamTranslator("bench")
        for event, raw in sse_events(block):
            translator.feed(event, orjson.loads(raw))

    span_view = lambda: to_chat_request(bench_body, strict=False)  # noqa: E731
    span_answer = lambda: from_messages_response(orjson.loads(message), "x")  # noqa: E731
    n_events, n_chat = len(fake_upstream.message_events()), len(fake_upstream.stream_events(True))
    finished = MessageEvents("bench")
    for chunk in chunks:
        finished.feed(chunk)
    timed: list[tuple[str, str, Callable[[], object], int]] = [  # (path, what, function, divided by)
        ("translated", "to_chat_request, the bench's body", lambda: to_chat_request(bench_body), 1),
        ("translated", "to_chat_request, a typical agent request", lambda: to_chat_request(TYPICAL), 1),
        ("translated", "to_message, the fake upstream's completion", lambda: to_message(completion, "x"), 1),
        ("translated", f"MessageEvents.feed, per chunk ({len(chunks)} chunks)", feed_all, len(chunks)),
        ("translated", "MessageEvents.finish, once a stream", finished.finish, 1),
        ("passthrough", "to_chat_request(strict=False), the span's view", span_view, 1),
        ("passthrough", "from_messages_response(orjson.loads(body)), the span's answer", span_answer, 1),
        ("passthrough", f"{FOLD}, per event ({n_events} events)", fold_all, n_events),
        ("chat", f"{PARSE}, per event ({n_chat} events, [DONE] included)", parse_all, n_chat),
    ]
    return [{"path": path, "what": what, "us": best_us(fn, repeat) / n} for path, what, fn, n in timed]


# --- the run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class MessagesReport:
    date: str
    machine: dict[str, Any]
    duration_s: float
    warmup_s: float
    scenarios: list[str]
    events_per_stream: dict[str, int] = field(default_factory=dict)
    runs: list[FloorRun] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    micro: list[dict[str, Any]] = field(default_factory=list)
    callgrind_requests: int = 0  # requests a path under callgrind (0: not run)
    callgrind: list[dict[str, Any]] = field(default_factory=list)


def bench(args: argparse.Namespace) -> MessagesReport:
    settings = Settings(args.duration, args.warmup, args.tool, args.threads)
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    report = MessagesReport(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine(tool, False) | {"checkout": checkout(), "tfgw_from": str(Path(tfgw.__file__).parent)},
        duration_s=args.duration,
        warmup_s=args.warmup,
        scenarios=[s.name for s in args.scenarios] if not (args.micro_only or args.callgrind) else [],
        callgrind_requests=args.callgrind,
    )
    if args.callgrind:
        callgrind_runs(args, report)
    elif not args.micro_only:
        load_runs(args, settings, report)
    report.micro = micro(args.micro_repeat)
    report.machine["calibration_ms_at_end"] = calibration_ms()
    return report


def load_runs(args: argparse.Namespace, settings: Settings, report: MessagesReport) -> None:
    """The probes, then every scenario's runs in the A B B A order, and their rows."""
    with tempfile.TemporaryDirectory(prefix="tfgw-messages-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream = start_upstream(directory, "upstream", 0, processes)
        gateway = start_tfgw(args, directory, upstream, processes)
        try:
            report.events_per_stream = {path: probe(gateway.port, path, True) for path in PATHS}
            for path in PATHS:
                probe(gateway.port, path, False)
            for scenario in args.scenarios:
                report.runs += [measure_run(scenario, path, gateway, settings) for path in ORDER]
        except (BenchError, LoadError):
            progress(f"tfgw log tail:\n{log_tail(gateway.log)}")
            raise
        if any(run.result.errors for run in report.runs):
            progress(f"tfgw log tail:\n{log_tail(gateway.log)}")
    report.rows = rows_of(report.runs)
    report.differences = differences(report.rows, report.events_per_stream)


def callgrind_runs(args: argparse.Namespace, report: MessagesReport) -> None:
    """tfgw under callgrind: instructions a request of every path."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise BenchError("--callgrind needs valgrind on PATH (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory(prefix="tfgw-messages-") as tmp, running([]) as processes:
        directory = Path(tmp)
        upstream = start_upstream(directory, "upstream", 0, processes)
        gateway = start_callgrind(args, directory, upstream, processes)
        try:
            report.callgrind = callgrind_rows(gateway, directory, args.kinds, args.callgrind)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BenchError(f"callgrind_control failed: {exc}\n{log_tail(gateway.log)}") from exc
        if args.keep_dumps:
            keep_dumps(directory, Path(args.keep_dumps), report.callgrind)


def keep_dumps(directory: Path, keep: Path, rows: list[dict[str, Any]]) -> None:
    """Each path's callgrind dump as `keep/<kind>-<path>.callgrind`, for `callgrind_annotate`."""
    keep.mkdir(parents=True, exist_ok=True)
    dumps = sorted(directory.glob("callgrind.*.*"), key=lambda d: int(d.name.rsplit(".", 1)[1]))
    for row, dump in zip(rows, dumps, strict=False):
        shutil.copyfile(dump, keep / f"{row['kind']}-{row['path']}.callgrind")
    progress(f"callgrind dumps in {keep}")


# --- output --------------------------------------------------------------------------------------


def header(report: MessagesReport) -> str:
    m = report.machine
    runs = (
        f"load: {m['load_tool']}, {report.duration_s:g} s per run after {report.warmup_s:g} s warm-up"
        if report.scenarios
        else f"callgrind, {report.callgrind_requests} sequential requests a path"
        if report.callgrind_requests
        else "micro-benchmark only"
    )
    return (
        f"{report.date}; {m['nproc']} CPUs, Python {m['python']}, tfgw at {m['checkout']}"
        + (f" (imported from {m['tfgw_from']})" if m.get("tfgw_from", TFGW_HERE) != TFGW_HERE else "")
        + f", {runs}, {conditions(m)}"
    )


def runs_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | path | req/s | req/s of each run | p50 ms | p99 ms | CPU µs/req (tree) "
        "| CPU µs/req of each run | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        each_rps = " / ".join(fmt(v, 0) for v in r["rps_runs"])
        each_cpu = " / ".join(fmt(v, 0) for v in r["cpu_us_runs"])
        lines.append(
            f"| {r['scenario']} | {r['path']} | {fmt(r['rps'], 0)} | {each_rps} | {fmt(r['p50_ms'], 3)} | "
            f"{fmt(r['p99_ms'], 3)} | {fmt(r['cpu_us_per_request'], 0)} | {each_cpu} | {r['errors']} |"
        )
    return lines


def differences_table(differences: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | path - chat | req/s ratio | added p50 ms | added p99 ms | CPU µs/req "
        "| CPU µs/event | bound µs/req | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for d in differences:
        verdict = "n/a" if d["ok"] is None else "pass" if d["ok"] else "FAIL"
        per_event = f"{fmt(d['cpu_us_per_event'], 1)} ({d['events_per_stream']} events)"
        bound = f"<= {d['bound_us_per_request']:g}"
        if d["events_per_stream"]:
            bound += f" ({BOUND_REQUEST_US:g} + {BOUND_EVENT_US:g} * {d['events_per_stream']})"
        lines.append(
            f"| {d['scenario']} | {d['path']} | {fmt(d['rps_ratio'], 2)} | {fmt(d['added_p50_ms'], 3)} | "
            f"{fmt(d['added_p99_ms'], 3)} | {fmt(d['cpu_us_per_request'], 0)} | "
            f"{per_event if d['events_per_stream'] else 'n/a'} | {bound} | {verdict} |"
        )
    return lines


def micro_table(micro: list[dict[str, Any]]) -> list[str]:
    lines = ["| path | what (no server, timeit best of rounds) | µs |", "| --- | --- | ---: |"]
    return lines + [f"| {m['path']} | {m['what']} | {fmt(m['us'], 2)} |" for m in micro]


def callgrind_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| kind | path | instructions a request | - chat |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        excess = f"{r['minus_chat']:+,.0f} ({r['minus_chat'] / (r['instructions'] - r['minus_chat']):+.1%})"
        lines.append(f"| {r['kind']} | {r['path']} | {r['instructions']:,.0f} | {excess} |")
    return lines


def markdown(report: MessagesReport) -> str:
    parts = [header(report)]
    if report.rows:
        events = ", ".join(f"{path} {n}" for path, n in report.events_per_stream.items())
        parts += [
            "\n".join(runs_table(report.rows)),
            f"SSE events in one stream as the client gets it: {events}.",
            "\n".join(differences_table(report.differences)),
        ]
    if report.callgrind:
        parts.append("\n".join(callgrind_table(report.callgrind)))
    return "\n\n".join([*parts, "\n".join(micro_table(report.micro))])


def as_json(report: MessagesReport) -> str:
    data = asdict(report)
    data["runs"] = [
        {"scenario": run.scenario, "path": run.path}
        | {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(run.result).items()}
        | {"cpu_us_per_request": run.cpu_us_per_request}
        for run in report.runs
    ]  # NaN percentiles (no successful answer) as null: valid JSON
    return json.dumps(data, indent=2)


# --- command line --------------------------------------------------------------------------------


def int_list(text: str, flag: str, parser: argparse.ArgumentParser) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    values = [int(part) for part in parts if part.isdigit()]
    if len(values) != len(parts) or not values or not all(1 <= v <= 1000 for v in values):
        parser.exit(2, f"error: {flag}: comma-separated integers within 1..1000, got {text!r}\n")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags; a bad value is one line on stderr naming the flag, and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run (default 1)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--concurrency", default="10,50", help="comma-separated (default 10,50)")
    parser.add_argument("--kinds", default="stream,json", help="stream, json or both (default both)")
    parser.add_argument("--micro-only", action="store_true", help="only the micro-benchmark, no server")
    parser.add_argument(
        "--callgrind",
        type=int,
        default=0,
        help="instead of the load runs: instructions over N requests a path",
    )
    parser.add_argument("--keep-dumps", metavar="DIR", help="with --callgrind: keep each path's dump in DIR")
    parser.add_argument("--micro-repeat", type=int, default=5, help="timeit rounds, best kept (default 5)")
    parser.add_argument("--tfgw", help="command that runs tfgw (default: the tfgw beside this Python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    exit_on_bad_window(parser, args.duration, args.warmup)
    if not 1 <= args.micro_repeat <= 100:
        parser.exit(2, f"error: --micro-repeat: must be within 1..100, got {args.micro_repeat}\n")
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    if not kinds or any(kind not in ("stream", "json") for kind in kinds):
        parser.exit(2, f"error: --kinds: stream, json or both, got {args.kinds!r}\n")
    if not 0 <= args.callgrind <= 10_000:
        parser.exit(2, f"error: --callgrind: must be within 0..10000 requests, got {args.callgrind}\n")
    args.kinds = kinds
    args.scenarios = scenarios(kinds, int_list(args.concurrency, "--concurrency", parser))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: bench(args), as_json if args.json else markdown)


if __name__ == "__main__":
    sys.exit(main())
