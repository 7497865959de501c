"""`tfgw traces tail --nats` across two real gateways publishing to one real nats-server: the
requests of both replicas, live, each once; and a tail (or its follower) stopped at once whatever
NATS is doing, messages flowing among it."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import orjson
import pytest

from tests import processes
from tests.e2e.gateway import Gateway
from tests.nats import NatsServer, free_port, read_stream
from tests.samples import Request, row_of, trace_line
from tests.test_traces_cli import start_tail, stop
from tfgw.bus.live import STOP_S, BusFollower
from tfgw.config_bus import BusSettings

pytestmark = pytest.mark.e2e

#: a tail's exit after SIGTERM, seconds: its follower's thread ended (`close()` gives up on it
#: after `2 * STOP_S`, so a thread that does not end shows as an exit this late or later)
EXIT_S = 2 * STOP_S

#: a publisher of the same trace line, core NATS, one every millisecond, until it is stopped
FLOOD = """
import asyncio, sys
import nats

async def main(url, path):
    line = open(path, "rb").read()
    client = await nats.connect(url)
    await client.jetstream().add_stream(name="TFGW_TRACES", subjects=["tfgw.traces"])
    while True:
        await client.publish("tfgw.traces", line)
        await asyncio.sleep(0.001)

asyncio.run(main(*sys.argv[1:]))
"""
FLOODED = trace_line(Request(1))


def replica(directory: Path, nats_url: str, project: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tfgw.toml"
    path.write_text(
        f"""
[server]
state_dir = "{directory / "state"}"

[tracing]
dir = "{directory / "traces"}"
project = "{project}"

[bus]
kind = "nats"
url = "{nats_url}"

[providers.mock]
kind = "mock"

[[models]]
name = "demo"
targets = [{{ provider = "mock", model = "demo-1" }}]
"""
    )
    return path


def test_tail_nats_shows_the_requests_of_both_gateways_once_each(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as nats:
        configs = [replica(tmp_path / name, nats.url, f"replica-{name}") for name in ("a", "b")]
        with Gateway(configs[0]) as a, Gateway(configs[1]) as b:
            child, out, err = start_tail("--nats", nats.url, "--json")
            try:
                assert "following stream TFGW_TRACES" in err.next(timeout=20)
                sent = []
                for i in range(6):
                    gw = (a, b)[i % 2]
                    body = {"model": "demo", "messages": [{"role": "user", "content": f"hi {i}"}]}
                    answer = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=10)
                    assert answer.status_code == 200
                    sent.append((answer.headers["x-tfgw-trace-id"], f"replica-{'ab'[i % 2]}"))
                rows = [orjson.loads(out.next(timeout=20)) for _ in sent]
                out.none_within(1.0)  # and nothing twice
            finally:
                assert stop(child) == 0
    assert sorted((row["trace_id"], row["project"]) for row in rows) == sorted(sent)
    assert {row["model"] for row in rows} == {"demo"} and {row["status"] for row in rows} == {"ok"}


@contextmanager
def flood(nats: NatsServer, directory: Path) -> Iterator[None]:
    """Messages flowing onto the stream (made by the publisher), each `FLOODED`, for the `with`
    block."""
    line = directory / "line.json"
    line.write_bytes(orjson.dumps(FLOODED))
    with processes.running([sys.executable, "-c", FLOOD, nats.url, str(line)]):
        deadline = time.monotonic() + 20
        while not read_stream(nats.url):
            assert time.monotonic() < deadline, "the publisher made no stream within 20 s"
            time.sleep(0.05)
        yield


def make_stream(url: str) -> None:
    async def make() -> None:
        import nats

        client = await nats.connect(url)
        try:
            await client.jetstream().add_stream(name="TFGW_TRACES", subjects=["tfgw.traces"])
        finally:
            await client.close()

    asyncio.run(make())


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tfgw-bus-live"]


def test_a_follower_stopped_while_messages_arrive_ends_its_thread(tmp_path: Path) -> None:
    """Python 3.11's `asyncio.wait_for` (nats-py's `next_msg`) swallows a cancellation that comes
    as the message it waited for does; a follower stopped so once went on reading for ever, and
    `tail --nats` took `close()`'s whole wait to exit. Stopped fifteen times in a flow of messages
    (about a third of such stops hit it), each follower's thread has ended when `close()` returns."""
    with NatsServer(tmp_path / "nats") as nats, flood(nats, tmp_path):
        bus = BusSettings(kind="nats", urls=(nats.url,))
        left = []
        for _ in range(15):
            follower = BusFollower(bus)
            deadline = time.monotonic() + 20
            while not list(follower.poll()):  # reading: its consumer made, a message through
                assert time.monotonic() < deadline, "no message within 20 s"
                time.sleep(0.01)
            follower.close()
            left += live_threads()
    assert left == []


@pytest.mark.parametrize("state", ["unreachable", "no stream", "flowing", "gone", "paused"])
def test_tail_nats_exits_at_once_on_sigterm_whatever_nats_is_doing(tmp_path: Path, state: str) -> None:
    """Never reached, no stream yet, messages flowing, NATS gone (reconnecting), NATS paused
    (SIGSTOP: connected, answering nothing): SIGTERM ends the tail with 0 within `EXIT_S`."""
    nats = NatsServer(tmp_path / "nats")
    with nats, flood(nats, tmp_path) if state == "flowing" else nullcontext():
        url = f"nats://127.0.0.1:{free_port()}" if state == "unreachable" else nats.url
        if state in ("gone", "paused"):
            make_stream(nats.url)
        child, out, err = start_tail("--nats", url, "--json")
        try:
            said = err.next(timeout=20)
            if state == "unreachable":  # the rest is the OS's own words for a refused connection
                assert said.startswith(f"tfgw: waiting for stream TFGW_TRACES at {url}: "), said
            elif state == "no stream":
                assert said == f"tfgw: waiting for stream TFGW_TRACES at {url}: no such stream (^C to stop)\n"
            else:
                assert said == f"tfgw: following stream TFGW_TRACES at {url} (^C to stop)\n"
            if state == "flowing":
                assert orjson.loads(out.next(timeout=20)) == row_of(FLOODED)
            elif state == "gone":
                nats.stop()
                assert err.next(timeout=20).startswith(f"tfgw: waiting for stream TFGW_TRACES at {url}")
            elif state == "paused":
                assert nats.process is not None
                nats.process.send_signal(signal.SIGSTOP)
        finally:
            start = time.monotonic()
            code = stop(child)
            took = time.monotonic() - start
            if nats.process is not None:
                nats.process.send_signal(signal.SIGCONT)
    assert (code, took < EXIT_S) == (0, True), f"exit {code} after {took:.2f} s"
