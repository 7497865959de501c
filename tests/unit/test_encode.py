"""Span building: the attributes of an LLM span, whole, with and without the request's content."""

from __future__ import annotations

import orjson
import pytest

from tfgw.config import Price
from tfgw.tracing.encode import Encoder, provider_identity
from tfgw.tracing.fold import StreamFold
from tfgw.tracing.otlp import decode_attributes
from tfgw.tracing.spans import LlmCall, RequestTrace

REQUEST = {
    "model": "smart",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 40_000}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "look", "arguments": '{"zoom": 2}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_9", "content": "a cat"},
    ],
    "n": 2,
    "stop": "END",
    "seed": 7,
    "max_completion_tokens": 100,
    "user": "u-1",
}  # fmt: skip
RESPONSE = {
    "id": "chatcmpl-1",
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "A cat."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "A kitten"}, "finish_reason": "length"},
    ],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 50},
    },
}


def llm_attributes(exclude: bool, response: object = RESPONSE, stream: bool = False) -> dict[str, object]:
    trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
    trace.root.attributes["session.id"] = "s-1"
    call = LlmCall(
        operation="chat",
        provider="openai",
        provider_kind="openai",
        base_url="https://api.openai.com/v1",
        model="gpt-4o",
        alias="smart",
        attempt=1,
        request=REQUEST,
        price=Price(input_per_mtok=2.5, output_per_mtok=10.0),
        stream=stream,
        response=response,  # type: ignore[arg-type]
    )
    span = trace.llm(call)
    trace.finish()
    spans = Encoder("p", exclude_request_data=exclude).spans(trace)
    assert [s["name"] for s in spans] == ["POST /v1/chat/completions", "chat gpt-4o"]
    assert spans[1]["spanId"] == span.span_id and spans[1]["parentSpanId"] == trace.root.span_id
    return decode_attributes(spans[1]["attributes"])


STRUCTURE = {
    "openinference.span.kind": "LLM",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "gen_ai.request.max_tokens": 100,
    "gen_ai.request.seed": 7,
    "gen_ai.request.choice.count": 2,
    "gen_ai.request.stop_sequences": ["END"],
    "gen_ai.conversation.id": "s-1",
    "session.id": "s-1",
    "server.address": "api.openai.com",
    "server.port": 443,
    "llm.model_name": "gpt-4o-2024-08-06",
    "llm.request.model_name": "gpt-4o",
    "llm.response.model_name": "gpt-4o-2024-08-06",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.finish_reason": "stop",
    "llm.invocation_parameters": (
        '{"model":"gpt-4o","n":2,"stop":"END","seed":7,"max_completion_tokens":100,"user":"u-1"}'
    ),
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.1.message.role": "assistant",
    "llm.input_messages.1.message.tool_calls.0.tool_call.id": "call_9",
    "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "look",
    "llm.input_messages.2.message.role": "tool",
    "llm.input_messages.2.message.tool_call_id": "call_9",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.1.message.role": "assistant",
    "llm.token_count.prompt": 1000,
    "llm.token_count.completion": 200,
    "llm.token_count.total": 1200,
    "llm.token_count.prompt_details.cache_read": 600,
    "llm.token_count.completion_details.reasoning": 50,
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "gen_ai.usage.cache_read.input_tokens": 600,
    "gen_ai.usage.reasoning.output_tokens": 50,
    "llm.cost.prompt": 0.0025,
    "llm.cost.completion": 0.002,
    "llm.cost.total": 0.0045,
    "tfgw.route.provider": "openai",
    "tfgw.route.model": "gpt-4o",
    "tfgw.route.attempt": 1,
}
CONTENT = {
    "llm.input_messages.0.message.contents.0.message_content.type": "text",
    "llm.input_messages.0.message.contents.0.message_content.text": "what is in this picture?",
    "llm.input_messages.0.message.contents.1.message_content.type": "image",
    "llm.input_messages.0.message.contents.1.message_content.image.image.url": "https://example.com/cat.png",
    "llm.input_messages.0.message.contents.2.message_content.type": "image",
    "llm.input_messages.0.message.contents.2.message_content.image.image.url": "__REDACTED__",
    "llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments": '{"zoom": 2}',
    "llm.input_messages.2.message.content": "a cat",
    "llm.output_messages.0.message.content": "A cat.",
    "llm.output_messages.1.message.content": "A kitten",
    "input.mime_type": "application/json",
    "output.mime_type": "application/json",
}


def test_llm_span_with_content() -> None:
    attributes = llm_attributes(exclude=False)

    assert orjson.loads(attributes.pop("input.value")) == REQUEST  # type: ignore[arg-type]
    assert orjson.loads(attributes.pop("output.value")) == RESPONSE  # type: ignore[arg-type]
    assert attributes == STRUCTURE | CONTENT


def test_exclude_request_data_keeps_structure_and_counts_only() -> None:
    assert llm_attributes(exclude=True) == STRUCTURE


def test_missing_usage_is_absent_never_zero() -> None:
    response = {k: v for k, v in RESPONSE.items() if k != "usage"}
    attributes = llm_attributes(exclude=True, response=response)
    assert [k for k in attributes if k.startswith(("llm.token_count", "gen_ai.usage", "llm.cost"))] == []


def test_a_folded_stream_gives_the_same_span_as_the_whole_answer() -> None:
    fold = StreamFold()
    for index, (text, finish) in enumerate((("A cat.", "stop"), ("A kitten", "length"))):
        base = {"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06"}
        fold.add({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}}]})
        for piece in text.split(" "):
            fold.add({**base, "choices": [{"index": index, "delta": {"content": piece + " "}}]})
        fold.add({**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]})
    fold.add({"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06", "choices": [], "usage": RESPONSE["usage"]})
    attributes = llm_attributes(exclude=True, response=fold, stream=True)
    assert attributes == STRUCTURE | {"gen_ai.request.stream": True}
    assert fold.chunks == 9  # per choice: role, two pieces, finish; then the usage chunk


def test_stream_fold_joins_tool_call_pieces() -> None:
    fold = StreamFold()
    fold.add(
        {
            "id": "c",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get", "arguments": ""},
                            }
                        ],
                    },
                }
            ],
        }
    )
    for piece in ('{"x"', ": 1}"):
        fold.add(
            {
                "id": "c",
                "model": "m",
                "choices": [
                    {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}}
                ],
            }
        )
    fold.add({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert fold.completion() == {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"x": 1}'}}
            ],
        }}],
    }  # fmt: skip


IDENTITY_KEYS = ("llm.provider", "llm.system", "gen_ai.provider.name", "server.address", "server.port")


@pytest.mark.parametrize(
    ("kind", "url", "expected"),
    [
        ("openai", "https://api.openai.com/v1", ("openai", "openai", "openai", "api.openai.com", 443)),
        ("openai", "https://api.groq.com/openai/v1", ("groq", "openai", "groq", "api.groq.com", 443)),
        ("openai", "https://api.mistral.ai/v1", ("mistralai", "openai", "mistral_ai", "api.mistral.ai", 443)),
        ("openai", "https://api.x.ai/v1", ("xai", "openai", "x_ai", "api.x.ai", 443)),
        ("openai", "https://api.deepseek.com", ("deepseek", "openai", "deepseek", "api.deepseek.com", 443)),
        (
            "openai",
            "https://api.together.xyz/v1",
            ("together", "openai", "together", "api.together.xyz", 443),
        ),
        (
            "openai",
            "https://api.perplexity.ai",
            ("perplexity", "openai", "perplexity", "api.perplexity.ai", 443),
        ),
        (
            "openai",
            "https://api.anthropic.com/v1",
            ("anthropic", "openai", "anthropic", "api.anthropic.com", 443),
        ),
        (
            "openai",
            "https://api.moonshot.cn/v1",
            ("moonshot", "openai", "moonshot_ai", "api.moonshot.cn", 443),
        ),
        (
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            ("google", "openai", "gcp.gemini", "generativelanguage.googleapis.com", 443),
        ),
        (
            "openai",
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/endpoints/openapi",
            ("google", "openai", "gcp.vertex_ai", "us-central1-aiplatform.googleapis.com", 443),
        ),
        (
            "openai",
            "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1",
            ("aws", "openai", "aws.bedrock", "bedrock-runtime.us-west-2.amazonaws.com", 443),
        ),
        (
            "openai",
            "https://models.inference.ai.azure.com",
            ("azure", "openai", "azure.ai.inference", "models.inference.ai.azure.com", 443),
        ),
        ("openai", "http://localhost:11434/v1", ("ollama", "openai", "ollama", "localhost", 11434)),
        # an unknown host: the kind's name, never the config's provider name (that is tfgw.route.provider)
        ("openai", "http://10.0.0.5:8000/v1", ("openai", "openai", "openai", "10.0.0.5", 8000)),
        (
            "openai",
            "http://openai.com.example.net/v1",
            ("openai", "openai", "openai", "openai.com.example.net", 80),
        ),
        (
            "azure",
            "https://me.openai.azure.com",
            ("azure", "openai", "azure.ai.openai", "me.openai.azure.com", 443),
        ),
        ("azure", "https://llm.example.com", ("azure", "openai", "azure.ai.openai", "llm.example.com", 443)),
        (
            "anthropic",
            "https://api.anthropic.com",
            ("anthropic", "anthropic", "anthropic", "api.anthropic.com", 443),
        ),
        ("anthropic", "http://proxy:8080", ("anthropic", "anthropic", "anthropic", "proxy", 8080)),
    ],
)
def test_provider_identity(kind: str, url: str, expected: tuple[object, ...]) -> None:
    ids = provider_identity(kind, url)
    assert tuple(ids[k] for k in IDENTITY_KEYS) == expected


@pytest.mark.parametrize(
    ("system", "provider", "gen"),
    [
        ("groq", "groq", "groq"),  # the same name in both conventions
        ("mistralai", "mistralai", "mistral_ai"),  # OpenInference's spelling -> GenAI's
        ("mistral_ai", "mistralai", "mistral_ai"),  # and back
        ("azure", "azure", "azure.ai.openai"),
        ("azure.ai.inference", "azure", "azure.ai.inference"),
        ("xai", "xai", "x_ai"),
        ("x_ai", "xai", "x_ai"),
        ("gcp.vertex_ai", "google", "gcp.vertex_ai"),
        ("ibm.watsonx.ai", "ibm.watsonx.ai", "ibm.watsonx.ai"),  # GenAI's only: as given to OpenInference
        ("vllm-cluster", "vllm-cluster", "vllm-cluster"),  # a custom name: as given to both
    ],
)
def test_a_configured_system_names_the_provider_in_both_conventions(
    system: str, provider: str, gen: str
) -> None:
    """`[providers.X] system` wins over the host (here OpenAI's) and the kind."""
    ids = provider_identity("openai", "https://api.openai.com/v1", system)
    assert ids == {
        "llm.provider": provider,
        "llm.system": "openai",
        "gen_ai.provider.name": gen,
        "server.address": "api.openai.com",
        "server.port": 443,
    }


def test_the_span_carries_the_configured_system_not_the_config_name() -> None:
    trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    call = LlmCall(
        "chat", "my-gpus", "openai", "http://10.0.0.5:8000/v1", "llama", None, 1, body, system="mistralai"
    )
    trace.llm(call)
    trace.finish()
    attributes = decode_attributes(Encoder("p", exclude_request_data=True).spans(trace)[1]["attributes"])
    assert {k: attributes[k] for k in ("llm.provider", "gen_ai.provider.name", "tfgw.route.provider")} == {
        "llm.provider": "mistralai",
        "gen_ai.provider.name": "mistral_ai",
        "tfgw.route.provider": "my-gpus",
    }


def test_malformed_tool_calls_in_a_request_do_not_break_the_span() -> None:
    trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
    body = {"messages": [{"role": "assistant", "tool_calls": ["oops", {"id": "c1", "function": "nope"}]}]}
    call = LlmCall("chat", "p", "openai", "https://api.openai.com/v1", "m", None, 1, body)
    trace.llm(call)
    trace.finish()
    attributes = decode_attributes(Encoder("p", exclude_request_data=True).spans(trace)[1]["attributes"])
    assert {k: v for k, v in attributes.items() if k.startswith("llm.input_messages")} == {
        "llm.input_messages.0.message.role": "assistant",
        "llm.input_messages.0.message.tool_calls.1.tool_call.id": "c1",
    }


def test_stream_fold_takes_bare_text_as_choice_zero() -> None:
    bare, chunks = StreamFold(), StreamFold()
    head = {"id": "msg_1", "model": "claude", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    for fold in (bare, chunks):
        fold.add(head)
    for piece in ("A ", "cat."):
        bare.add(piece)
        chunks.add({"choices": [{"index": 0, "delta": {"content": piece}}]})
    assert bare.completion() == chunks.completion()
    assert bare.completion()["choices"][0]["message"] == {"role": "assistant", "content": "A cat."}
    assert bare.chunks == 3


def test_answers_tfgw_gives_itself_are_tfgw_s() -> None:
    """The built-in providers (mock, and recorded answers served again) are tfgw, not OpenAI: a
    custom name, as the conventions allow for a provider they do not list. A mock given a `system`
    plays that provider."""
    for kind in ("mock", "recorded"):
        assert provider_identity(kind, f"{kind}://") == {
            "llm.provider": "tfgw",
            "llm.system": "tfgw",
            "gen_ai.provider.name": "tfgw",
        }
    assert provider_identity("mock", "mock://", "openai") == {
        "llm.provider": "openai",
        "llm.system": "tfgw",
        "gen_ai.provider.name": "openai",
    }


def test_a_line_names_its_schema_on_the_resource_and_the_scope() -> None:
    trace = RequestTrace("POST /v1/embeddings", lambda t: None)
    trace.finish()
    line = Encoder("p").line(trace)
    [resource_spans] = line["resourceSpans"]
    [scope_spans] = resource_spans["scopeSpans"]
    assert (resource_spans["schemaUrl"], scope_spans["schemaUrl"]) == (
        "https://opentelemetry.io/schemas/1.41.1",
        "https://opentelemetry.io/schemas/1.41.1",
    )
    assert list(resource_spans) == ["resource", "scopeSpans", "schemaUrl"]
    assert list(scope_spans) == ["scope", "spans", "schemaUrl"]


def test_constant_attributes_are_encoded_once_and_read_as_any_others() -> None:
    from tfgw.tracing.spans import Constant

    shared = Constant(
        {"openinference.span.kind": "GUARDRAIL", "tfgw.guardrail.name": "pii", "tfgw.guardrail.matches": 0}
    )
    lines = []
    for _ in range(2):
        trace = RequestTrace("POST /v1/chat/completions", lambda _: None)
        trace.child("guardrail pii").attributes = shared
        trace.finish()
        encoder = Encoder("p")
        lines.append((encoder.line(trace), encoder.encode(trace)[1]))  # a file line: see below
    (first, first_row), (second, second_row) = lines
    spans = [line["resourceSpans"][0]["scopeSpans"][0]["spans"][1] for line in (first, second)]
    assert spans[0]["attributes"] is spans[1]["attributes"] is shared.encoded
    assert spans[0]["attributes"] == [
        {"key": "openinference.span.kind", "value": {"stringValue": "GUARDRAIL"}},
        {"key": "tfgw.guardrail.name", "value": {"stringValue": "pii"}},
        {"key": "tfgw.guardrail.matches", "value": {"intValue": "0"}},
    ]
    assert dict(shared) == {
        "openinference.span.kind": "GUARDRAIL",
        "tfgw.guardrail.name": "pii",
        "tfgw.guardrail.matches": 0,
    }
    assert first_row["spans"] == second_row["spans"] == 2


def test_a_row_reads_passed_guardrails_as_the_file_line_reads_back() -> None:
    """The encoder's row takes a passed guardrail's span (its `Constant` attributes) by a shortcut:
    it is the row `rows.summarize` makes of the same line read back from the file, whole."""
    from tfgw.tracing import otlp
    from tfgw.tracing.rows import summarize
    from tfgw.tracing.spans import Constant

    def verdict(name: str, stage: str, outcome: str) -> dict[str, object]:
        return {
            "openinference.span.kind": "GUARDRAIL",
            "tfgw.guardrail.name": name,
            "tfgw.guardrail.stage": stage,
            "tfgw.guardrail.action": "redact",
            "tfgw.guardrail.outcome": outcome,
            "tfgw.guardrail.matches": 0 if outcome == "pass" else 1,
        }

    trace = RequestTrace("POST /v1/chat/completions", lambda _: None)
    trace.root.attributes["tfgw.model.requested"] = "smart"
    auth = trace.child("auth")
    auth.attributes.update({"tfgw.auth.outcome": "ok", "tfgw.key.name": "ci"})
    trace.child("guardrail pii").attributes = Constant(verdict("pii", "input", "pass"))
    trace.child("guardrail words").attributes = verdict("words", "input", "redacted")
    trace.child("guardrail out").attributes = Constant(verdict("out", "output", "pass"))
    trace.finish()
    line, row = Encoder("p").encode(trace)
    assert row["guardrails"] == [
        ["pii", "input", "pass"],
        ["words", "input", "redacted"],
        ["out", "output", "pass"],
    ]
    assert row["key"] == "ci" and row["model"] == "smart" and row["spans"] == 5
    assert row == summarize(otlp.spans_of(orjson.loads(orjson.dumps(line))))


def test_a_file_line_is_the_json_of_the_line_whatever_was_written_as_json_already() -> None:
    """`encode` puts what is the same on every line in as JSON already (the resource, a passed
    guardrail's span around its ids and times) and `auth`'s limits as KeyValues: dumped, the line
    is `line()`'s, byte for byte, with every span id, time and attribute where it belongs."""
    from tfgw.tracing.spans import Constant

    passed = Constant(
        {
            "openinference.span.kind": "GUARDRAIL",
            "tfgw.guardrail.name": 'pii "50%"',  # quotes and a percent sign, as JSON escapes them
            "tfgw.guardrail.stage": "input",
            "tfgw.guardrail.action": "redact",
            "tfgw.guardrail.outcome": "pass",
            "tfgw.guardrail.matches": 0,
        }
    )
    encoder = Encoder("p")
    for serial in range(2):  # the second request's spans from what the first one made
        trace = RequestTrace("POST /v1/chat/completions", lambda _: None)
        auth = trace.child("auth")
        auth.attributes["tfgw.auth.outcome"] = "ok"
        auth.encoded = [{"key": "tfgw.limit.rpm", "value": {"intValue": "10"}}]
        for _ in range(2):
            trace.child('guardrail pii "50%"').attributes = passed
        trace.finish()
        line = orjson.loads(orjson.dumps(encoder.encode(trace)[0]))
        assert orjson.dumps(line) == orjson.dumps(encoder.line(trace))
        spans = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert [(s["spanId"], s["startTimeUnixNano"], s.get("parentSpanId")) for s in spans] == [
            (s.span_id, str(s.start), s.parent_id) for s in trace.spans
        ], serial
        assert decode_attributes(spans[1]["attributes"]) == {"tfgw.auth.outcome": "ok", "tfgw.limit.rpm": 10}
        assert [decode_attributes(s["attributes"]) for s in spans[2:]] == [dict(passed)] * 2


def test_stream_fold_add_all_folds_as_add_does_chunk_by_chunk() -> None:
    """`add_all` takes the common text chunk in a loop of its own: every other shape (a role, a
    finish reason, two choices, a tool call, usage, an index not begun, a bare text, "usage": null,
    an empty text) must come out as `add` one chunk at a time makes it."""
    base = {"id": "chatcmpl-1", "model": "m"}

    def text(piece: str, index: int = 0, **more: object) -> dict[str, object]:
        return {**base, "choices": [{"index": index, "delta": {"content": piece}, **more}], "usage": None}

    chunks: list[dict[str, object] | str] = [
        text("before the role"),  # no id yet: `add`
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        text("Hello"),
        text(""),
        text(" world", logprobs=None, finish_reason=None),
        text(None),  # type: ignore[arg-type]  # a null text: nothing to add
        {**base, "choices": [{"index": 0, "delta": {"content": ",", "refusal": None}}]},  # two keys
        {**base, "choices": [{"index": 0, "delta": {"content": " and"}}], "usage": {"total_tokens": 1}},
        text("late", index=1),  # a choice not begun: `add`
        {**base, "choices": [{"index": 1, "delta": {"role": "assistant"}}]},
        text("second", index=1),
        {**base, "choices": [{"index": 0, "delta": {"content": "!"}},
                             {"index": 1, "delta": {"content": "?"}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t", "function": {
            "name": "f", "arguments": "{}"}}]}}]},
        " bare",
        text(".", finish_reason="stop"),
        {**base, "choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}},
    ]  # fmt: skip
    one_by_one, all_at_once = StreamFold(), StreamFold()
    for chunk in chunks:
        one_by_one.add(chunk)
    all_at_once.add_all(chunks[:5])
    all_at_once.add_all(chunks[5:])
    assert (all_at_once.completion(), all_at_once.chunks) == (one_by_one.completion(), one_by_one.chunks)
    assert one_by_one.completion()["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "before the roleHello world, and! bare.",
                "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "finish_reason": "stop",
        },
        {"index": 1, "message": {"role": "assistant", "content": "latesecond?"}, "finish_reason": "length"},
    ]
    assert one_by_one.chunks == len(chunks)
