from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import hash_key

GATEWAY_KEY = "tfgw-e2e-gateway-key-0123456789abcdef"
OPENAI_KEY = "sk-upstream-openai-key-0123456789"
AZURE_KEY = "azure-upstream-key-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-upstream-key-0123456789abcdef"
PROVIDER_KEYS = (OPENAI_KEY, AZURE_KEY, ANTHROPIC_KEY)

MAX_BODY = 64 * 1024


def gateway_config(upstream: str, traces: Path) -> str:
    return f"""
[server]
max_body_bytes = {MAX_BODY}
graceful_timeout = 10.0

[routing]
unhealthy_after = 0  # one gateway serves every test: a target that failed in one must not rest in the next

[tracing]
dir = "{traces}"
project = "e2e"

[[keys]]
name = "e2e"
hash = "{hash_key(GATEWAY_KEY)}"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"

[providers.plain]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"
stream_usage = false

[providers.az]
kind = "azure"
base_url = "{upstream}"
api_key = "{AZURE_KEY}"
api_version = "2024-10-21"

[providers.claude]
kind = "anthropic"
base_url = "{upstream}"
api_key = "{ANTHROPIC_KEY}"

[providers.native]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"
responses = true

[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "gpt"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
price = {{ input_per_mtok = 0.25, output_per_mtok = 2.0 }}

[[models]]
name = "claude"
targets = [{{ provider = "claude", model = "claude-3-5-haiku" }}]

[[models]]
name = "azure-gpt"
targets = [{{ provider = "az", model = "my-deployment" }}]

[[models]]
name = "gpt-native"
targets = [{{ provider = "native", model = "gpt-4o" }}]

[[models]]
name = "emb"
targets = [{{ provider = "up", model = "text-embedding-3-small" }}]

[[models]]
name = "dead-then-gpt"
targets = [{{ provider = "dead", model = "gpt-4o" }}]
fallbacks = ["gpt"]

[[models]]
name = "gpt-then-claude"
targets = [{{ provider = "up", model = "gpt-4o" }}]
fallbacks = ["claude"]

[[models]]
name = "impatient"
targets = [{{ provider = "up", model = "gpt-4o" }}]
timeout = {{ total = 0.5 }}
"""


@pytest.fixture(scope="session")
def shared_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def upstream(shared_upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake provider, with nothing programmed by an earlier test."""
    shared_upstream.reset()
    return shared_upstream


@pytest.fixture(scope="session")
def trace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@pytest.fixture(scope="session")
def gateway(
    shared_upstream: FakeUpstream, trace_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("gw") / "tfgw.toml"
    config.write_text(gateway_config(shared_upstream.url, trace_dir))
    with Gateway(config, env={"E2E_OPENAI_KEY": OPENAI_KEY}) as gw:
        yield gw


@pytest.fixture
def traces(trace_dir: Path) -> TraceFiles:
    return TraceFiles(trace_dir)


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    return upstream


@pytest.fixture
def client(gateway: Gateway, up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20) as c:
        yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
