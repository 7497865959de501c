"""`POST /v1/responses` through the real gateway, driven by the official openai SDK's `responses`.

The fake provider has no Responses endpoint: to an OpenAI-compatible model (`gpt`) the gateway
translates to chat completions, to an Anthropic one (`claude`) on to Messages.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import GATEWAY_KEY
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles, by_name
from tests.fakes.upstream import FakeUpstream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.mark.parametrize(("model", "answered_by"), [("gpt", "gpt-4o-mini"), ("claude", "claude-3-5-haiku")])
def test_create(client: openai.OpenAI, up: FakeUpstream, model: str, answered_by: str) -> None:
    response = client.responses.create(model=model, input="hello there world", instructions="be brief")
    assert (response.status, response.model, response.output_text) == (
        "completed",
        answered_by,
        "echo: hello there world",
    )
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        5,
        4,
        9,
    )
    (seen,) = up.requests
    if model == "gpt":
        assert (seen.path, seen.body) == (
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hello there world"},
                ],
            },
        )
    else:
        assert seen.path == "/v1/messages"
        assert (seen.body or {})["system"] == "be brief"


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_stream_sends_every_event_and_ends_completed(
    client: openai.OpenAI, up: FakeUpstream, model: str
) -> None:
    events = list(client.responses.create(model=model, input="hello there world", stream=True))
    kinds = [event.type for event in events]
    assert [
        kind for i, kind in enumerate(kinds) if kind != "response.output_text.delta" or kinds[i - 1] != kind
    ] == (STREAM_EVENTS)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "echo: hello there world"
    assert completed.response.usage is not None
    assert (completed.response.usage.input_tokens, completed.response.usage.output_tokens) == (3, 4)


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_function_call_round_trip(client: openai.OpenAI, up: FakeUpstream, model: str) -> None:
    first = client.responses.create(model=model, input="weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    (call,) = first.output
    assert call.type == "function_call"
    assert (call.name, orjson.loads(call.arguments)) == ("get_weather", {"x": 1})
    turns: list[Any] = [
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    with client.responses.stream(model=model, input=turns) as stream:
        final = stream.get_final_response()
    # the fake echoes the last user turn's text: on Anthropic that is the tool result's turn, no text
    assert final.output_text == ("echo: weather in Paris?" if model == "gpt" else "echo: ")
    sent = up.requests[-1].body or {}
    if model == "gpt":
        assert sent["messages"][1:] == [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
        ]
    else:
        assert sent["messages"][1]["content"][0] == {
            "type": "tool_use",
            "id": call.call_id,
            "name": "get_weather",
            "input": {"x": 1},
        }


def test_function_call_streamed(client: openai.OpenAI, up: FakeUpstream) -> None:
    with client.responses.stream(model="gpt", input="weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * (len(kinds) - 6),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = final.output
    assert call.type == "function_call" and (call.call_id, orjson.loads(call.arguments)) == (
        "call_1",
        {"x": 1},
    )


def test_what_the_gateway_cannot_do_is_a_400_naming_it(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as stateful:
        client.responses.create(model="gpt", input="again", previous_response_id="resp_1")
    assert stateful.value.body == {
        "message": "previous_response_id is not supported: the gateway keeps no responses, send the whole"
        " conversation in 'input'",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as builtin:
        client.responses.create(model="gpt", input="news?", tools=[{"type": "web_search"}])
    assert builtin.value.body == {
        "message": "tool type 'web_search' is not supported:"
        " the gateway runs no built-in tools, only functions",
        "type": "invalid_request_error",
        "param": "tools",
        "code": None,
    }
    assert up.requests == []


def test_provider_error_before_and_after_the_first_byte(
    gateway: Gateway, client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.fail_next(
        400,
        body={
            "error": {"message": "bad input", "type": "invalid_request_error", "param": None, "code": None}
        },
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt", input="hi")
    assert refused.value.body == {
        "message": "bad input",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    up.break_streams(3, error_event=False)
    got = httpx.post(
        f"{gateway.url}/v1/responses",
        json={"model": "gpt", "input": "hello there world", "stream": True},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=20,
    )
    last = orjson.loads(got.content.rstrip(b"\n").rsplit(b"\n\n", 1)[-1].split(b"\ndata: ", 1)[1])
    assert (last["type"], last["response"]["status"]) == ("response.failed", "failed")
    assert last["response"]["error"]["code"] == "server_error"
    assert got.content.count(b"event: response.failed") == 1
    root = by_name(traces.spans(got.headers["x-tfgw-trace-id"]))["POST /v1/responses"]
    assert root["status"]["code"] == 2


def test_responses_span_is_a_chat_span(client: openai.OpenAI, traces: TraceFiles) -> None:
    raw = client.responses.with_raw_response.create(model="gpt", input="hello there world", stream=True)
    events = list(raw.parse())
    spans = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))
    assert spans["POST /v1/responses"]["attributes"]["input.value"] == "hello there world"
    llm = spans["chat gpt-4o-mini"]["attributes"]
    assert {
        k: llm[k] for k in llm if k.startswith(("llm.input", "llm.output", "gen_ai.usage", "gen_ai.response"))
    } == {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "hello there world",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "echo: hello there world",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.id": "chatcmpl-fake1",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.time_to_first_chunk": "<float>",
    }
    assert llm["input.value"] == {"model": "gpt", "input": "hello there world", "stream": True}
    assert events[-1].type == "response.completed"
    assert "stream" in spans


# -- a provider with the Responses API: passed through -------------------------------------------


def gateway_post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    return httpx.post(f"{gateway.url}/v1/responses", json=body, headers=headers, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
def test_native_provider_gets_the_body_and_answers_with_its_bytes(
    gateway: Gateway, up: FakeUpstream, stream: bool
) -> None:
    body = {
        "model": "gpt-4o",
        "input": "hello there world",
        "previous_response_id": "resp_0",
        "stream": stream,
    }
    body["tools"] = [{"type": "web_search"}]
    expected = httpx.post(f"{up.url}/v1/responses", json=body, headers={"authorization": "Bearer x"})
    up.reset()
    got = gateway_post(gateway, {**body, "model": "gpt-native"})
    assert (got.status_code, got.content) == (200, expected.content)
    (seen,) = up.requests
    assert (seen.path, seen.body) == ("/v1/responses", body)


def test_native_stream_to_the_sdk_and_its_span(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-native", input="hello there world", stream=True
    )
    events = list(raw.parse())
    assert [e.type for e in events][-1] == "response.completed"
    assert events[-1].response.output_text == "echo: hello there world"
    llm = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))["chat gpt-4o"]["attributes"]
    assert {k: llm[k] for k in llm if k.startswith(("llm.output", "gen_ai.usage", "gen_ai.response"))} == {
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "echo: hello there world",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.response.id": "resp_fake1",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.time_to_first_chunk": "<float>",
    }


def test_native_function_call(client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-native", input="weather?", tools=[WEATHER])  # type: ignore[list-item]
    (call,) = raw.parse().output
    assert call.type == "function_call" and (call.call_id, call.name) == ("call_1", "get_weather")
    llm = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))["chat gpt-4o"]["attributes"]
    assert llm["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"] == "get_weather"
    assert llm["gen_ai.response.finish_reasons"] == ["tool_calls"]


def test_native_stream_broken_off_ends_with_an_error_event(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.break_streams(3, error_event=False)
    got = gateway_post(gateway, {"model": "gpt-native", "input": "hello there world", "stream": True})
    last = got.content.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    name, data = last.split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data[6:]) == {
        "type": "error",
        "code": "provider_error",
        "message": "provider 'native' failed: ClientPayloadError",
        "param": None,
    }
    root = by_name(traces.spans(got.headers["x-tfgw-trace-id"]))["POST /v1/responses"]
    assert root["status"]["code"] == 2


@pytest.mark.parametrize("model", ["gpt", "gpt-native"])
def test_client_going_away_leaves_a_finished_span(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles, model: str
) -> None:
    up.slow_stream_chunks(count=50, delay=0.05)
    body = {"model": model, "input": "hello there world", "stream": True}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/responses", json=body, headers=headers, timeout=20
    ) as response:
        trace_id = response.headers["x-tfgw-trace-id"]
        next(response.iter_raw())
    spans = by_name(traces.spans(trace_id))
    assert spans["stream"]["attributes"]["tfgw.stream.cancelled"] is True
    assert spans["POST /v1/responses"]["attributes"]["tfgw.stream.cancelled"] is True
