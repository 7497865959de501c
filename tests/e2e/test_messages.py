"""`POST /v1/messages` through the real gateway, driven by the official anthropic SDK.

To an Anthropic-backed model (`claude`) the gateway passes the body on and the answer back byte
for byte; to an OpenAI-backed one (`gpt`) it translates both ways. Both are compared with what the
SDK gets calling the fake provider directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.conftest import ANTHROPIC_KEY, GATEWAY_KEY, PROVIDER_KEYS
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles, by_name
from tests.fakes.upstream import TOOL_INPUT, FakeUpstream

HELLO: list[Any] = [{"role": "user", "content": "hello there world"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
VERSION = "2023-06-01"


@pytest.fixture
def claude(gateway: Gateway, up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture
def direct(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    """The SDK on the fake provider itself: what a call without the gateway returns."""
    with anthropic.Anthropic(base_url=up.url, api_key=ANTHROPIC_KEY, max_retries=0, timeout=20) as c:
        yield c


def post(
    gateway: Gateway, body: dict[str, Any], path: str = "/v1/messages", **headers: str
) -> httpx.Response:
    headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": VERSION, **headers}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=20)


# -- to Anthropic: passed through ------------------------------------------------------------------


def test_anthropic_model_answers_with_the_providers_bytes(gateway: Gateway, up: FakeUpstream) -> None:
    expected = httpx.post(
        f"{up.url}/v1/messages",
        json={"model": "claude-3-5-haiku", "max_tokens": 50, "messages": HELLO},
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": VERSION},
    )
    up.reset()
    got = post(gateway, {"model": "claude", "max_tokens": 50, "messages": HELLO}, **{"anthropic-beta": "b1"})
    assert (got.status_code, got.content) == (200, expected.content)
    (seen,) = up.requests
    assert seen.body == {"model": "claude-3-5-haiku", "max_tokens": 50, "messages": HELLO}
    assert (seen.headers["x-api-key"], seen.headers["anthropic-beta"]) == (ANTHROPIC_KEY, "b1")
    assert GATEWAY_KEY not in repr(seen)


def test_anthropic_stream_bytes_are_the_providers(gateway: Gateway, up: FakeUpstream) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 50, "messages": HELLO, "stream": True}
    expected = httpx.post(
        f"{up.url}/v1/messages", json=body, headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": VERSION}
    )
    up.reset()
    got = post(gateway, {**body, "model": "claude"})
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.content == expected.content
    assert got.content.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_anthropic_sdk_create_and_stream_equal_a_direct_call(
    claude: anthropic.Anthropic, direct: anthropic.Anthropic, up: FakeUpstream
) -> None:
    want = direct.messages.create(model="claude-3-5-haiku", max_tokens=50, messages=HELLO)
    up.reset()
    got = claude.messages.create(model="claude", max_tokens=50, messages=HELLO)
    assert got == want
    up.reset()
    with direct.messages.stream(model="claude-3-5-haiku", max_tokens=50, messages=HELLO) as stream:
        want_streamed = stream.get_final_message()
    up.reset()
    with claude.messages.stream(model="claude", max_tokens=50, messages=HELLO) as stream:
        texts = list(stream.text_stream)
        got_streamed = stream.get_final_message()
    assert got_streamed == want_streamed
    assert "".join(texts) == "echo: hello there world"
    assert got_streamed.usage.model_dump(exclude_none=True) == {
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


# -- to OpenAI: translated -------------------------------------------------------------------------


def test_openai_model_through_the_messages_api(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    message = claude.messages.create(
        model="gpt",
        max_tokens=50,
        system="be brief",
        messages=HELLO,
        stop_sequences=["x"],
        extra_body={"top_k": 3, "temperature": 0.5},  # top_k has no chat-completions counterpart
    )
    assert message.model_dump(exclude_none=True) == {
        "id": "chatcmpl-fake1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [{"type": "text", "text": "echo: hello there world"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }
    (seen,) = up.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, *HELLO],
        "max_tokens": 50,
        "temperature": 0.5,
        "stop": ["x"],
    }


def test_openai_model_streamed_as_anthropic_events(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    with claude.messages.stream(model="gpt", max_tokens=50, messages=HELLO) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.model_dump(exclude_none=True) == {
        "id": "chatcmpl-fake1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [{"type": "text", "text": "echo: hello there world"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    assert up.requests[0].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_tool_use_round_trip(claude: anthropic.Anthropic, up: FakeUpstream, model: str) -> None:
    first = claude.messages.create(model=model, max_tokens=50, messages=HELLO, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and (call.name, call.input) == ("get_weather", TOOL_INPUT)
    turns: list[Any] = [
        *HELLO,
        {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    with claude.messages.stream(model=model, max_tokens=50, messages=turns) as stream:
        answer = stream.get_final_message()
    # the fake echoes the last user turn's text: on Messages that is the tool result's turn, no text
    echo = "echo: " if model == "claude" else "echo: hello there world"
    assert answer.content[0].type == "text" and answer.content[0].text == echo
    sent = up.requests[-1].body
    assert sent is not None
    if model == "claude":
        assert sent["messages"] == turns
    else:
        assert sent["messages"][1:] == [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"x":1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]


def test_tool_use_streamed_from_openai(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    with claude.messages.stream(model="gpt", max_tokens=50, messages=HELLO, tools=[WEATHER]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.model_dump(exclude_none=True) for block in final.content] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": TOOL_INPUT}
    ]


# -- errors, in Anthropic's shape ------------------------------------------------------------------


def test_errors_are_anthropic_shaped(gateway: Gateway, claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nope", max_tokens=5, messages=HELLO)
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model 'nope' does not exist on this gateway."
            " GET /v1/models lists the models it serves.",
        },
    }
    unauthenticated = post(
        gateway, {"model": "gpt", "max_tokens": 5, "messages": HELLO}, **{"x-api-key": "wrong"}
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }
    bad_json = httpx.post(f"{gateway.url}/v1/messages", content=b"{", headers={"x-api-key": GATEWAY_KEY})
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert bad_json.json()["type"] == "error"


def test_provider_errors_keep_their_status(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    upstream_error = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad {ANTHROPIC_KEY}"},
    }
    up.fail_next(400, body=upstream_error)
    with pytest.raises(anthropic.BadRequestError) as native:
        claude.messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert native.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad sk-…cdef"},
    }
    up.fail_next(400, body={"error": {"message": "no such parameter", "type": "invalid_request_error"}})
    with pytest.raises(anthropic.BadRequestError) as translated:
        claude.messages.create(model="gpt", max_tokens=5, messages=HELLO)
    assert translated.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "no such parameter"},
    }
    up.fail_next(503, times=2)
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model="gpt", max_tokens=5, messages=HELLO)
    assert failed.value.status_code == 502
    assert failed.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "provider 'up' returned HTTP 503"},
    }


def test_server_tools_reach_only_anthropic(gateway: Gateway, up: FakeUpstream) -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    body = {"max_tokens": 5, "messages": HELLO, "tools": [search]}
    assert post(gateway, {**body, "model": "claude"}).status_code == 200
    refused = post(gateway, {**body, "model": "gpt"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "message": "tools: tool type 'web_search_20250305' is not supported"
        " when the model's provider is not Anthropic",
    }
    assert [r.path for r in up.requests] == ["/v1/messages"]


@pytest.mark.parametrize(("model", "event"), [("claude", b"overloaded_error"), ("gpt", b"api_error")])
def test_stream_failing_after_the_first_byte_ends_with_an_error_event(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles, model: str, event: bytes
) -> None:
    up.break_streams(3, error_event=model == "claude")
    got = post(gateway, {"model": model, "max_tokens": 5, "messages": HELLO, "stream": True})
    assert got.status_code == 200
    assert got.content.startswith(b"event: message_start\n")
    last = got.content.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: {") and event in last
    assert got.content.count(b"event: error") == 1
    root = by_name(traces.spans(got.headers["x-tfgw-trace-id"]))["POST /v1/messages"]
    assert root["status"]["code"] == 2


def test_client_going_away_leaves_a_finished_span(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.slow_stream_chunks(count=50, delay=0.05)
    body = {"model": "claude", "max_tokens": 5, "messages": HELLO, "stream": True}
    headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": VERSION}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=20
    ) as response:
        trace_id = response.headers["x-tfgw-trace-id"]
        next(response.iter_raw())
    spans = by_name(traces.spans(trace_id))
    assert spans["stream"]["attributes"]["tfgw.stream.cancelled"] is True
    assert spans["POST /v1/messages"]["attributes"]["tfgw.stream.cancelled"] is True
    llm = spans["chat claude-3-5-haiku"]["attributes"]  # usage as far as message_start told it
    assert (llm["gen_ai.usage.input_tokens"], llm["gen_ai.usage.output_tokens"]) == (3, 1)


# -- tracing, count_tokens, models -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "provider"), [("claude", "anthropic"), ("gpt", "openai")])
def test_messages_span_is_a_chat_span(
    claude: anthropic.Anthropic, traces: TraceFiles, model: str, provider: str
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model, max_tokens=50, system="be brief", messages=HELLO
    )
    spans = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))
    root = spans["POST /v1/messages"]
    assert root["attributes"]["url.path"] == "/v1/messages"
    assert root["attributes"]["input.value"] == "hello there world"
    assert root["attributes"]["output.value"] == "echo: hello there world"
    (llm,) = [span for name, span in spans.items() if name.startswith("chat ")]
    attributes = llm["attributes"]
    assert {
        k: attributes[k] for k in attributes if k.startswith(("llm.input", "llm.output", "gen_ai.usage"))
    } == {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "be brief",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "hello there world",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "echo: hello there world",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 4,
        **({"gen_ai.usage.cache_read.input_tokens": 0} if provider == "anthropic" else {}),
    }
    assert attributes["gen_ai.provider.name"] == provider
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["input.value"] == {
        "model": model,
        "max_tokens": 50,
        "system": "be brief",
        "messages": HELLO,
    }
    assert attributes["output.value"] == raw.parse().model_dump(mode="json", exclude_none=True) | {
        "stop_sequence": None
    }


def test_count_tokens(gateway: Gateway, up: FakeUpstream) -> None:
    body = {"model": "claude", "system": "be brief", "messages": HELLO}
    counted = post(gateway, body, "/v1/messages/count_tokens")
    assert (counted.status_code, counted.json()) == (200, {"input_tokens": 5})
    assert up.requests[0].body == {**body, "model": "claude-3-5-haiku"}
    refused = post(gateway, {**body, "model": "gpt"}, "/v1/messages/count_tokens")
    assert (refused.status_code, refused.json()) == (
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "model 'gpt' is served by provider 'up' (kind 'openai'),"
                " which cannot count tokens: only anthropic providers can",
            },
        },
    )


def test_models_in_anthropic_shape(claude: anthropic.Anthropic) -> None:
    page = claude.models.list()
    assert [model.id for model in page.data][:2] == ["gpt", "claude"]
    assert page.data[0].model_dump(exclude_none=True) == {
        "id": "gpt",
        "type": "model",
        "display_name": "gpt",
        "created_at": page.data[0].created_at,
    }


def test_no_provider_key_reaches_the_client(
    gateway: Gateway, claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    claude.messages.create(model="claude", max_tokens=5, messages=HELLO)
    logs = gateway.logs()
    assert not [key for key in PROVIDER_KEYS if key in logs]


def test_fallback_across_formats_and_the_request_headers(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.fail_next(503, path="/v1/chat/completions")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    got = post(
        gateway,
        {"model": "gpt-then-claude", "max_tokens": 5, "messages": HELLO},
        traceparent=parent,
        **{"x-tfgw-session-id": "s-1"},
    )
    assert got.json()["content"] == [{"type": "text", "text": "echo: hello there world"}]
    assert [r.path for r in up.requests] == ["/v1/chat/completions", "/v1/messages"]
    assert up.requests[1].body == {"model": "claude-3-5-haiku", "max_tokens": 5, "messages": HELLO}
    assert got.headers["x-tfgw-trace-id"] == "0af7651916cd43dd8448eb211c80319c"
    spans = traces.spans(got.headers["x-tfgw-trace-id"])
    assert [(s["name"], s["status"].get("code")) for s in spans if s["kind"] == "CLIENT"] == [
        ("chat gpt-4o", 2),
        ("chat claude-3-5-haiku", None),
    ]
    root = by_name(spans)["POST /v1/messages"]
    assert (root["parent"], root["attributes"]["session.id"]) == ("<caller>", "s-1")
