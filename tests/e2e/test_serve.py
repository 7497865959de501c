"""Serving behaviour: the demo, workers, graceful shutdown, disconnects, and refusing unsafe binds."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import orjson

from tests.e2e.conftest import gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from tests.processes import spawn, stop

HELLO = [{"role": "user", "content": "hello there world"}]


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def config_for(tmp_path: Path, upstream: FakeUpstream) -> Path:
    config = tmp_path / "tfgw.toml"
    # no gateway keys here: these tests are about serving, not auth
    text = gateway_config(upstream.url, tmp_path / "traces")
    start = text.index("[[keys]]")
    config.write_text(text[:start] + text[text.index("[providers.up]") :])
    return config


def test_demo_quick_start_with_the_openai_sdk() -> None:
    with Gateway(None, "--demo") as gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused") as client:
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi there"}]
        )
        assert reply.choices[0].message.content == "Hello from tfgw's demo provider. You said: hi there"
        stream = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "stream this"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Hello from tfgw's demo provider. You said: stream this"
        assert len(client.embeddings.create(model="demo-embed", input="hello").data[0].embedding) == 16
        assert [m.id for m in client.models.list()] == ["demo", "demo-embed"]


def test_demo_with_a_config_in_reach_says_it_ignores_it() -> None:
    """./tfgw.toml and its export targets are left out of --demo, said in one line on stderr; the
    first stdout line (which scripts parse) is exactly what it always was."""
    Path("tfgw.toml").write_text('[otel.targets.phoenix]\nkind = "otlp"\nendpoint = "http://127.0.0.1:9"\n')
    command = [sys.executable, "-m", "tfgw", "serve", "--demo", "--port", "0"]
    process = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
    finally:
        stop(process, 15)
    assert process.stderr is not None
    port = re.fullmatch(r"tfgw 0\.1\.0 listening on http://127\.0\.0\.1:(\d+) .*\n", first)
    assert port is not None
    assert first == (
        f"tfgw 0.1.0 listening on http://127.0.0.1:{port.group(1)} "
        "(1 worker, config: demo, models: demo, demo-embed)\n"
    )
    assert process.stderr.read() == (
        "tfgw: warning: --demo ignores tfgw.toml and its 1 export target (phoenix); "
        "run `tfgw serve` without --demo to use it\n"
    )
    process.stdout.close()
    process.stderr.close()


def test_sigterm_lets_an_in_flight_stream_finish(tmp_path: Path) -> None:
    with FakeUpstream() as up:
        up.slow_stream_chunks(count=20, delay=0.05)
        gw = Gateway(config_for(tmp_path, up), env={"E2E_OPENAI_KEY": "sk-x-0123456789"})
        with gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0) as client:
            stream = client.chat.completions.create(model="gpt", messages=HELLO, stream=True)
            first = next(iter(stream))
            gw.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            rest = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
            assert text == "echo: hello there world" + " tick" * 20
            assert gw.process.wait(10) == 0  # type: ignore[union-attr]
            assert up.stream_disconnects == 0


def test_client_disconnect_mid_stream_closes_the_upstream(tmp_path: Path) -> None:
    with FakeUpstream() as up:
        up.slow_stream_chunks(count=100, delay=0.05)
        gw = Gateway(config_for(tmp_path, up), env={"E2E_OPENAI_KEY": "sk-x-0123456789"})
        with gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0) as client:
            stream = client.chat.completions.create(model="gpt", messages=HELLO, stream=True)
            next(iter(stream))
            stream.close()
            assert wait_for(lambda: up.stream_disconnects == 1)
            # the gateway is still fine
            assert client.chat.completions.create(model="gpt", messages=HELLO).choices[0].message.content


def test_several_workers_serve_the_same_port(tmp_path: Path) -> None:
    with FakeUpstream() as up:
        gw = Gateway(config_for(tmp_path, up), "--workers", "2", env={"E2E_OPENAI_KEY": "sk-x-0123456789"})
        with gw, httpx.Client(base_url=gw.url) as http:
            results = []

            def call() -> None:
                body = {"model": "gpt", "messages": HELLO}
                results.append(http.post("/v1/chat/completions", json=body).status_code)

            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == [200] * 8
            assert gw.stop() == 0
    # each worker appends to its own segments, and flushes them on the way out
    segments = sorted((tmp_path / "traces").glob("tfgw-*.jsonl"))
    lines = [line for path in segments for line in path.read_bytes().splitlines()]
    assert len(lines) == 8
    assert all(len(orjson.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 4 for line in lines)
    for path in segments:
        rows = path.with_suffix(".rows").read_bytes().splitlines()
        assert [orjson.loads(row)["end"] for row in rows][-1] == path.stat().st_size


def test_a_broken_trace_log_never_fails_a_request(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the trace directory should be\n")
    with FakeUpstream() as up:
        config = config_for(tmp_path, up)
        config.write_text(config.read_text().replace(str(tmp_path / "traces"), str(blocker / "traces")))
        with (
            Gateway(config, env={"E2E_OPENAI_KEY": "sk-x-0123456789"}) as gw,
            httpx.Client(base_url=gw.url) as http,
        ):
            for _ in range(3):
                answer = http.post("/v1/chat/completions", json={"model": "gpt", "messages": HELLO})
                assert answer.status_code == 200
            assert wait_for(lambda: http.get("/readyz").json()["tracing"]["dropped"] == 3)
            tracing = http.get("/readyz").json()["tracing"]
            assert tracing["written"] == 0
            assert tracing["write_errors"] >= 1
            assert tracing["last_error"].startswith("NotADirectoryError")
            assert re.search(r"could not write [123] trace\(s\) to .*/not-a-dir/traces", gw.logs())


def test_a_restart_never_appends_after_a_torn_line(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    torn = traces / "tfgw-20260101-000000-1-0001.jsonl"
    torn.write_bytes(b'{"resourceSpans":[{"resource":{},"scopeSpa')
    with (
        FakeUpstream() as up,
        Gateway(config_for(tmp_path, up), env={"E2E_OPENAI_KEY": "sk-x-0123456789"}) as gw,
    ):
        assert (
            httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt", "messages": HELLO}).status_code
            == 200
        )
    assert torn.read_bytes() == b'{"resourceSpans":[{"resource":{},"scopeSpa'
    fresh = [p for p in traces.glob("*.jsonl") if p != torn]
    assert len(fresh) == 1 and len(fresh[0].read_bytes().splitlines()) == 1


def test_refuses_a_public_bind_without_gateway_keys() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tfgw", "serve", "--demo", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "tfgw: --demo: server.host: refusing to listen on 0.0.0.0 without gateway keys: anyone who can reach "
        "it could use your provider keys. Add one with `tfgw keys add NAME`, or listen on 127.0.0.1.\n"
    )


def test_exclude_request_data_keeps_every_word_of_the_conversation_out_of_the_log(tmp_path: Path) -> None:
    secret_words = "purple elephants dancing quietly midnight"
    with FakeUpstream() as up:
        config = config_for(tmp_path, up)
        config.write_text(
            config.read_text().replace('project = "e2e"', 'project = "e2e"\nexclude_request_data = true')
        )
        gateway = Gateway(config, env={"E2E_OPENAI_KEY": "sk-x-0123456789"})
        with gateway as gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0) as client:
            ask = [{"role": "user", "content": secret_words}]
            client.chat.completions.create(model="gpt", messages=ask)
            list(client.chat.completions.create(model="claude", messages=ask, stream=True))
            client.embeddings.create(model="emb", input=secret_words)
    written = b"".join(p.read_bytes() for p in (tmp_path / "traces").iterdir())
    assert written.count(b'"traceId"') >= 3
    for word in secret_words.split():
        assert word.encode() not in written
    # what stays: roles, models, token counts
    for kept in (b"llm.input_messages.0.message.role", b"gpt-4o-mini", b"llm.token_count.prompt"):
        assert kept in written
