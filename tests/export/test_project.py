"""Per-target conventions: which convention each key is, and what a target that receives one of
them goes without (only what the other one carries too). Whole spans, whole lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.export.target_stub import TargetStub
from tests.samples import Request, span_id, trace_id, trace_line
from tfgw.export.encode import prepare, project
from tfgw.tracing import conventions, otlp
from tfgw.tracing.conventions import (
    CONVENTIONS,
    GEN_AI,
    KEPT_BY_KIND,
    OPENINFERENCE,
    convention,
    event_convention,
)

T0 = 1_704_067_200_000_000_000

#: a chat span as the gateway writes it: content, cached and reasoning tokens, cost, a session
CHAT = {
    "openinference.span.kind": "LLM",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "llm.model_name": "gpt-4o-2024-08-06",
    "llm.request.model_name": "gpt-4o",
    "llm.response.model_name": "gpt-4o-2024-08-06",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.invocation_parameters": (
        '{"model":"gpt-4o","temperature":0.2,"max_completion_tokens":100,"user":"u-1"}'
    ),
    "gen_ai.request.temperature": 0.2,
    "gen_ai.request.max_tokens": 100,
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": "what is 2+2?",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "4",
    "llm.finish_reason": "stop",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.response.id": "chatcmpl-1",
    "llm.token_count.prompt": 1000,
    "gen_ai.usage.input_tokens": 1000,
    "llm.token_count.completion": 200,
    "gen_ai.usage.output_tokens": 200,
    "llm.token_count.total": 1200,
    "llm.token_count.prompt_details.cache_read": 600,
    "gen_ai.usage.cache_read.input_tokens": 600,
    "llm.token_count.completion_details.reasoning": 50,
    "gen_ai.usage.reasoning.output_tokens": 50,
    "llm.cost.prompt": 0.0025,
    "llm.cost.completion": 0.002,
    "llm.cost.total": 0.0045,
    "input.value": '{"model":"smart","messages":[{"role":"user","content":"what is 2+2?"}]}',
    "input.mime_type": "application/json",
    "output.value": '{"id":"chatcmpl-1"}',
    "output.mime_type": "application/json",
    "session.id": "s-1",
    "user.id": "u-1",
    "gen_ai.conversation.id": "s-1",
    "tfgw.route.provider": "openai",
    "tfgw.route.model": "gpt-4o",
    "tfgw.route.attempt": 1,
}
#: a streamed chat span from Anthropic: cache writes too, and the time to the first chunk
STREAM = {
    "openinference.span.kind": "LLM",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-3-5-haiku",
    "server.address": "api.anthropic.com",
    "server.port": 443,
    "gen_ai.response.model": "claude-3-5-haiku-20241022",
    "llm.model_name": "claude-3-5-haiku-20241022",
    "llm.provider": "anthropic",
    "llm.system": "anthropic",
    "llm.invocation_parameters": '{"model":"claude-3-5-haiku","stream":true,"seed":7,"stop":"END","n":1}',
    "gen_ai.request.seed": 7,
    "gen_ai.request.stop_sequences": ["END"],
    "gen_ai.request.stream": True,
    "gen_ai.response.time_to_first_chunk": 0.25,
    "llm.input_messages.0.message.role": "user",
    "llm.output_messages.0.message.role": "assistant",
    "llm.finish_reason": "length",
    "gen_ai.response.finish_reasons": ["length"],
    "llm.token_count.prompt": 900,
    "gen_ai.usage.input_tokens": 900,
    "llm.token_count.completion": 64,
    "gen_ai.usage.output_tokens": 64,
    "llm.token_count.total": 964,
    "llm.token_count.prompt_details.cache_read": 512,
    "gen_ai.usage.cache_read.input_tokens": 512,
    "llm.token_count.prompt_details.cache_write": 256,
    "gen_ai.usage.cache_creation.input_tokens": 256,
    "llm.token_count.completion_details.reasoning": 32,
    "gen_ai.usage.reasoning.output_tokens": 32,
    "llm.cost.total": 0.00121,
    "tfgw.route.provider": "claude",
    "tfgw.route.model": "claude-3-5-haiku",
    "tfgw.route.attempt": 1,
}
FIRST_TOKEN = {"timeUnixNano": str(T0 + 250_000_000), "name": "First Token Stream Event", "attributes": []}
EXCEPTION = {
    "timeUnixNano": str(T0 + 300_000_000),
    "name": "exception",
    "attributes": otlp.attributes({"exception.type": "ProviderError", "exception.message": "HTTP 503"}),
}


@dataclass(frozen=True)
class Target(TargetStub):
    conventions: tuple[str, ...] = CONVENTIONS


def without(attributes: dict[str, Any], *keys: str) -> dict[str, Any]:
    assert all(key in attributes for key in keys), "every key left out is one the span had"
    return {k: v for k, v in attributes.items() if k not in keys}


def span(
    attributes: dict[str, Any], n: int = 1, events: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": trace_id(7),
        "spanId": span_id(7, n),
        "parentSpanId": span_id(7, 0),
        "name": "chat gpt-4o",
        "kind": otlp.KIND_CLIENT,
        "startTimeUnixNano": str(T0),
        "endTimeUnixNano": str(T0 + 800_000_000),
        "attributes": otlp.attributes(attributes),
        "status": {},
    }
    if events is not None:
        out["events"] = events
    return out


def line_of(*spans: dict[str, Any]) -> dict[str, Any]:
    # through JSON, as the exporter reads lines from the file
    line: dict[str, Any] = orjson.loads(orjson.dumps(otlp.export_request(otlp.resource("p"), list(spans))))
    return line


#: what a gen_ai-only target goes without on CHAT: every OpenInference key GenAI holds the value of
CHAT_FOR_GEN_AI = without(
    CHAT,
    "openinference.span.kind",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model_name",
    "llm.provider",
    "llm.system",
    "llm.finish_reason",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.completion_details.reasoning",
    "session.id",
)  # kept: llm.invocation_parameters ("user" has no GenAI name), total, cost, messages, user.id
CHAT_FOR_OPENINFERENCE = without(
    CHAT,
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.request.temperature",
    "gen_ai.request.max_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.conversation.id",
)  # kept: gen_ai.operation.name and gen_ai.response.id (no OpenInference name)
STREAM_FOR_GEN_AI = without(
    STREAM,
    "openinference.span.kind",
    "llm.model_name",
    "llm.provider",
    "llm.system",
    "llm.invocation_parameters",  # every field of it is a gen_ai.request.* (n = 1: GenAI's absence)
    "llm.finish_reason",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.cache_write",
    "llm.token_count.completion_details.reasoning",
)
STREAM_FOR_OPENINFERENCE = without(
    STREAM,
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.request.seed",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.stream",
    "gen_ai.response.time_to_first_chunk",  # the First Token Stream Event says it
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)


@pytest.mark.parametrize(
    ("conventions_", "chat", "stream", "stream_events"),
    [
        pytest.param(CONVENTIONS, CHAT, STREAM, [FIRST_TOKEN, EXCEPTION], id="both"),
        pytest.param((GEN_AI,), CHAT_FOR_GEN_AI, STREAM_FOR_GEN_AI, [EXCEPTION], id="gen_ai"),
        pytest.param(
            (OPENINFERENCE,), CHAT_FOR_OPENINFERENCE, STREAM_FOR_OPENINFERENCE, [FIRST_TOKEN, EXCEPTION],
            id="openinference",
        ),
    ],
)  # fmt: skip
def test_a_chat_and_a_stream_projected_to_each_choice(
    conventions_: tuple[str, ...], chat: dict[str, Any], stream: dict[str, Any], stream_events: list[Any]
) -> None:
    line = line_of(span(CHAT), span(STREAM, 2, events=[FIRST_TOKEN, EXCEPTION]))

    projected = project(line, conventions_)

    assert projected == line_of(span(chat), span(stream, 2, events=stream_events))
    assert line == line_of(span(CHAT), span(STREAM, 2, events=[FIRST_TOKEN, EXCEPTION])), "input unchanged"


def test_tokens_and_cost_reach_every_target_in_the_convention_it_reads() -> None:
    line = line_of(span(STREAM))
    for received, keys in [
        ((GEN_AI,), ["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
                     "gen_ai.usage.reasoning.output_tokens", "llm.token_count.total", "llm.cost.total"]),
        ((OPENINFERENCE,), ["llm.token_count.prompt_details.cache_read",
                            "llm.token_count.prompt_details.cache_write",
                            "llm.token_count.completion_details.reasoning", "llm.token_count.total",
                            "llm.cost.total"]),
    ]:  # fmt: skip
        (out,) = project(line, received)["resourceSpans"][0]["scopeSpans"][0]["spans"]
        values = otlp.decode_attributes(out["attributes"])
        assert {k: values[k] for k in keys} == {k: STREAM[k] for k in keys}


def test_both_conventions_are_the_line_itself() -> None:
    line = line_of(span(CHAT))
    assert project(line, CONVENTIONS) is line
    assert project(line, (GEN_AI, OPENINFERENCE)) is line
    assert prepare(line, TargetStub("http://x", project="")) is line, "a stub naming none receives both"


def test_a_span_with_nothing_to_leave_out_is_shared() -> None:
    tfgw_only = span({"tfgw.stream.chunks": 3, "http.response.status_code": 200})
    root = span({"openinference.span.kind": "CHAIN", "session.id": "s-1"}, 2)  # no GenAI name for them
    line = line_of(tfgw_only, root, span(CHAT, 3))
    spans = line["resourceSpans"][0]["scopeSpans"][0]["spans"]

    out = project(line, (GEN_AI,))["resourceSpans"][0]["scopeSpans"][0]["spans"]

    assert (out[0] is spans[0], out[1] is spans[1], out[2] is spans[2]) == (True, True, False)


def test_a_value_is_left_out_only_where_the_other_convention_holds_the_same() -> None:
    differing = {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "embeddings",  # an LLM span kind is not what GenAI says
        "llm.token_count.prompt": 12,
        "gen_ai.usage.input_tokens": 13,
        "llm.model_name": "gpt-4o",
        "gen_ai.request.model": "gpt-4o-mini",
        "llm.provider": "my-proxy",  # the config's name: GenAI's openai is not it
        "gen_ai.provider.name": "openai",
        "llm.system": "openai",
        "llm.invocation_parameters": '{"model":"gpt-4o","temperature":0.5}',
        "gen_ai.request.temperature": 0.2,
        "llm.finish_reason": "stop",
        "gen_ai.response.finish_reasons": ["stop", "length"],  # two choices: OpenInference has one
        "session.id": "s-1",
        "gen_ai.conversation.id": "s-2",
        "gen_ai.response.time_to_first_chunk": 0.1,  # the event says 0.25
        "gen_ai.request.stream": True,
    }
    line = line_of(span(differing, events=[FIRST_TOKEN]))

    for_gen_ai = without(
        differing, "llm.system", "llm.finish_reason"
    )  # the first finish reason is GenAI's too
    assert project(line, (GEN_AI,)) == line_of(span(for_gen_ai, events=[FIRST_TOKEN]))
    assert project(line, (OPENINFERENCE,)) is line


def test_a_file_of_one_convention_loses_nothing() -> None:
    openinference_only = {k: v for k, v in CHAT.items() if not k.startswith("gen_ai.")}
    gen_ai_only = {k: v for k, v in CHAT.items() if conventions.convention(k) != OPENINFERENCE}
    line = line_of(span(openinference_only), span(gen_ai_only, 2))
    assert project(line, (GEN_AI,)) is line
    assert project(line, (OPENINFERENCE,)) is line


def test_provider_names_spelled_otherwise_are_the_same_provider() -> None:
    azure = {"llm.provider": "azure", "llm.system": "openai", "gen_ai.provider.name": "azure.ai.openai"}
    inference = {"llm.provider": "azure", "gen_ai.provider.name": "azure.ai.inference"}
    mistral = {"llm.provider": "mistralai", "llm.system": "openai", "gen_ai.provider.name": "mistral_ai"}
    line = line_of(span(azure), span(inference, 2), span(mistral, 3))

    assert project(line, (GEN_AI,)) == line_of(
        span({"gen_ai.provider.name": "azure.ai.openai"}),
        span({"gen_ai.provider.name": "azure.ai.inference"}, 2),
        span({"llm.system": "openai", "gen_ai.provider.name": "mistral_ai"}, 3),  # GenAI has no API family
    )
    assert project(line, (OPENINFERENCE,)) == line_of(
        span({"llm.provider": "azure", "llm.system": "openai"}),
        span(inference, 2),  # azure is azure.ai.openai to an OpenInference reader
        span({"llm.provider": "mistralai", "llm.system": "openai"}, 3),
    )


def test_arize_keeps_the_span_kind_it_renders_by() -> None:
    line = line_of(span({"openinference.span.kind": "LLM", "gen_ai.operation.name": "chat"}))
    arize = Target("http://x", kind="arize", project="p", conventions=(GEN_AI,))
    otlp_target = Target("http://x", kind="otlp", project="p", conventions=(GEN_AI,))

    def attributes(target: Target) -> dict[str, Any]:
        (out,) = prepare(line, target)["resourceSpans"][0]["scopeSpans"][0]["spans"]
        return otlp.decode_attributes(out["attributes"])

    assert KEPT_BY_KIND == {"arize": ("openinference.span.kind",)}
    assert attributes(arize) == {"openinference.span.kind": "LLM", "gen_ai.operation.name": "chat"}
    assert attributes(otlp_target) == {"gen_ai.operation.name": "chat"}


def test_prepare_redacts_then_projects_then_stamps_the_project() -> None:
    target = Target(
        "http://x", kind="middleware", project="shop", exclude_request_data=True, conventions=(GEN_AI,)
    )
    line = line_of(span(CHAT))

    prepared = prepare(line, target)

    content = ("llm.input_messages.0.message.content", "llm.output_messages.0.message.content",
               "input.value", "input.mime_type", "output.value", "output.mime_type")  # fmt: skip
    expected = line_of(span(without(CHAT_FOR_GEN_AI, *content)))
    expected["resourceSpans"][0]["resource"]["attributes"][2]["value"] = {"stringValue": "shop"}
    assert prepared == expected


def test_the_gateway_s_own_lines_keep_every_value_in_the_convention_received() -> None:
    """Every attribute a target goes without is, with its value, in the convention it receives."""
    lines = [
        orjson.loads(orjson.dumps(trace_line(r)))
        for r in (Request(1, session_id="s-1"), Request(2, stream=True), Request(3, embeddings=True))
    ]
    for received in ((GEN_AI,), (OPENINFERENCE,)):
        for line in lines:
            before = {s["spanId"]: s for _, s in otlp.spans_of(line)}
            for _, out in otlp.spans_of(project(line, received)):
                kept = {kv["key"] for kv in out["attributes"]}
                gone = [kv for kv in before[out["spanId"]]["attributes"] if kv["key"] not in kept]
                assert all(convention(kv["key"]) not in received for kv in gone)
                assert all(kv["key"] in conventions.CARRIED for kv in gone)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("openinference.span.kind", "openinference"),
        ("llm.token_count.prompt", "openinference"),
        ("llm.request.model_name", "openinference"),
        ("llm.response.model_name", "openinference"),
        ("llm.finish_reason", "openinference"),
        ("llm.cost.total", "openinference"),
        ("llm.input_messages.3.message.content", "openinference"),
        ("embedding.embeddings.0.embedding.text", "openinference"),
        ("input.value", "openinference"),
        ("output.mime_type", "openinference"),
        ("session.id", "openinference"),
        ("user.id", "openinference"),
        ("metadata", "openinference"),
        ("openinference.project.name", "openinference"),
        ("gen_ai.usage.reasoning.output_tokens", "gen_ai"),
        ("gen_ai.conversation.id", "gen_ai"),
        ("gen_ai.request.max_tokens", "gen_ai"),
        ("http.request.method", "shared"),
        ("url.path", "shared"),
        ("error.type", "shared"),
        ("server.address", "shared"),
        ("service.name", "shared"),
        ("exception.message", "shared"),
        ("model_id", "shared"),
        ("tfgw.route.attempt", "tfgw"),
        ("tfgw.stream.time_to_first_token_ms", "tfgw"),
    ],
)
def test_the_convention_of_every_kind_of_key(key: str, expected: str) -> None:
    assert convention(key) == expected


def test_the_convention_of_span_events() -> None:
    assert [event_convention(n) for n in ("First Token Stream Event", "exception", "gen_ai.choice")] == [
        "openinference",
        "shared",
        "gen_ai",
    ]


def test_what_each_choice_may_leave_out() -> None:
    assert conventions.left_out(CONVENTIONS) == []
    assert conventions.left_out((GEN_AI,)) == [
        "openinference.span.kind",
        "llm.model_name",
        "llm.request.model_name",
        "llm.response.model_name",
        "embedding.model_name",
        "llm.provider",
        "llm.system",
        "llm.invocation_parameters",
        "embedding.invocation_parameters",
        "llm.finish_reason",
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "llm.token_count.prompt_details.cache_read",
        "llm.token_count.prompt_details.cache_write",
        "llm.token_count.completion_details.reasoning",
        "session.id",
        "First Token Stream Event",
    ]
    assert conventions.left_out((GEN_AI,), keep=KEPT_BY_KIND["arize"])[0] == "llm.model_name"
    assert conventions.left_out((OPENINFERENCE,)) == [
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.finish_reasons",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.request.stream",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.request.stop_sequences",
        "gen_ai.request.temperature",
        "gen_ai.request.max_tokens",
        "gen_ai.request.top_p",
        "gen_ai.request.frequency_penalty",
        "gen_ai.request.presence_penalty",
        "gen_ai.request.seed",
        "gen_ai.request.choice.count",
        "gen_ai.conversation.id",
    ]


def test_the_conventions_are_the_config_s() -> None:
    from tfgw.config import CONVENTIONS as CONFIG_CONVENTIONS

    assert CONVENTIONS == CONFIG_CONVENTIONS == ("openinference", "gen_ai")


def test_the_public_surface() -> None:
    assert conventions.__all__ == [
        "CARRIED",
        "CONVENTIONS",
        "GEN_AI",
        "KEPT_BY_KIND",
        "OPENINFERENCE",
        "SHARED",
        "TFGW",
        "Get",
        "carried",
        "convention",
        "event_convention",
        "leavable",
        "left_out",
    ]
