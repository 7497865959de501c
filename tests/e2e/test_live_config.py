"""Live config: `tfgw serve` takes a changed config file (or SIGHUP) without a restart, refuses a
broken edit and keeps serving the old one, and lets a request in flight finish on the config it began
with."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import GATEWAY_KEY, OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import generate_key, hash_key

HELLO = [{"role": "user", "content": "hello there"}]
ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
READYZ = {"authorization": f"Bearer {GATEWAY_KEY}"}  # /readyz's details need a key when keys exist
NEW_MODEL = '\n[[models]]\nname = "gpt-new"\ntargets = [{ provider = "up", model = "gpt-4o" }]\n'
DEAD_URL = 'base_url = "http://127.0.0.1:9/v1"'


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held (polled), or None when it never did within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def status(gw: Gateway, key: str, model: str = "gpt") -> int:
    body = {"model": model, "messages": HELLO}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=10).status_code


def workers_seen(gw: Gateway, tries: int = 20) -> set[int]:
    """The worker processes that answered `tries` new connections (a SIGHUP sent before a worker
    serves is not a reload of it)."""
    return {httpx.get(f"{gw.url}/readyz", headers=READYZ, timeout=5).json()["worker"] for _ in range(tries)}


def reloads(gw: Gateway) -> dict[str, int]:
    return httpx.get(f"{gw.url}/readyz", headers=READYZ, timeout=5).json()["config"]


@pytest.fixture
def config(tmp_path: Path, upstream: FakeUpstream) -> Path:
    path = tmp_path / "tfgw.toml"
    path.write_text(gateway_config(upstream.url, tmp_path / "traces"))
    return path


def test_a_key_revoked_while_serving_is_refused_within_a_second(config: Path) -> None:
    other = generate_key()
    config.write_text(config.read_text() + f'\n[[keys]]\nname = "other"\nhash = "{hash_key(other)}"\n')
    with Gateway(config, env=ENV) as gw:
        assert (status(gw, other), status(gw, GATEWAY_KEY)) == (200, 200)
        revoke = [sys.executable, "-m", "tfgw", "keys", "revoke", "other", "--config", str(config)]
        subprocess.run(revoke, check=True, capture_output=True, timeout=30)
        took = wait_for(lambda: status(gw, other) == 401, timeout=1.0)
        assert took is not None, "the revoked key still worked a second later"
        assert status(gw, GATEWAY_KEY) == 200
        assert reloads(gw) == {"reloads": 1, "refused": 0}


def test_a_broken_edit_is_refused_and_the_old_config_keeps_serving(config: Path) -> None:
    good = config.read_text()
    with Gateway(config, env=ENV) as gw:
        config.write_text(good.replace('name = "gpt"', 'name = "gpt"\nretries = "two"'))
        assert wait_for(lambda: reloads(gw)["refused"] >= 1, timeout=5) is not None
        assert status(gw, GATEWAY_KEY) == 200
        line = next(line for line in gw.logs().splitlines() if "config reload refused" in line)
        retries_line = _line_of(good, 'name = "gpt"') + 1
        assert line.endswith(f"{config}:{retries_line}: models[0].retries: expected an integer, got a string")
        # a good edit after it is taken: the new model answers
        config.write_text(good + NEW_MODEL)
        assert wait_for(lambda: status(gw, GATEWAY_KEY, "gpt-new") == 200, timeout=5) is not None
        assert reloads(gw) == {"reloads": 1, "refused": 1}


def test_sighup_reloads_even_when_the_file_looks_unchanged(config: Path) -> None:
    text = config.read_text()
    with Gateway(config, "--no-reload", env=ENV) as gw:
        config.write_text(text + NEW_MODEL)
        time.sleep(0.6)  # more than two polls: without --no-reload this edit would have been taken
        assert status(gw, GATEWAY_KEY, "gpt-new") == 404
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: status(gw, GATEWAY_KEY, "gpt-new") == 200, timeout=5) is not None


def test_sighup_to_the_parent_of_two_workers_reloads_both(config: Path) -> None:
    with Gateway(config, "--workers", "2", "--no-reload", env=ENV) as gw:
        assert wait_for(lambda: len(workers_seen(gw)) == 2, timeout=10) is not None
        config.write_text(config.read_text() + NEW_MODEL)
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        # every new connection may land on either worker: twenty in a row answer from the new config
        assert (
            wait_for(lambda: all(status(gw, GATEWAY_KEY, "gpt-new") == 200 for _ in range(20)), 5) is not None
        )


def test_a_stream_in_flight_finishes_on_the_config_it_began_with(
    config: Path, upstream: FakeUpstream
) -> None:
    with Gateway(config, env=ENV) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY)
        whole = client.chat.completions.create(model="gpt", messages=HELLO).choices[0].message.content
        upstream.stream_delay(0.05)  # a second or so of stream
        stream = client.chat.completions.create(model="gpt", messages=HELLO, stream=True)
        first = next(iter(stream))
        # the provider the stream is on moves to a dead address while it streams
        config.write_text(config.read_text().replace(f'base_url = "{upstream.url}/v1"', DEAD_URL, 1))
        assert wait_for(lambda: reloads(gw)["reloads"] == 1, timeout=5) is not None
        rest = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert text == whole
        assert status(gw, GATEWAY_KEY, "gpt") == 502  # a new request is on the new config


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1
