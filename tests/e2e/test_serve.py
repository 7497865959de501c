"""Serving behaviour: the demo, workers, graceful shutdown, disconnects, and refusing unsafe binds."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

from tests.e2e.conftest import gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import FakeUpstream

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
    text = gateway_config(upstream.url)
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
