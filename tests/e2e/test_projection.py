"""Per-target conventions end to end: one gateway, its exporter, and two real OTLP receivers that
receive one convention each. What each receives is the gateway's own trace log, span for span,
less the attributes (and span events) of the other convention that its own carries too.

The receivers are real servers on 127.0.0.1 (tests/fakes/otlp.py); the gateway is `tfgw serve`
as a real process, which starts its exporter as its child (the pattern of test_export.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles, normalise
from tests.fakes.otlp import OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream
from tfgw.tracing import otlp

HELLO = [{"role": "user", "content": "what is the capital of France?"}]
ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
LLM = "chat gpt-4o-mini"
#: the spans of the two requests: a whole answer, then a stream
SPANS = 4 + 5

#: what the gen_ai receiver goes without on an LLM span (where the gateway wrote it)
NOT_FOR_GEN_AI = {
    "openinference.span.kind",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model_name",
    "llm.provider",
    "llm.system",
    "llm.invocation_parameters",
    "llm.finish_reason",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "session.id",
}
#: ... and the openinference receiver
NOT_FOR_OPENINFERENCE = {
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.request.stream",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.conversation.id",
}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def write_config(tmp_path: Path, upstream: FakeUpstream, targets: str) -> Path:
    config = tmp_path / "tfgw.toml"
    text = gateway_config(upstream.url, tmp_path / "traces")
    start = text.index("[[keys]]")  # no gateway keys: these tests are about export
    config.write_text(text[:start] + text[text.index("[providers.up]") :] + targets)
    return config


def by_trace(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Received spans as one trace file line per trace, in the shape `normalise()` reads."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(span["traceId"], []).append(span)
    return {tid: {"resourceSpans": [{"scopeSpans": [{"spans": s}]}]} for tid, s in traces.items()}


def projected(logged: list[dict[str, Any]], drop: set[str], drop_events: set[str]) -> list[dict[str, Any]]:
    """The logged spans less `drop` on the LLM span (and its `drop_events`)."""
    out = []
    for span in logged:
        if span["name"] == LLM:
            span = {**span, "attributes": {k: v for k, v in span["attributes"].items() if k not in drop}}
            events = [e for e in span.get("events", ()) if e["name"] not in drop_events]
            span.pop("events", None)
            if events:
                span["events"] = events
        out.append(span)
    return out


def test_each_receiver_gets_the_log_less_what_its_own_convention_carries(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as phoenix, OtlpHttpReceiver() as collector:
        config = write_config(
            tmp_path,
            upstream,
            f"""
[otel.targets.phoenix]
kind = "otlp"
endpoint = "{phoenix.base_url}"
conventions = ["openinference"]

[otel.targets.collector]
kind = "otlp"
protocol = "http/json"
endpoint = "{collector.base_url}"
conventions = ["gen_ai"]
""",
        )
        with Gateway(config, env=ENV) as gw:
            with openai.OpenAI(
                base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10
            ) as client:
                whole = client.chat.completions.create(
                    model="gpt", messages=HELLO, extra_headers={"x-tfgw-session-id": "s-1"}
                )
                stream = client.chat.completions.create(model="gpt", messages=HELLO, stream=True)
                streamed = [chunk for chunk in stream]
            phoenix.wait_for(SPANS)
            collector.wait_for(SPANS)
    log = [orjson.loads(line) for line in TraceFiles(tmp_path / "traces").lines()]
    lines = {next(otlp.spans_of(line))[1]["traceId"]: line for line in log}
    assert len(lines) == 2 and whole.choices and streamed

    for receiver, drop, events in (
        (phoenix, NOT_FOR_OPENINFERENCE, set()),
        (collector, NOT_FOR_GEN_AI, {"First Token Stream Event"}),
    ):
        got = by_trace(receiver.spans)
        assert set(got) == set(lines)
        written: set[str] = set()
        for trace_id, line in lines.items():
            logged = normalise(line)
            llm = next(s for s in logged if s["name"] == LLM)
            written.update(llm["attributes"], (e["name"] for e in llm.get("events", ())))
            assert normalise(got[trace_id]) == projected(logged, drop, events)
        assert drop | events <= written, "every key and event pinned here is one the gateway wrote"
