"""Export faults end to end: a real `tfgw serve` (and its exporter child) against export backends
that misbehave, each a real server on 127.0.0.1 written here, small enough to read at a glance.

- `SlowReceiver`: a threaded `http.server` that decodes each OTLP/protobuf request, then waits
  `delay` seconds before it answers 200 (or answers a body that is not protobuf).
- `RawBackend`: a TCP server that accepts connections and never answers (a black hole), or
  answers every request with junk that is not HTTP/1.x.

What each fault gives is stated in docs/faults.md, "Export faults".
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.gateway import Gateway
from tests.e2e.test_export import ENV, chat, exporter_pids, otel, timed_chats, write_config
from tests.fakes.upstream import FakeUpstream

#: how long the slow backend takes to answer each export request: the issue's 10 s would make the
#: test last over 20 s (two slow answers) and equal the target's default `timeout`, so the
#: exporter would give up on the answer as it comes; 2 s is as slow, next to a request's ms
SLOW_S = 2.0
SPANS_PER_CHAT = 4
TIMED = 20

T = TypeVar("T")


class SlowReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1: records each request's spans, then answers after `delay`
    seconds, 200 with an empty `ExportTraceServiceResponse`, or with `garbage` as its body."""

    def __init__(self, delay: float = 0.0, garbage: bytes | None = None) -> None:
        self.delay, self.garbage = delay, garbage
        self.started: list[float] = []  # when each request had been read
        self.answered: list[tuple[float, int]] = []  # when each was answered, and its spans
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                receiver.started.append(time.monotonic())
                time.sleep(receiver.delay)
                answer = b"" if receiver.garbage is None else receiver.garbage
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf" if not answer else "text/html")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                receiver.answered.append((time.monotonic(), spans))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> int:
        return sum(n for _, n in self.answered)

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawBackend:
    """TCP on 127.0.0.1: accepts every connection; `junk` None holds it open and never answers
    (a black hole), else reads the request and answers `junk`, then closes."""

    def __init__(self, junk: bytes | None = None) -> None:
        self.junk = junk
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.closing = False

    def _serve(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            if self.junk is not None:
                with conn:
                    conn.settimeout(2)
                    try:
                        conn.recv(65536)  # the request's headers (and some of its body)
                        conn.sendall(self.junk)
                    except OSError:
                        pass

    def __enter__(self) -> Self:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing = True
        self.listener.close()
        for conn in self.connections:
            conn.close()


def target(name: str, url: str, extra: str = "") -> str:
    return f"""
[otel.targets.{name}]
kind = "otlp"
endpoint = "{url}"
{extra}
"""


def poll(get: Callable[[], T], done: Callable[[T], bool], timeout: float = 6.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def status(config: Path) -> dict[str, dict[str, Any]]:
    done = otel(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, dict[str, Any]] = orjson.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def baseline(shared_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> float:
    """The median latency of a chat completion through a gateway that exports nowhere."""
    shared_upstream.reset()
    config = write_config(tmp_path_factory.mktemp("baseline"), shared_upstream, "")
    with Gateway(config, env=ENV) as gw:
        chat(gw)
        return statistics.median(timed_chats(gw, TIMED))


def assert_unaffected(took: list[float], baseline: float) -> None:
    median = statistics.median(took)
    assert median <= 2 * baseline + 0.020, (
        f"median {median * 1000:.1f} ms, {baseline * 1000:.1f} ms without export"
    )


def test_a_backend_slow_to_answer_slows_no_request_and_gets_its_spans_once_it_answers(
    tmp_path: Path, upstream: FakeUpstream, baseline: float
) -> None:
    with SlowReceiver(delay=SLOW_S) as slow:
        config = write_config(tmp_path, upstream, target("slow", slow.url))
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            poll(lambda: slow.started, bool)  # the exporter now waits on the first answer
            took = timed_chats(gw, TIMED)
            assert slow.answered == []  # every request above was served while it waited
            poll(slow.spans, lambda n: n == (TIMED + 1) * SPANS_PER_CHAT, timeout=3 * SLOW_S)
    assert_unaffected(took, baseline)
    # the first chat's spans alone, then every later one in one batch, sent once the first was answered
    assert [spans for _, spans in slow.answered] == [SPANS_PER_CHAT, TIMED * SPANS_PER_CHAT]
    assert slow.started[1] >= slow.answered[0][0]


def test_a_black_holed_backend_slows_no_request_and_the_target_is_retrying_with_spans_pending(
    tmp_path: Path, upstream: FakeUpstream, baseline: float
) -> None:
    with RawBackend() as hole:
        config = write_config(tmp_path, upstream, target("hole", hole.url, "timeout = 1.0"))
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            poll(lambda: hole.connections, bool)
            took = timed_chats(gw, TIMED)
            report = poll(lambda: status(config)["hole"], lambda r: r["state"] == "retrying")
    assert_unaffected(took, baseline)
    keys = ("state", "reason", "delivered", "rejected", "dropped", "last_error")
    assert {k: report[k] for k in keys} == {
        "state": "retrying",
        "reason": None,
        "delivered": 0,
        "rejected": 0,
        "dropped": 0,
        "last_error": "retrying (timeout): ReadTimeout: timed out",
    }  # fmt: skip
    assert report["pending_bytes"] > 0


def export_requests(scrape: str) -> dict[str, tuple[int, int]]:
    """(`tfgw_export_attempts_total`, `tfgw_export_retries_total`) of each target in a scrape."""
    counted = re.findall(r'^tfgw_export_(attempts|retries)_total\{target="(\w+)"\} (\d+)$', scrape, re.M)
    values = {(kind, name): int(n) for kind, name, n in counted}
    return {name: (values[("attempts", name)], values[("retries", name)]) for _, name in values}


def test_garbage_answers_are_counted_and_the_exporter_keeps_running(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    html = b"<html><body>502 Bad Gateway, but said with a 200</body></html>"
    with SlowReceiver(garbage=html) as liar, RawBackend(junk=b"SPAM SPAM SPAM\r\n\r\n") as junk:
        targets = target("liar", liar.url) + target("junk", junk.url)
        config = write_config(tmp_path, upstream, targets)
        with Gateway(config, env=ENV) as gw:
            (exporter,) = exporter_pids(config)
            chat(gw)
            report = poll(
                lambda: status(config),
                lambda r: r["liar"]["delivered"] == SPANS_PER_CHAT and len(junk.connections) >= 2,
            )
            readyz = httpx.get(f"{gw.url}/readyz").json()["export"]["liar"]
            table = otel(config, "status").stdout
            tested = otel(config, "test", "liar")  # `otel test` says it too, and still exits 0
            liar.garbage = None  # the backend answers as OTLP says from now on
            chat(gw)  # served, and still exported where the backend accepts it
            after = poll(lambda: status(config), lambda r: r["liar"]["delivered"] == 2 * SPANS_PER_CHAT)
            scrape = poll(
                lambda: httpx.get(f"{gw.url}/metrics").text,
                lambda text: 'tfgw_export_attempts_total{target="liar"} 2\n' in text,
            )
            assert exporter_pids(config) == [exporter]
        assert "Traceback" not in gw.logs()
    warning = (
        f"200 with a body that is not an ExportTraceServiceResponse (text/html, {len(html)} bytes): is the "
        "endpoint right? It begins: <html><body>502 Bad Gateway, but said with a 200</body></html>"
    )
    keys = ("state", "delivered", "attempts", "retries", "rejected", "last_error", "warning")
    assert {k: report["liar"][k] for k in keys} == {
        "state": "running", "delivered": SPANS_PER_CHAT, "attempts": 1, "retries": 0, "rejected": 0,
        "last_error": None, "warning": warning,
    }  # fmt: skip
    assert readyz["warning"] == warning
    assert (tested.returncode, tested.stdout.startswith("liar: accepted (200, ")) == (0, True)
    assert ", 3 spans, trace " in tested.stdout and tested.stdout.endswith(f"; warning: {warning}\n")
    (liar_row,) = [line for line in table.splitlines() if line.startswith("liar ")]
    assert liar_row.rstrip().endswith(f"  {warning}"), table
    junk_report = after["junk"]
    assert {name: {k: r[k] for k in keys} for name, r in after.items()} == {
        "liar": {
            "state": "running", "delivered": 2 * SPANS_PER_CHAT, "attempts": 2, "retries": 0, "rejected": 0,
            "last_error": None, "warning": None,  # cleared by the well-formed answer
        },
        "junk": {
            "state": "retrying",
            "delivered": 0,
            "attempts": junk_report["retries"],  # every request failed, and was retried
            "retries": junk_report["retries"],
            "rejected": 0,
            "last_error": "retrying (transport error): RemoteProtocolError: SPAM SPAM SPAM\r\n",
            "warning": None,
        },
    }  # fmt: skip
    assert junk_report["retries"] >= 2
    requests = export_requests(scrape)
    assert requests["liar"] == (2, 0) and requests["junk"][0] == requests["junk"][1] >= 2
    assert report["junk"]["pending_bytes"] > 0 and liar.spans() == 2 * SPANS_PER_CHAT + 3  # and the test's


#: root may write to a read-only directory: the gateway then runs without the capabilities that let it
UNPRIVILEGED = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Makes a directory read-only (0o500) for the rest of the test; checks that a process started
    as the gateway is (`UNPRIVILEGED`) cannot write to it, or skips (root without setpriv)."""
    made: list[Path] = []

    def make(path: Path) -> None:
        path.chmod(0o500)
        made.append(path)
        probe = [
            *UNPRIVILEGED,
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'w')",
            str(path / "probe"),
        ]
        if subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0:
            pytest.skip(
                f"chmod 0o500 does not stop uid {os.getuid()} writing to {path}, and setpriv is missing"
            )

    yield make
    for path in made:
        path.chmod(0o700)


def test_a_trace_dir_not_writable_answers_every_request_and_counts_the_drop(
    tmp_path: Path, upstream: FakeUpstream, unwritable: Callable[[Path], None]
) -> None:
    config = write_config(tmp_path, upstream, "")
    traces = tmp_path / "traces"
    gateway = Gateway(config, env=ENV)
    gateway.command = [*UNPRIVILEGED, *gateway.command]  # as root, without the right to ignore modes
    with gateway as gw:
        poll(lambda: httpx.get(f"{gw.url}/metrics").status_code, lambda code: code == 200)
        unwritable(traces)
        chat(gw, 3)  # raises unless each is answered 200
        tracing = poll(lambda: httpx.get(f"{gw.url}/readyz").json()["tracing"], lambda t: t["dropped"] == 3)
        traces.chmod(0o700)
        chat(gw)
        scrape = poll(
            lambda: httpx.get(f"{gw.url}/metrics").text,
            lambda text: 'tfgw_trace_log_dropped_traces_total{reason="write_failed"} 3' in text,
        )
    error = f"PermissionError: [Errno 13] Permission denied: '{traces}/"
    assert (tracing["written"], tracing["dropped"], tracing["encode_errors"]) == (0, 3, 0)
    assert tracing["write_errors"] >= 1 and tracing["last_error"].startswith(error), tracing
    assert 'tfgw_trace_log_dropped_traces_total{reason="write_failed"} 3' in scrape
