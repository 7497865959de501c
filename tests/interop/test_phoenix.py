"""Interop with Arize Phoenix, the OpenInference backend, as a real receiver.

The real gateway (`tfgw serve`, its `tfgw exporter` child) sends its traces to a real `phoenix serve`
on loopback over OTLP/HTTP and over OTLP/gRPC; the test reads them back through Phoenix's REST API
(`GET /v1/projects/{project}/spans`) and its GraphQL API (the token counts Phoenix derived from the
attributes, as its UI shows them). Phoenix is installed once into its own venv (tests/interop/phoenix.py);
set TFGW_SKIP_PHOENIX=1 to skip these tests, `-m "not phoenix"` deselects them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.upstream import FakeUpstream
from tests.interop.phoenix import PHOENIX_REQUIREMENT, PHOENIX_VENV, PhoenixServer, ensure_venv
from tfgw.tracing import otlp

pytestmark = pytest.mark.phoenix

OPENAI_KEY = "sk-upstream-openai-key-0123456789"
ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
ROOT = "POST /v1/chat/completions"
PROTOCOLS = ["http/protobuf", "grpc"]

# The fake upstream counts words: prompt = the message's words, completion = "echo:" + those words.
ASK = "tell me about the secret plan"  # 6 + 7 = 13
STREAMED = "count these five words"  # 4 + 5 = 9
TOKENS = {ASK: (6, 7, 13), STREAMED: (4, 5, 9)}

SPAN_TOKENS = """
query ($llm: ID!, $root: ID!) {
  llm: node(id: $llm) { ... on Span { spanKind tokenCountPrompt tokenCountCompletion tokenCountTotal } }
  root: node(id: $root) { ... on Span { spanKind cumulativeTokenCountTotal } }
}
"""


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    if os.environ.get("TFGW_SKIP_PHOENIX", "") not in ("", "0"):
        pytest.skip("TFGW_SKIP_PHOENIX is set: no Arize Phoenix interop")
    failure = None
    try:
        ensure_venv(PHOENIX_VENV)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        output = "".join(
            out.decode(errors="replace") if isinstance(out, bytes) else out or ""
            for out in (error.stdout, error.stderr)
        )  # bytes after a timeout, whatever text=True said
        failure = f"{error}\n{output[-2000:]}"
    if failure is not None:  # a failure, not a skip: CI must not pass without the interop tests
        pytest.fail(
            f"installing {PHOENIX_REQUIREMENT} into {PHOENIX_VENV} failed (TFGW_SKIP_PHOENIX=1 skips the "
            f"Phoenix interop tests): {failure}",
            pytrace=False,
        )
    with PhoenixServer(PHOENIX_VENV, tmp_path_factory.mktemp("phoenix")) as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def write_config(tmp_path: Path, upstream: FakeUpstream, phoenix: PhoenixServer, protocol: str) -> str:
    """A gateway config whose one export target is Phoenix; the target's project, unique to the test."""
    project = f"tfgw-{protocol.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
    endpoint = phoenix.grpc_url if protocol == "grpc" else phoenix.url
    (tmp_path / "tfgw.toml").write_text(f"""
[tracing]
dir = "{tmp_path / "traces"}"
project = "not-this-one"

[providers.up]
kind = "openai"
base_url = "{upstream.url}/v1"
api_key = "env:E2E_OPENAI_KEY"

[[models]]
name = "gpt"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[otel.targets.phoenix]
kind = "otlp"
protocol = "{protocol}"
endpoint = "{endpoint}"
project = "{project}"
""")
    return project


def by_kind(spans: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["span_kind"] == kind]


def the_root_and_llm_span(spans: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trace's root (a CHAIN span) and its one LLM span, which must be the root's child."""
    (root,) = [s for s in spans if s["parent_id"] is None]
    (llm,) = by_kind(spans, "LLM")
    assert (root["name"], root["span_kind"]) == (ROOT, "CHAIN")
    assert llm["name"] == "chat gpt-4o-mini"
    assert llm["parent_id"] == root["context"]["span_id"]
    assert {s["context"]["trace_id"] for s in spans} == {root["context"]["trace_id"]}
    return root, llm


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_phoenix_stores_the_gateways_traces_with_span_kinds_model_and_token_counts(
    protocol: str, phoenix: PhoenixServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    project = write_config(tmp_path, upstream, phoenix, protocol)
    local = TraceFiles(tmp_path / "traces")
    with (
        Gateway(tmp_path / "tfgw.toml", env=ENV) as gw,
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client,
    ):
        asked = client.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": ASK}]
        )
        assert asked.parse().choices[0].message.content == f"echo: {ASK}"
        streamed = client.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": STREAMED}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed.parse() if chunk.choices)
        assert text == f"echo: {STREAMED}"
        traces = {ASK: asked.headers["x-tfgw-trace-id"], STREAMED: streamed.headers["x-tfgw-trace-id"]}
        written = {prompt: [s for _, s in otlp.spans_of(local.raw(t))] for prompt, t in traces.items()}
        stored = {
            prompt: phoenix.wait_for_spans(project, traces[prompt], len(written[prompt])) for prompt in traces
        }

    for prompt, spans in stored.items():
        # every span the gateway wrote, no more, with the same parents
        assert sorted((s["context"]["span_id"], s["parent_id"]) for s in spans) == sorted(
            (s["spanId"], s.get("parentSpanId") or None) for s in written[prompt]
        )
        root, llm = the_root_and_llm_span(spans)
        prompt_tokens, completion_tokens, total_tokens = TOKENS[prompt]
        attributes = llm["attributes"]
        assert {
            key: attributes.get(key)
            for key in (
                "llm.model_name",
                "llm.system",
                "llm.provider",
                "llm.token_count.prompt",
                "llm.token_count.completion",
                "llm.token_count.total",
                "llm.input_messages.0.message.content",
            )
        } == {
            "llm.model_name": "gpt-4o-mini",
            "llm.system": "openai",
            "llm.provider": "openai",  # an OpenAI-compatible provider on an unknown host: its kind's name
            "llm.token_count.prompt": prompt_tokens,
            "llm.token_count.completion": completion_tokens,
            "llm.token_count.total": total_tokens,
            "llm.input_messages.0.message.content": prompt,
        }
        # what Phoenix made of them: its own token columns, summed up the trace to the root
        assert phoenix.graphql(SPAN_TOKENS, llm=llm["id"], root=root["id"]) == {
            "llm": {
                "spanKind": "llm",
                "tokenCountPrompt": prompt_tokens,
                "tokenCountCompletion": completion_tokens,
                "tokenCountTotal": total_tokens,
            },
            "root": {"spanKind": "chain", "cumulativeTokenCountTotal": total_tokens},
        }
    (stream,) = [s for s in stored[STREAMED] if s["name"] == "stream"]
    assert stream["parent_id"] == the_root_and_llm_span(stored[STREAMED])[1]["context"]["span_id"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_otel_test_is_accepted_by_phoenix_and_its_trace_is_stored(
    protocol: str, phoenix: PhoenixServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    project = write_config(tmp_path, upstream, phoenix, protocol)
    command = [sys.executable, "-m", "tfgw", "otel", "test", "phoenix", "--json"]
    done = subprocess.run(
        [*command, "--config", str(tmp_path / "tfgw.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(done.stdout)
    assert (result["accepted"], result["status"]) == (True, "OK" if protocol == "grpc" else "200")
    spans = phoenix.wait_for_spans(project, result["trace_id"], result["spans"])
    _, llm = the_root_and_llm_span(spans)
    assert llm["attributes"]["llm.model_name"] == "gpt-4o-mini"
    assert isinstance(llm["attributes"]["llm.token_count.total"], int)
