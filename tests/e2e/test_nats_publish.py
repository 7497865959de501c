"""Gateways publishing to NATS JetStream, end to end: real `tfgw serve` processes (their exporter
child publishes), a real `nats-server -js` on loopback (tests/nats.py), the stream read back by a
consumer of the test's own."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from tests.e2e.conftest import OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from tests.nats import NatsServer, Record, read_stream
from tfgw.bus.publish import msg_id
from tfgw.tracing.segments import log_segments

HELLO = [{"role": "user", "content": "hello over the bus"}]
ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
DEADLINE_S = 40.0


def write_config(directory: Path, upstream: FakeUpstream, nats_url: str) -> Path:
    """The e2e gateway config without gateway keys, its own trace and state dirs, `[bus]` NATS."""
    directory.mkdir(parents=True, exist_ok=True)
    text = gateway_config(upstream.url, directory / "traces")
    text = text[: text.index("[[keys]]")] + text[text.index("[providers.up]") :]
    text = text.replace("[server]\n", f'[server]\nstate_dir = "{directory / "state"}"\n', 1)
    config = directory / "tfgw.toml"
    config.write_text(text + f'\n[bus]\nkind = "nats"\nurl = "{nats_url}"\n')
    return config


def chat(gw: Gateway, n: int) -> list[float]:
    """`n` chat requests, each must succeed; their wall-clock durations in seconds."""
    took = []
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        for _ in range(n):
            start = time.perf_counter()
            answer = client.chat.completions.create(model="gpt", messages=HELLO)
            took.append(time.perf_counter() - start)
            assert answer.choices[0].message.content
    return took


def log_lines(trace_dir: Path) -> list[bytes]:
    """Every complete line of a gateway's trace log, in its order."""
    return [line for p in log_segments(trace_dir) for line in p.read_bytes().split(b"\n") if line]


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stream_count(nats: NatsServer) -> Callable[[int], bool]:
    return lambda n: len(read_stream(nats.url)) >= n


def publisher(gw: Gateway) -> tuple[object, ...]:
    """The publisher's state, delivered, pending bytes and last error, as `GET /readyz` shows them."""
    nats = httpx.get(f"{gw.url}/readyz", timeout=5).json()["export"]["nats"]
    return (nats["state"], nats["delivered"], nats["pending_bytes"], nats["last_error"])


def duplicates(records: list[Record]) -> int:
    return len(records) - len({r.msg_id for r in records})


def test_two_gateways_on_one_nats_put_every_request_on_the_stream_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with NatsServer(tmp_path) as nats:
        a, b = (write_config(tmp_path / name, upstream, nats.url) for name in ("a", "b"))
        with Gateway(a, env=ENV) as gw_a, Gateway(b, env=ENV) as gw_b:
            chat(gw_a, 12)
            chat(gw_b, 9)
            chat(gw_a, 3)
            wait_for(lambda: len(log_lines(tmp_path / "a" / "traces")) == 15, "gateway a's 15 lines")
            wait_for(lambda: len(log_lines(tmp_path / "b" / "traces")) == 9, "gateway b's 9 lines")
            wait_for(lambda: stream_count(nats)(24), "24 records on the stream")
            wait_for(lambda: publisher(gw_a) == ("running", 15, 0, None), "gateway a's /readyz")
        records = read_stream(nats.url)
    lines_a, lines_b = log_lines(tmp_path / "a" / "traces"), log_lines(tmp_path / "b" / "traces")
    assert sorted(r.data for r in records) == sorted(lines_a + lines_b)
    assert [r.data for r in records if r.data in set(lines_a)] == lines_a  # in order per gateway
    assert [r.data for r in records if r.data in set(lines_b)] == lines_b
    assert [r.msg_id for r in records] == [msg_id(r.data) for r in records]
    assert duplicates(records) == 0


def test_nats_down_slows_no_request_and_every_line_arrives_in_order_once_it_is_back(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with NatsServer(tmp_path) as nats:
        a, b = (write_config(tmp_path / name, upstream, nats.url) for name in ("a", "b"))
        with Gateway(a, env=ENV) as gw_a, Gateway(b, env=ENV) as gw_b:
            chat(gw_a, 5)  # warm: the first requests open the upstream connections
            before = chat(gw_a, 20) + chat(gw_b, 20)
            wait_for(lambda: stream_count(nats)(45), "the first 45 records")
            nats.stop()
            during = chat(gw_a, 20) + chat(gw_b, 20)
            wait_for(lambda: len(log_lines(tmp_path / "a" / "traces")) == 45, "gateway a's lines on disk")
            wait_for(lambda: len(log_lines(tmp_path / "b" / "traces")) == 40, "gateway b's lines on disk")
            nats.start()
            wait_for(lambda: stream_count(nats)(85), "all 85 records after NATS came back")
        records = read_stream(nats.url)
    assert statistics.median(during) <= 2 * statistics.median(before) + 0.02, (before, during)
    assert max(during) < 1.0, during
    lines_a, lines_b = log_lines(tmp_path / "a" / "traces"), log_lines(tmp_path / "b" / "traces")
    assert [r.data for r in records if r.data in set(lines_a)] == lines_a
    assert [r.data for r in records if r.data in set(lines_b)] == lines_b
    assert (len(records), duplicates(records)) == (85, 0)


def test_a_gateway_killed_while_nats_is_down_loses_nothing_it_had_written(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The log is the spool: what the gateway wrote before SIGKILL is published once it runs again
    (only traces not yet written, at most the last ~50 ms of them, could be lost: docs/bus.md)."""
    with NatsServer(tmp_path) as nats:
        config = write_config(tmp_path / "a", upstream, nats.url)
        trace_dir = tmp_path / "a" / "traces"
        with Gateway(config, env=ENV) as gw:
            chat(gw, 4)
            wait_for(lambda: stream_count(nats)(4), "the first 4 records")
            nats.stop()
            chat(gw, 10)
            wait_for(lambda: len(log_lines(trace_dir)) == 14, "14 lines on disk")
            assert gw.process is not None
            os.kill(gw.process.pid, signal.SIGKILL)  # serve alone: its exporter child ends by itself
            gw.process.wait(10)
        nats.start()
        with Gateway(config, env=ENV) as gw:
            chat(gw, 2)
            wait_for(lambda: stream_count(nats)(16), "all 16 records")
        records = read_stream(nats.url)
    assert [r.data for r in records] == log_lines(trace_dir)
    assert duplicates(records) == 0
