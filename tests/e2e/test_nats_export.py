"""The exporter in NATS mode end to end: a real `nats-server -js` on loopback, trace lines published
to its stream as the gateway's publisher does (the project's encoder, a `Nats-Msg-Id` each), real
`tfgw exporter` processes on one shared consumer per target, and a real OTLP receiver.

The consumer is made here before an exporter starts, with `ack_wait` 3 s instead of 60 s, so the
messages a killed exporter held come back within the test; an exporter uses an existing consumer
as it is.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.otlp import OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream
from tests.nats import NatsServer
from tests.processes import spawn, stop
from tests.samples import Request, span_id, trace_line
from tfgw.bus.connect import connect
from tfgw.bus.consume import FETCH_MESSAGES, consumer_config, consumer_name
from tfgw.bus.publish import msg_id
from tfgw.bus.stream import ensure_stream
from tfgw.config_bus import BusSettings
from tfgw.tracing.segments import log_segments

pytestmark = pytest.mark.e2e

ACK_WAIT_S = 3.0
SUMMARY = re.compile(
    r"rx: delivered (\d+) spans \((\d+) messages acked, (\d+) redelivered\), "
    r"rejected (\d+) spans \((\d+) messages termed\)"
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path) as server:
        yield server


# -- the stream, as the gateways fill it -------------------------------------------------------------


def bus_of(server: NatsServer) -> BusSettings:
    return BusSettings(kind="nats", urls=(server.url,))


def lines(first: int, count: int) -> list[bytes]:
    return [orjson.dumps(trace_line(Request(n))) for n in range(first, first + count)]


def llm_span_ids(first: int, count: int) -> set[str]:
    """The LLM span (the provider attempt, the line's 4th) of each line `lines()` made."""
    return {span_id(n, 3) for n in range(first, first + count)}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _publish(bus: BusSettings, data: list[bytes]) -> None:
    nc = await connect(bus, "test")
    js = nc.jetstream()
    await ensure_stream(js, bus)
    for line in data:
        await js.publish(bus.subject, line, headers={"Nats-Msg-Id": msg_id(line)})
    await nc.close()


async def _make_consumer(bus: BusSettings, target: str) -> None:
    nc = await connect(bus, "test")
    js = nc.jetstream()
    await ensure_stream(js, bus)
    await js.add_consumer(bus.stream, replace(consumer_config(bus, target), ack_wait=ACK_WAIT_S))
    await nc.close()


async def _consumer_info(bus: BusSettings, target: str) -> Any:
    nc = await connect(bus, "test")
    info = await nc.jetstream().consumer_info(bus.stream, consumer_name(target))
    await nc.close()
    return info


# -- exporters -----------------------------------------------------------------------------------------


def write_config(tmp_path: Path, server: NatsServer, receiver: OtlpHttpReceiver) -> Path:
    config = tmp_path / "tfgw.toml"
    config.write_text(
        f"""
[tracing]
dir = "{tmp_path / "traces"}"

[bus]
kind = "nats"
url = "{server.url}"

[otel.targets.rx]
kind = "otlp"
endpoint = "{receiver.url}"
"""
    )
    return config


class Exporter:
    """`tfgw exporter --config CONFIG` as a real process; its stderr in a file."""

    def __init__(self, config: Path, name: str) -> None:
        self.log = config.with_name(f"{name}.stderr")
        with self.log.open("w") as err:
            self.process = spawn(
                [sys.executable, "-m", "tfgw", "exporter", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)
        stop(self.process)

    def stop(self) -> dict[str, int]:
        """SIGTERM; what its last line says it did."""
        assert stop(self.process) == 0, self.log.read_text()
        match = SUMMARY.search(self.log.read_text())
        assert match is not None, self.log.read_text()
        keys = ("delivered", "acked", "redelivered", "rejected", "termed")
        return dict(zip(keys, map(int, match.groups()), strict=True))


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def llm_ids(receiver: OtlpHttpReceiver) -> list[str]:
    return [s["spanId"] for s in receiver.spans if s["name"] == "chat gpt-4o"]


# -- the tests -----------------------------------------------------------------------------------------


def test_an_exporter_killed_mid_stream_restarted_and_joined_by_another_loses_nothing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    bus = bus_of(nats_server)
    run(_make_consumer(bus, "rx"))
    count = 6 * FETCH_MESSAGES  # six fetches of a whole payload each
    run(_publish(bus, lines(1, count)))
    with OtlpHttpReceiver() as rx:
        rx.delay(0.3)  # every payload takes a while: the kill comes while one is on its way
        config = write_config(tmp_path, nats_server, rx)
        first = Exporter(config, "first")
        wait_until(lambda: rx.spans, 20, "a first payload accepted")
        first.kill()
        accepted_before = len(rx.spans)
        again, joined = Exporter(config, "again"), Exporter(config, "joined")
        wait_until(lambda: set(llm_ids(rx)) == llm_span_ids(1, count), 60, "every LLM span delivered")
        rx.delay(0)
        done = [again.stop(), joined.stop()]
        info = run(_consumer_info(bus, "rx"))
    ids = llm_ids(rx)
    duplicates = len(ids) - len(set(ids))
    redelivered = sum(d["redelivered"] for d in done)
    # the only duplicates: lines the killed exporter had sent (accepted or not) but not acked, which
    # JetStream gave again once its ack_wait ran out; at most the one fetch it held
    assert duplicates <= redelivered <= FETCH_MESSAGES, (duplicates, redelivered)
    assert 0 < accepted_before < 4 * count
    assert all(d["delivered"] > 0 for d in done), done  # the two shared the work
    assert len(rx.spans) == 4 * (count + duplicates)
    assert (info.num_pending, info.num_ack_pending, info.ack_floor.stream_seq) == (0, 0, count)


def test_a_rejected_payload_is_termed_counted_and_never_redelivered(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    bus = bus_of(nats_server)
    run(_publish(bus, lines(1, 3)))
    with OtlpHttpReceiver() as rx:
        rx.fail_next(400, message="span attribute too long")
        exporter = Exporter(write_config(tmp_path, nats_server, rx), "exporter")
        wait_until(lambda: rx.requests, 20, "a first request")
        run(_publish(bus, lines(4, 2)))
        rx.wait_for(8, timeout=20)
        statuses: list[Any] = []  # once settled, and its exporter idle on the consumer
        wait_until(lambda: _settled(statuses, _otel_status(tmp_path / "tfgw.toml")), 20, "settled")
        status = statuses[-1]
        done = exporter.stop()
    statuses = [r.status for r in rx.requests]  # the two later lines: one payload or two
    assert statuses[0] == "400" and set(statuses[1:]) == {"200"}
    assert sorted(llm_ids(rx)) == sorted(llm_span_ids(4, 2))  # nothing of the rejected three again
    assert done == {"delivered": 8, "acked": 2, "redelivered": 0, "rejected": 12, "termed": 3}
    assert (
        "target rx rejected 12 spans (3 messages termed): span attribute too long" in exporter.log.read_text()
    )
    assert status == {
        "publisher": None,  # no gateway publishes from this machine's trace log
        "consumers": {"rx": {
            "consumer": "tfgw-rx", "state": "consumer", "reason": None, "num_pending": 0,
            "num_ack_pending": 0, "num_redelivered": 0, "delivered": 5, "ack_floor": 5, "waiting": 1,
        }},
    }  # fmt: skip


def test_a_retryable_failure_is_redelivered_after_the_nak_delay(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    bus = bus_of(nats_server)
    run(_publish(bus, lines(1, 2)))
    with OtlpHttpReceiver() as rx:
        rx.fail_next(503, retry_after=1.5)
        exporter = Exporter(write_config(tmp_path, nats_server, rx), "exporter")
        wait_until(lambda: rx.requests, 20, "a first request")
        failed_at = time.monotonic()
        rx.wait_for(8, timeout=20)
        took = time.monotonic() - failed_at
        done = exporter.stop()
        info = run(_consumer_info(bus, "rx"))
    assert [r.status for r in rx.requests] == ["503", "200"]
    assert 1.4 <= took < 5, took
    assert done == {"delivered": 8, "acked": 2, "redelivered": 2, "rejected": 0, "termed": 0}
    assert (info.delivered.consumer_seq, info.num_ack_pending, info.ack_floor.stream_seq) == (4, 0, 2)
    assert (
        "target rx: 503" in exporter.log.read_text() or "nakked, again in 1.5 s" in exporter.log.read_text()
    )


def _settled(seen: list[Any], status: Any) -> bool:
    seen.append(status)
    rx = status["consumers"]["rx"]
    return bool(rx["num_ack_pending"] == 0 and rx["waiting"])


def _publisher(seen: list[Any], status: Any) -> dict[str, Any]:
    seen.append(status)
    publisher = status["publisher"] or {}
    return {k: publisher.get(k) for k in ("state", "delivered", "pending_bytes", "last_error")}


def _otel_status(config: Path, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "tfgw", "otel", "status", "--config", str(config), "--json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return orjson.loads(out.stdout)


def test_otel_status_reads_each_consumer_and_says_so_in_one_line_when_nats_is_down(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    bus = bus_of(nats_server)
    run(_make_consumer(bus, "rx"))
    run(_publish(bus, lines(1, 3)))
    with OtlpHttpReceiver() as rx:
        config = write_config(tmp_path, nats_server, rx)
    table = subprocess.run(
        [sys.executable, "-m", "tfgw", "otel", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (table.returncode, table.stderr) == (0, "")
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["target", "consumer", "pending", "ack", "pending", "redelivered", "delivered", "waiting", "reason"],
        ["rx", "tfgw-rx", "3", "0", "0", "0", "0"],
    ]
    nats_server.stop()
    down = subprocess.run(
        [sys.executable, "-m", "tfgw", "otel", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (down.returncode, down.stdout) == (1, "")
    assert down.stderr.startswith(f"tfgw: cannot reach NATS at {nats_server.url} within 3 s: "), down.stderr
    assert len(down.stderr.splitlines()) == 1


def gateway(directory: Path, upstream: FakeUpstream, nats: NatsServer) -> Path:
    """A gateway of its own trace and state dirs, publishing to `nats` (and exporting nothing)."""
    directory.mkdir(parents=True)
    text = gateway_config(upstream.url, directory / "traces")
    text = text[: text.index("[[keys]]")] + text[text.index("[providers.up]") :]
    text = text.replace("[server]\n", f'[server]\nstate_dir = "{directory / "state"}"\n', 1)
    config = directory / "tfgw.toml"
    config.write_text(text + f'\n[bus]\nkind = "nats"\nurl = "{nats.url}"\n')
    return config


def chat(gw: Gateway, n: int) -> None:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        for _ in range(n):
            client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])


def logged_span_ids(trace_dir: Path) -> list[str]:
    return [
        span["spanId"].lower()
        for segment in log_segments(trace_dir)
        for line in segment.read_bytes().splitlines()
        for rs in orjson.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def test_two_gateways_publish_and_one_exporter_delivers_every_span_of_both_once(
    tmp_path: Path, nats_server: NatsServer, upstream: FakeUpstream
) -> None:
    a, b = gateway(tmp_path / "a", upstream, nats_server), gateway(tmp_path / "b", upstream, nats_server)
    env = {"E2E_OPENAI_KEY": OPENAI_KEY}
    with OtlpHttpReceiver() as rx, Gateway(a, env=env) as gw_a, Gateway(b, env=env) as gw_b:
        exporter = Exporter(write_config(tmp_path, nats_server, rx), "exporter")
        chat(gw_a, 6)
        chat(gw_b, 4)
        chat(gw_a, 2)

        def logged() -> list[str]:
            return logged_span_ids(tmp_path / "a" / "traces") + logged_span_ids(tmp_path / "b" / "traces")

        wait_until(lambda: len(logged()) == 12 * 4, 20, "both gateways' 12 requests in their logs")
        wait_until(lambda: len(rx.spans) >= 12 * 4, 30, "every span delivered")
        done = exporter.stop()
        # on gateway a's machine `otel status` shows its publisher too (its file: at least every 2 s)
        seen: list[Any] = []
        expected = {"state": "running", "delivered": 8, "pending_bytes": 0, "last_error": None}
        wait_until(lambda: _publisher(seen, _otel_status(a)) == expected, 10, "gateway a's publisher")
    assert seen[-1]["consumers"] == {}  # gateway a's config names no target
    assert sorted(s["spanId"] for s in rx.spans) == sorted(logged())
    assert done == {"delivered": 48, "acked": 12, "redelivered": 0, "rejected": 0, "termed": 0}


def test_serve_with_exporter_delivers_from_the_stream_through_the_same_consumer(
    tmp_path: Path, nats_server: NatsServer, upstream: FakeUpstream
) -> None:
    config = gateway(tmp_path / "a", upstream, nats_server)
    with OtlpHttpReceiver() as rx:
        config.write_text(config.read_text() + f'\n[otel.targets.rx]\nkind = "otlp"\nendpoint = "{rx.url}"\n')
        with Gateway(config, "--exporter", env={"E2E_OPENAI_KEY": OPENAI_KEY}) as gw:
            chat(gw, 3)
            wait_until(lambda: len(rx.spans) >= 3 * 4, 30, "every span delivered")
            infos: list[Any] = []  # the acks follow the backend's answer
            wait_until(lambda: _acked(infos, bus_of(nats_server)) == 3, 10, "the 3 messages acked")
    assert sorted(s["spanId"] for s in rx.spans) == sorted(logged_span_ids(tmp_path / "a" / "traces"))
    assert (infos[-1].name, infos[-1].num_pending, infos[-1].num_ack_pending) == ("tfgw-rx", 0, 0)


def _acked(infos: list[Any], bus: BusSettings) -> int:
    infos.append(run(_consumer_info(bus, "rx")))
    floor: int = infos[-1].ack_floor.stream_seq
    return floor
