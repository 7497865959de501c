"""`tfgw traces tail --nats` and `tfgw traces top --nats` against a real `nats-server -js` on
loopback: trace lines published by two replicas (two resources, as two gateways write them) are
read from the stream as the local commands read the log. Whole outputs; times in UTC."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import processes
from tests.nats import NatsServer
from tests.samples import MS, T0, Request, row_of, trace_line
from tests.test_traces_cli import start_tail, tfgw
from tests.test_traces_top import OLD, OLD_MODELS, approx_models
from tfgw.cli.top import Feed, top_settings
from tfgw.config_bus import BusSettings

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("plain_utc")]

STREAM, SUBJECT = "TFGW_TRACES", "tfgw.traces"
Run = tuple[pytest.MonkeyPatch, pytest.CaptureFixture[str]]


# -- a real nats-server (tests/nats.py), and what the replicas publish --------------------------


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    return monkeypatch, capsys


def publish(url: str, lines: Sequence[dict[str, Any] | bytes], *, make_stream: bool = False) -> None:
    """Each line published as a gateway's publisher does: the log line's bytes without its newline,
    `Nats-Msg-Id` its BLAKE2b-128 digest, acknowledged by JetStream."""

    async def go() -> None:
        import nats

        client = await nats.connect(url)
        try:
            js = client.jetstream()
            if make_stream:
                await js.add_stream(name=STREAM, subjects=[SUBJECT])
            for line in lines:
                data = line if isinstance(line, bytes) else orjson.dumps(line)
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                await js.publish(SUBJECT, data, headers={"Nats-Msg-Id": digest})
        finally:
            await client.close()

    asyncio.run(go())


def following(url: str) -> str:
    return f"tfgw: following stream {STREAM} at {url} (^C to stop)\n"


#: requests from two replicas, told apart by their resource (project) and provider
REPLICA_A = [Request(n, start=T0 + n * 1000 * MS, project="replica-a") for n in (1, 3)]
REPLICA_B = [
    Request(2, start=T0 + 2000 * MS, project="replica-b", model="claude-sonnet", provider="anthropic"),
    Request(4, start=T0 + 4000 * MS, project="replica-b", model="claude-sonnet", provider="anthropic",
            status=502, duration_ms=1200.0),
]  # fmt: skip
INTERLEAVED = [trace_line(r) for pair in zip(REPLICA_A, REPLICA_B, strict=True) for r in pair]


# -- tail ----------------------------------------------------------------------------------------


def test_tail_nats_shows_both_replicas_from_the_config(nats_server: NatsServer, tmp_path: Path) -> None:
    """`[bus] kind = "nats"` in the config: `tail` reads the stream without --nats; what was stored
    before it started is not shown; a line that is not JSON is skipped with a warning naming the
    stream and the message's sequence."""
    publish(nats_server.url, [trace_line(Request(9, project="replica-a"))], make_stream=True)
    config = tmp_path / "tfgw.toml"
    config.write_text(f'[bus]\nkind = "nats"\nurl = "{nats_server.url}"\n')
    child, out, err = start_tail("--config", str(config))
    try:
        assert err.next(10) == following(nats_server.url)
        publish(nats_server.url, [*INTERLEAVED[:2], b"{torn", *INTERLEAVED[2:]])
        lines = [out.next(5).rstrip() for _ in range(4)]
        assert err.next(5) == (
            f"tfgw: warning: nats:{STREAM}:4: invalid JSON, line skipped "
            "(unexpected character, expected a string key: line 1 column 2 (char 1))\n"
        )
    finally:
        code = processes.stop(child, timeout=5)
    assert (code, out.rest(), err.rest()) == (0, [], [])
    assert "\n".join(lines) + "\n" == """\
00:00:01.000  000117fe  gpt-4o                openai      ok 200       800.0 ms                        12/48   $0.000510
00:00:02.000  0002da62  claude-sonnet         anthropic   ok 200       800.0 ms                        12/48   $0.000756
00:00:03.000  0003946e  gpt-4o                openai      ok 200       800.0 ms                        12/48   $0.000510
00:00:04.000  0004b3d1  claude-sonnet         -           error 502   1200.0 ms                            -           -  provider_error
"""  # fmt: skip  # noqa: E501


def test_tail_nats_json_waits_for_the_stream_and_for_nats_to_come_back(nats_server: NatsServer) -> None:
    """Started before any gateway made the stream: it waits, then shows the stream from its start
    (all of it is new); NATS stopped and started again: it waits again, then goes on with the
    next message, none skipped, none twice."""
    child, out, err = start_tail("--nats", nats_server.url, "--json", "--spans")
    where = f"stream {STREAM} at {nats_server.url}"
    try:
        assert err.next(10) == f"tfgw: waiting for {where}: no such stream (^C to stop)\n"
        publish(nats_server.url, INTERLEAVED[:1], make_stream=True)
        assert err.next(5) == following(nats_server.url)
        first = [orjson.loads(out.next(5)) for _ in range(5)]  # the row, then its 4 spans
        nats_server.stop()
        assert err.next(5).startswith(f"tfgw: waiting for {where}")
        nats_server.start()
        publish(nats_server.url, INTERLEAVED[1:])
        after = [orjson.loads(out.next(15)) for _ in range(5 + 5 + 4)]  # a 502 has no attempt span
        while (said := err.next(5)) != following(nats_server.url):  # reconnecting, its stream back
            assert said.startswith(f"tfgw: waiting for {where}"), said
    finally:
        code = processes.stop(child, timeout=5)
    assert (code, out.rest(), err.rest()) == (0, [], [])
    rows = [first[0], *(o for o in after if "span_id" not in o)]
    assert rows == [row_of(line) for line in INTERLEAVED]
    assert [(s["name"], s["resource"]["service.name"]) for s in first[1:]] == [
        ("POST /v1/chat/completions", "tfgw"),
        ("auth", "tfgw"),
        ("model.resolve", "tfgw"),
        ("chat gpt-4o", "tfgw"),
    ]
    assert [r["project"] for r in rows] == ["replica-a", "replica-b", "replica-a", "replica-b"]


@pytest.mark.parametrize("command", ["tail", "top"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--nats", "http://127.0.0.1:4222"),
         "--nats: expected nats://HOST:PORT (or tls://, ws://, wss://), got 'http://127.0.0.1:4222'"),
        (("--nats", "nats://127.0.0.1:4222", "--dir", "log"),
         "--nats and --dir: give one or the other (the stream, or a local log)"),
    ],
)  # fmt: skip
def test_bad_nats_options_exit_2_naming_the_option(
    run: Run, command: str, options: tuple[str, ...], message: str
) -> None:
    assert tfgw(*run, "traces", command, *options) == (2, "", f"tfgw: {message}\n")


def test_a_bus_password_from_an_unset_variable_exits_2_naming_the_key(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "tfgw.toml"
    config.write_text('[bus]\nkind = "nats"\nuser = "tfgw"\npassword = "env:TFGW_TEST_NATS_PASSWORD"\n')
    assert tfgw(*run, "traces", "tail", "--config", str(config)) == (
        2, "", f"tfgw: {config}: bus.password: environment variable TFGW_TEST_NATS_PASSWORD is not set\n",
    )  # fmt: skip


# -- top -----------------------------------------------------------------------------------------


def test_top_nats_once_json_is_the_board_of_both_replicas(run: Run, nats_server: NatsServer) -> None:
    """The old log's requests published by two replicas, in the order they were written: the board
    is the one `top --once` gives for that log (anchored at its last request), and no targets."""
    lines = [trace_line(replace(r, project=f"replica-{'ab'[i % 2]}")) for i, r in enumerate(OLD)]
    publish(nats_server.url, lines, make_stream=True)
    code, out, err = tfgw(*run, "traces", "top", "--nats", nats_server.url, "--json")
    board = orjson.loads(out)
    assert (code, err) == (0, "")
    assert {**board, "models": approx_models(board["models"])} == {
        "window_s": 300,
        "now": "2024-01-01T00:04:57.000Z",
        "anchored": True,
        "bucket_s": 25.0,
        "models": OLD_MODELS,
        "targets": [],
    }


def test_top_nats_once_without_the_stream_exits_1(run: Run, nats_server: NatsServer) -> None:
    where = f"stream {STREAM} at {nats_server.url}"
    assert tfgw(*run, "traces", "top", "--nats", nats_server.url, "--once") == (
        1, "", f'tfgw: {where}: no such stream (a gateway with [bus] kind = "nats" makes it)\n',
    )  # fmt: skip


def test_top_nats_live_reads_the_window_then_new_requests(nats_server: NatsServer, tmp_path: Path) -> None:
    """Following: the requests already in the stream, then those published after, each once."""
    now = time.time_ns()
    recent = [Request(n, start=now - (60 - n) * 1000 * MS, project=f"replica-{'ab'[n % 2]}") for n in (1, 2)]
    publish(nats_server.url, [trace_line(r) for r in recent], make_stream=True)
    bus = BusSettings(kind="nats", urls=(nats_server.url,))
    feed = Feed(tmp_path, top_settings(None, tmp_path), 300, follow=True, bus=bus)
    try:
        assert _requests_within(feed, 10, [("gpt-4o", 2)]) == [("gpt-4o", 2)]
        late = Request(3, start=time.time_ns() - 2000 * MS, model="gpt-4o-mini", project="replica-b")
        publish(nats_server.url, [trace_line(late)])
        assert _requests_within(feed, 10, [("gpt-4o", 2), ("gpt-4o-mini", 1)]) == [
            ("gpt-4o", 2),
            ("gpt-4o-mini", 1),
        ]
    finally:
        feed.close()


def _requests_within(feed: Feed, seconds: float, expected: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The board's (model, requests), refreshed until it is `expected` or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while True:
        got = [(m["model"], m["requests"]) for m in feed.refresh()["models"]]
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
