"""`tfgw traces tail --nats` across two real gateways publishing to one real nats-server: the
requests of both replicas, live, each once."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.nats import NatsServer
from tests.test_traces_cli import start_tail, stop

pytestmark = pytest.mark.e2e


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
