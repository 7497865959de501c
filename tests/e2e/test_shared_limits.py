"""Limits counted across gateway replicas in NATS JetStream's key-value store (`[bus] kind =
"nats"`, tfgw.policy.shared): two real gateways, a real nats-server, the official openai SDK."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.nats import NatsServer
from tfgw.keys import hash_key

pytestmark = pytest.mark.e2e

KEY = "tfgw-shared-limits-key-0123456789"
RPM = 5


def config(directory: Path, nats_url: str) -> Path:
    """A gateway of its own (its traces and limits table in `directory`) on the shared bus."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tfgw.toml"
    path.write_text(
        f"""
[server]
state_dir = "{directory / "state"}"

[tracing]
dir = "{directory / "traces"}"

[bus]
kind = "nats"
url = "{nats_url}"

[[keys]]
name = "team"
hash = "{hash_key(KEY)}"
rpm = {RPM}

[providers.mock]
kind = "mock"

[[models]]
name = "demo"
targets = [{{ provider = "mock", model = "demo-1" }}]
"""
    )
    return path


def counting(gw: Gateway, how: str, timeout: float = 15.0) -> None:
    """Wait until the gateway counts its limits `how` ("shared" once NATS answered, "local")."""
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {KEY}"}  # /readyz's details need a key when keys exist
    while (found := httpx.get(f"{gw.url}/readyz", headers=headers).json().get("limits")) != how:
        assert time.monotonic() < deadline, f"limits counted {found!r}, not {how!r}"
        time.sleep(0.05)


def ask(client: openai.OpenAI) -> int:
    try:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    except openai.RateLimitError as exc:
        assert exc.response.headers["retry-after"].isdigit()
        return 429
    return 200


def test_an_rpm_limit_holds_exactly_across_two_gateways_and_per_host_while_nats_is_down(
    tmp_path: Path,
) -> None:
    with NatsServer(tmp_path) as nats:
        a_config, b_config = config(tmp_path / "a", nats.url), config(tmp_path / "b", nats.url)
        with Gateway(a_config) as a, Gateway(b_config) as b:
            counting(a, "shared")
            counting(b, "shared")
            clients = [openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0) for gw in (a, b)]
            answers = [ask(clients[i % 2]) for i in range(4 * RPM)]
            assert answers.count(200) == RPM and answers.count(429) == 3 * RPM
            assert answers[:RPM] == [200] * RPM  # the first five, whichever gateway took them
            # `tfgw keys list` shows the count across both gateways, read from NATS
            listed = subprocess.run(
                [sys.executable, "-m", "tfgw", "keys", "list", "--json", "--config", str(a_config)],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert (listed.returncode, listed.stderr) == (0, "")
            (row,) = orjson.loads(listed.stdout)
            assert (row["name"], row["rpm"], row["usage"]["rpm"]) == ("team", RPM, RPM)
            # NATS down: each gateway counts on its own (its own table), requests still answered
            nats.stop()
            assert ask(clients[0]) == 200
            counting(a, "local")
            assert [ask(clients[1]) for _ in range(RPM + 1)] == [200] * RPM + [429]
            for client in clients:
                client.close()
