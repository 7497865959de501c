"""Minutes of steady load over every route while the export backend flaps: does the gateway fail a
request, lose a span or grow?

    python bench/flap_load.py                          # 600 s at 300 req/s, a flap every 30 s
    python bench/flap_load.py --duration 60 --rate 100 --flap 10 --json

Starts, all on 127.0.0.1: `bench/fake_upstream.py`; an OTLP/HTTP receiver in its own process
(this file with `--serve-receiver`) that keeps the trace and span id of every span it accepts;
`tfgw serve` with tracing and one `otlp` target at the receiver (so its `tfgw exporter` child
delivers during the run). Then, in this process, an open-loop generator (asyncio + aiohttp):
request *i* is due at *i*/rate s and is started then, whatever the earlier ones are doing (one
started over 10 ms after it was due is late); its latency counts from when it was due. Routes
take turns: chat completions, `/v1/responses`, `/v1/messages` (JSON, streamed), embeddings. A request
fails on no answer (connection error, 10 s timeout), a status not 200, or an answer cut short.

Every `--flap` seconds the receiver goes down or up again; down is, in turn, `refuse` (its
listening socket and every connection closed: connections are refused) and `503` (every export
answered 503). After the load it stays up, and the run waits (polled, `--catch-up` deadline) until
it holds every span the trace log's rows count. A batch sent again (its answer lost) is the
duplicate docs/export.md allows in log mode; this receiver answers a request in the callback that
counts it, so none is expected, and a duplicate span outside a re-sent batch fails the run. RSS of
the gateway and of its exporter is sampled every 10 s (least-squares slope over the second half).
Exit status 1 when a request failed because of the gateway, a span is missing, or a duplicate is
not a re-sent batch. Every process started is stopped on exit, ^C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import errno
import gzip
import hashlib
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from fake_upstream import CONTENT_LENGTH_RE, MAX_HEAD_BYTES
from floor import checkout
from load import percentile_ms
from run import HOST, MESSAGES, cpu_seconds, free_port, process_tree
from soak import rss, slope

LATE_S, SAMPLE_S, REQUEST_TIMEOUT_S = 0.010, 10.0, 10.0  # late after; RSS every; a request's limit
MAX_DURATION_S, MAX_RATE = 3600.0, 2000.0
DOWN_MODES = ("refuse", "503")
JSON_BODY = {"content-type": "application/json"}
CLIENT_ERRNOS = {errno.EADDRNOTAVAIL, errno.EMFILE, errno.ENFILE, errno.ENOBUFS}  # ours: out of sockets

#: every route to its own at the fake upstream; one `otlp` target (http/protobuf, gzip, 10 s timeout)
CONFIG = """\
server = {{ host = "{host}", port = {port} }}
tracing = {{ dir = "{traces}" }}
otel.targets.flapping = {{ kind = "otlp", endpoint = "http://{host}:{receiver}" }}
providers.fake = {{ kind = "openai", base_url = "http://{host}:{upstream}/v1", responses = true, \
api_key = "sk-bench-not-a-real-key" }}
providers.claude = {{ kind = "anthropic", base_url = "http://{host}:{upstream}", \
api_key = "sk-ant-bench-not-a-real-key" }}
models = [
  {{ name = "bench", targets = [{{ provider = "fake", model = "gpt-4o-mini" }}] }},
  {{ name = "bench-claude", targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}] }},
  {{ name = "bench-embed", targets = [{{ provider = "fake", model = "text-embedding-3-small" }}] }},
]
"""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    body: bytes
    last: bytes  # what a whole answer holds: its last event, or a field of its JSON


def _body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


_PROMPT = MESSAGES[0]["content"]
ROUTES = (
    Route("chat", "/v1/chat/completions", _body(model="bench", messages=MESSAGES), b'"finish_reason":"stop"'),
    Route("chat-stream", "/v1/chat/completions", _body(model="bench", messages=MESSAGES, stream=True),
          b"data: [DONE]\n\n"),
    Route("responses", "/v1/responses", _body(model="bench", input=_PROMPT), b'"status":"completed"'),
    Route("responses-stream", "/v1/responses", _body(model="bench", input=_PROMPT, stream=True),
          b"event: response.completed\n"),
    Route("messages", "/v1/messages", _body(model="bench-claude", max_tokens=64, messages=MESSAGES),
          b'"stop_reason":"end_turn"'),
    Route("messages-stream", "/v1/messages",
          _body(model="bench-claude", max_tokens=64, messages=MESSAGES, stream=True),
          b"event: message_stop\n"),
    Route("embeddings", "/v1/embeddings", _body(model="bench-embed", input=_PROMPT), b'"object":"embedding"'),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float = 600.0
    rate: float = 300.0
    flap: float = 30.0
    catch_up: float = 180.0
    tfgw: str | None = None


# --- the receiver (a process of its own) ---------------------------------------------------------

GZIP_RE = re.compile(rb"\r\ncontent-encoding:[ \t]*gzip", re.IGNORECASE)
ACCEPTED = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\ndown"
UNREADABLE = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nunreadable"
JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection (Content-Length bodies, keep-alive): each whole request is answered
    in order, in the callback that completed it, so a request counted is a request answered."""

    def __init__(self, receiver: Receiver, control: bool) -> None:
        self.receiver, self.control = receiver, control
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.control:
            self.receiver.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.receiver.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.close()
                return
            head = bytes(self.buffer[:end])
            length = int(m.group(1)) if (m := CONTENT_LENGTH_RE.search(head)) else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            line = head.split(b"\r\n", 1)[0]
            if self.control:
                self.transport.write(self.receiver.command(line))
            else:  # the exporter sends nothing else
                self.transport.write(self.receiver.export(body, bool(GZIP_RE.search(head))))

    def close(self) -> None:  # once what was written has gone: an answer written is never cut off
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.buffer.clear()


@dataclass(slots=True)
class Receiver:
    """Keeps the trace and span id of every span accepted; `mode` is up, refuse or 503."""

    port: int
    mode: str = "up"
    server: asyncio.AbstractServer | None = None
    connections: set[Connection] = field(default_factory=set)
    ids: set[bytes] = field(default_factory=set)
    batches: set[bytes] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        factory = lambda: Connection(self, False)  # noqa: E731
        self.server = await loop.create_server(factory, HOST, self.port, reuse_address=True, backlog=1024)

    def command(self, line: bytes) -> bytes:
        """POST /up, /refuse or /503 sets the mode; any other path only reads the counts."""
        mode = line.split(b" ")[1].decode().lstrip("/")
        if mode in ("up", *DOWN_MODES) and mode != self.mode:
            if mode == "refuse" and self.server is not None:
                self.server.close()
                self.server = None
                for connection in list(self.connections):
                    connection.close()
                    self.counts["connections closed"] += 1
            elif mode != "refuse" and self.server is None:
                asyncio.get_running_loop().create_task(self.listen())  # before the exporter's next try
            self.mode = mode
        body = orjson.dumps({"mode": self.mode, **self.counts, "unique": len(self.ids)})
        return JSON_HEAD % len(body) + body

    def export(self, body: bytes, gzipped: bool) -> bytes:
        if self.mode == "503":
            self.counts["answered 503"] += 1
            return UNAVAILABLE
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        try:
            request = ExportTraceServiceRequest.FromString(gzip.decompress(body) if gzipped else body)
        except Exception:  # any undecodable body: a 400, counted
            self.counts["unreadable"] += 1
            return UNREADABLE
        keys = [
            s.trace_id + s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
        ]
        batch = hashlib.blake2b(b"".join(sorted(keys)), digest_size=16).digest()
        before = len(self.ids)
        self.ids.update(keys)
        if batch in self.batches:  # the same batch again: its answer did not reach the exporter
            self.counts.update({"resent batches": 1, "resent spans": len(keys)})
        self.batches.add(batch)
        duplicates = len(keys) - (len(self.ids) - before)
        self.counts.update({"requests": 1, "spans": len(keys), "duplicate spans": duplicates})
        return ACCEPTED


async def serve_receiver(port: int, control_port: int) -> None:
    loop, stopping, receiver = asyncio.get_running_loop(), asyncio.Event(), Receiver(port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await receiver.listen()
    control = await loop.create_server(lambda: Connection(receiver, True), HOST, control_port)
    print("ready", flush=True)
    await stopping.wait()
    control.close()


@dataclass(frozen=True, slots=True)
class ReceiverControl:
    port: int
    control_port: int

    def __call__(self, mode: str = "stats") -> dict[str, Any]:
        """Set the receiver's mode (up, refuse, 503), or only read its counts (stats)."""
        connection = http.client.HTTPConnection(HOST, self.control_port, timeout=10)
        try:
            connection.request("POST", f"/{mode}")
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()


@contextlib.contextmanager
def receiver_process(directory: Path) -> Iterator[tuple[subprocess.Popen[bytes], ReceiverControl]]:
    control = ReceiverControl(free_port(), free_port())
    command = [sys.executable, __file__, "--serve-receiver", str(control.port), str(control.control_port)]
    process = run.start(command, directory / "receiver.log", stdout_pipe=True)
    try:
        run.wait_for_ready_line(process, directory / "receiver.log")
        yield process, control
    finally:
        run.stop(process)


# --- the load ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {r.name: [] for r in ROUTES})
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    started: int = 0
    late: int = 0
    max_lag_s: float = 0.0

    def fail(self, route: Route, cause: str, detail: object) -> None:
        self.failures[cause] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{route.name}: {cause}: {detail}"[:300])


async def one_request(session: aiohttp.ClientSession, route: Route, due: float, tally: Tally) -> None:
    """One request, its latency counted from when it was due; or its failure, by cause."""
    try:
        async with session.post(route.path, data=route.body, headers=JSON_BODY) as resp:
            data = await resp.read()
    except TimeoutError:
        return tally.fail(route, "timeout", f"no answer in {REQUEST_TIMEOUT_S:g} s")
    except aiohttp.ClientOSError as exc:
        return tally.fail(route, "load generator" if exc.errno in CLIENT_ERRNOS else "connection", repr(exc))
    except aiohttp.ClientError as exc:
        return tally.fail(route, "connection", repr(exc))
    if resp.status != 200:
        return tally.fail(route, "http 5xx" if resp.status >= 500 else f"http {resp.status}", data[:200])
    if route.last not in data:
        return tally.fail(route, "incomplete answer", data[-200:])
    tally.latencies[route.name].append(asyncio.get_running_loop().time() - due)


async def generate(url: str, settings: Settings, tally: Tally, done: asyncio.Event) -> None:
    """Open loop: request i is started at i/rate seconds, whatever the others are doing."""
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=1000)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, trust_env=False) as session:
        begin = loop.time()
        for i in range(round(settings.duration * settings.rate)):
            due = begin + i / settings.rate
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            lag = loop.time() - due
            tally.late += lag > LATE_S
            tally.max_lag_s = max(tally.max_lag_s, lag)
            task = loop.create_task(one_request(session, ROUTES[i % len(ROUTES)], due, tally))
            tally.started += 1
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        with contextlib.suppress(ValueError):  # none left
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    done.set()


async def every(seconds: float, done: asyncio.Event) -> AsyncIterator[None]:
    """Once every `seconds` until `done` is set (and once more then)."""
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), seconds)
        yield


async def flap(control: ReceiverControl, seconds: float, done: asyncio.Event, phases: list[Any]) -> None:
    """Up `seconds`, down `seconds` (refusing, then answering 503, in turn), until `done`; then up."""
    begin, modes, down = time.monotonic(), itertools.cycle(DOWN_MODES), False
    async for _ in every(seconds, done):
        mode = "up" if down or done.is_set() else next(modes)
        down = mode != "up"
        control(mode)
        phases.append((round(time.monotonic() - begin, 1), mode))


async def sample(port: int, gateway: int, tally: Tally, done: asyncio.Event, samples: list[Any]) -> None:
    """Every SAMPLE_S: (seconds, gateway and exporter RSS MiB, 1-minute load average, requests in
    flight, traces written: -1 when /readyz took over 5 s), and a line of progress."""
    begin = time.monotonic()
    async for _ in every(SAMPLE_S, done):
        children = [p for p in process_tree(gateway) if p != gateway]
        written = await asyncio.to_thread(traces_written, port)
        answered, failed = sum(map(len, tally.latencies.values())), sum(tally.failures.values())
        now = (time.monotonic() - begin, rss(gateway), sum(map(rss, children)), os.getloadavg()[0])
        samples.append((*now, in_flight := tally.started - answered - failed, written))
        line = "{:4.0f} s: RSS {:.1f} / {:.1f} MiB, load {:.2f}, ".format(*now) + f"{answered:,} answered, "
        print(
            line + f"{failed:,} failed, {in_flight:,} in flight, {written:,} traces written", file=sys.stderr
        )


async def load_phase(port: int, settings: Settings, control: ReceiverControl, pid: int) -> tuple[Any, ...]:
    tally, phases, samples, done = Tally(), [], [], asyncio.Event()  # type: ignore[var-annotated]
    await asyncio.gather(
        generate(f"http://{HOST}:{port}", settings, tally, done),
        flap(control, settings.flap, done, phases),
        sample(port, pid, tally, done, samples),
    )
    return tally, phases, samples


def log_spans(trace_dir: Path) -> tuple[int, Counter[str]]:
    """Rows (one a trace) the log holds, and their spans by route."""
    rows, by_route = 0, Counter[str]()
    for path in trace_dir.glob("*.rows"):
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            rows += 1
            by_route[row.get("route") or "?"] += row["spans"]
    return rows, by_route


def poll(read: Callable[[], Any], done: Callable[[Any], bool], deadline: float) -> Any:
    """`read()` again every 0.5 s until `done` says yes of what it read, or the deadline."""
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def traces_written(port: int) -> int:
    """The gateway's count of traces written, -1 while it does not answer /readyz in 5 s."""
    with contextlib.suppress(OSError):
        return int(run.trace_log_stats(port).get("written", 0))
    return -1


def bench(settings: Settings) -> dict[str, Any]:
    """Start everything, load, wait for the catch-up, and report (with a verdict)."""
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"duration_s": settings.duration, "rate": settings.rate, "flap_s": settings.flap},
        "machine": {"nproc": os.cpu_count(), "commit": checkout(), "loadavg_at_start": os.getloadavg(),
                    "calibration_ms_at_start": run.calibration_ms()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tfgw-flap-") as tmp, run.running([]) as processes:
        directory = Path(tmp)
        upstream_port, port = free_port(), free_port()
        command = [sys.executable, str(run.BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port)]
        upstream = run.start(command, directory / "upstream.log", stdout_pipe=True)
        processes.append(upstream)
        run.wait_for_ready_line(upstream, directory / "upstream.log")
        with receiver_process(directory) as (receiver, control):
            config = directory / "tfgw.toml"
            traces = directory / "traces"
            config.write_text(CONFIG.format(host=HOST, port=port, upstream=upstream_port, traces=traces,
                                            receiver=control.port))  # fmt: skip
            gateway = run.start_gateway(argparse.Namespace(tfgw=settings.tfgw), config, port,
                                        directory / "tfgw.log", False, processes)  # fmt: skip
            report |= measure(settings, port, control, gateway.pid, traces)
            report["cpu_s"] |= {"upstream": cpu_seconds(upstream.pid), "receiver": cpu_seconds(receiver.pid)}
    report["machine"] |= {"loadavg_at_end": os.getloadavg(), "calibration_ms_at_end": run.calibration_ms()}
    report["verdict"] = verdict(report)
    return report


def measure(
    settings: Settings, port: int, control: ReceiverControl, gateway: int, traces: Path
) -> dict[str, Any]:
    """The load (with the flaps and the samples), then the catch-up: every figure of the report."""
    tree_before, self_before, begin = cpu_seconds(gateway), sum(os.times()[:2]), time.monotonic()
    tally, phases, samples = asyncio.run(load_phase(port, settings, control, gateway))
    load_s = time.monotonic() - begin
    tree_load, self_load = cpu_seconds(gateway) - tree_before, sum(os.times()[:2]) - self_before
    deadline = time.monotonic() + settings.catch_up
    answered = sum(map(len, tally.latencies.values()))
    # every answered request is a trace: wait for its row (the rows lag the lines) ...
    written = poll(lambda: traces_written(port), lambda n: n >= answered, deadline)
    rows, by_route = poll(lambda: log_spans(traces), lambda counted: counted[0] >= written, deadline)
    spans = sum(by_route.values())
    # ... then for the receiver to hold every span of them
    counts = poll(control, lambda c: c["unique"] >= spans, deadline)
    exporter = [p for p in process_tree(gateway) if p != gateway]
    half = samples[len(samples) // 2 :]
    return {  # rss samples: seconds, gateway and exporter MiB, requests in flight, traces written
        "requests": {"scheduled": round(settings.duration * settings.rate), "started": tally.started,
                     "started_late": tally.late, "max_lag_ms": round(tally.max_lag_s * 1000, 1),
                     "answered": answered, "load_s": round(load_s, 1), "failed": dict(tally.failures),
                     "examples": tally.examples},
        "routes": {name: {"answered": len(v), "p50_ms": percentile_ms(sorted(v), 50) if v else None,
                          "p99_ms": percentile_ms(sorted(v), 99) if v else None}
                   for name, v in tally.latencies.items()},
        "spans": {"traces_written": written, "rows": rows, "written": spans, "by_route": dict(by_route),
                  "received": counts.get("spans", 0), "unique": counts["unique"],
                  "missing": max(0, spans - counts["unique"]), "duplicates": counts.get("duplicate spans", 0),
                  "resent_batches": counts.get("resent batches", 0),
                  "resent_spans": counts.get("resent spans", 0),
                  "caught_up_after_s": round(time.monotonic() - begin - load_s, 1)},
        "receiver": {"phases": phases, **{key.replace(" ", "_"): n for key, n in counts.items()}},
        "rss": {"samples": [[round(t), round(g, 1), round(e, 1), f, w] for t, g, e, _, f, w in samples],
                "slope_second_half_mib_per_min": {n: round(slope(half, c), 3) if len(half) > 1 else None
                                                  for c, n in ((1, "gateway"), (2, "exporter"))}},
        "loadavg_1m_during": [round(s[3], 2) for s in samples],
        "cpu_s": {"gateway_tree_load": round(tree_load, 2),
                  "gateway_tree": round(cpu_seconds(gateway) - tree_before, 2),
                  "exporter_total": round(sum(map(cpu_seconds, exporter)), 2),
                  "load_generator": round(self_load, 2)},
    }  # fmt: skip


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """What fails the run: a request failed because of the gateway, a missing span, a duplicate
    outside a re-sent batch (or a span the rows never counted)."""
    requests, spans = report["requests"], report["spans"]
    gateway_failures = sum(n for cause, n in requests["failed"].items() if cause != "load generator")
    beyond = spans["duplicates"] - spans["resent_spans"]
    problems = [text for wrong, text in (
        (gateway_failures, f"{gateway_failures} client requests failed because of the gateway"),
        (spans["missing"], f"{spans['missing']} spans written never reached the receiver"),
        (spans["unique"] > spans["written"], f"{spans['unique'] - spans['written']} spans beyond the rows'"),
        (beyond, f"{beyond} duplicate spans outside a re-sent batch"),
    ) if wrong]  # fmt: skip
    return {"gateway_failures": gateway_failures, "missing_spans": spans["missing"],
            "duplicates_beyond_documented": beyond, "ok": not problems, "problems": problems}  # fmt: skip


def table(head: str, rows: list[tuple[Any, ...]]) -> list[str]:
    rule = "| --- " + "| ---: " * (head.count("|") - 2) + "|"
    return ["", head, rule, *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    r, s, v, receiver = (report[k] for k in ("requests", "spans", "verdict", "receiver"))
    return [
        (f"requests scheduled / started / started {LATE_S * 1000:g}+ ms late (max lag, ms)",
         f"{r['scheduled']:,} / {r['started']:,} / {r['started_late']:,} ({r['max_lag_ms']})"),
        ("answered whole", f"{r['answered']:,}"),
        ("failed because of the gateway / in the load generator",
         f"{v['gateway_failures']:,} / {r['failed'].get('load generator', 0):,}"),
        ("traces written (rows)", f"{s['traces_written']:,} ({s['rows']:,})"),
        ("spans written (the rows' `spans`)", f"{s['written']:,}"),
        ("spans at the receiver: distinct / received", f"{s['unique']:,} / {s['received']:,}"),
        ("spans missing", f"{s['missing']:,}"),
        ("duplicate spans (of them in re-sent batches)", f"{s['duplicates']:,} ({s['resent_spans']:,})"),
        ("export requests accepted / answered 503",
         f"{receiver.get('requests', 0):,} / {receiver.get('answered_503', 0):,}"),
        ("every span delivered, after the load", f"{s['caught_up_after_s']:g} s"),
    ]  # fmt: skip


def processes(report: dict[str, Any]) -> list[tuple[str, ...]]:
    cpu, samples = report["cpu_s"], report["rss"]["samples"]
    rows: list[tuple[str, ...]] = []
    for column, name in ((1, "gateway"), (2, "exporter")):
        values = [x[column] for x in samples] or [0.0]
        shown = " / ".join(f"{x:.1f}" for x in (values[0], values[len(values) // 2], values[-1]))
        slope_mib = report["rss"]["slope_second_half_mib_per_min"][name]
        spent = cpu["exporter_total"] if name == "exporter" else cpu["gateway_tree"] - cpu["exporter_total"]
        rows.append((name, shown, "n/a" if slope_mib is None else f"{slope_mib:+.2f}", f"{spent:,.1f}"))
    rows.append(("load generator (this process)", "", "", f"{cpu['load_generator']:,.1f}"))
    rows.append(("fake upstream / receiver", "", "", f"{cpu['upstream']:,.1f} / {cpu['receiver']:,.1f}"))
    return rows


def markdown(report: dict[str, Any]) -> str:
    m, r, cpu, v, given = (report[k] for k in ("machine", "requests", "cpu_s", "verdict", "settings"))
    load = report["loadavg_1m_during"] or [0.0]
    lines = [
        f"{report['date']}; {m['nproc']} CPUs, tfgw at {m['commit']}, {given['duration_s']:g} s at "
        f"{given['rate']:g} req/s, the receiver flapping every {given['flap_s']:g} s; load average (1 min) "
        f"{m['loadavg_at_start'][0]:.2f} at start, {min(load):.2f}-{max(load):.2f} during the run, "
        f"{m['loadavg_at_end'][0]:.2f} at end; calibration loop {m['calibration_ms_at_start']:g} ms at "
        f"start, {m['calibration_ms_at_end']:g} ms at end",
        *table("| figure | value |", figures(report)),
        *table("| route | answered | p50 ms | p99 ms |", [
            (name, f"{x['answered']:,}", f"{x['p50_ms']:,.2f}", f"{x['p99_ms']:,.2f}")
            for name, x in report["routes"].items() if x["answered"]]),
        *table("| process | RSS MiB first / half-way / last | RSS slope, 2nd half, MiB/min | CPU s |",
               processes(report)),
        "",
        f"gateway tree CPU during the load: {cpu['gateway_tree_load']:,.1f} s, "
        f"{cpu['gateway_tree_load'] * 1e6 / max(1, r['answered']):,.0f} µs a request",
        "verdict: " + ("pass" if v["ok"] else "FAIL: " + "; ".join(v["problems"])),
    ]  # fmt: skip
    return "\n".join(lines + [f"- {e}" for e in r["examples"]])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    bounds = {"duration": MAX_DURATION_S, "rate": MAX_RATE, "flap": 600.0, "catch_up": 600.0}
    for name, meaning in (
        ("duration", "seconds of load"),
        ("rate", "requests started a second"),
        ("flap", "seconds up, then as many down"),
        ("catch_up", "seconds after the load for the receiver to hold every span"),
    ):
        default = getattr(Settings(), name)
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=default, help=f"{meaning} (default {default:g})")
    parser.add_argument("--tfgw", help="command that runs tfgw (default: the tfgw beside this Python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    parser.add_argument("--serve-receiver", nargs=2, type=int, help=argparse.SUPPRESS)  # PORT CONTROL_PORT
    args = parser.parse_args(argv)
    for name, limit in bounds.items():
        if not 0 < getattr(args, name) <= limit:
            parser.error(
                f"--{name.replace('_', '-')} must be within (0, {limit:g}], not {getattr(args, name):g}"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_receiver:
        uvloop.run(serve_receiver(*args.serve_receiver))
        return 0
    settings = Settings(args.duration, args.rate, args.flap, args.catch_up, args.tfgw)
    reports: list[dict[str, Any]] = []

    def measured() -> dict[str, Any]:
        reports.append(bench(settings))
        return reports[0]

    code = run.run_command(measured, (lambda r: json.dumps(r, indent=2)) if args.json else markdown)
    return code or (0 if reports[0]["verdict"]["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
