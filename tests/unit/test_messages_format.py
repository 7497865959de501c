"""Anthropic Messages ↔ chat completions (`tfgw.formats.messages`), each direction as a whole value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tfgw.errors import BadRequestError, ModelNotFoundError, ProviderError, UpstreamStatusError
from tfgw.formats.messages import (
    MessageEvents,
    MessagesStream,
    _event,
    error_body,
    error_event,
    to_chat_request,
    to_message,
)
from tfgw.providers.base import Stream, StreamBatch

WEATHER = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}


def test_request_with_every_kept_key() -> None:
    body = {
        "model": "gpt",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    assert to_chat_request(body) == {
        "model": "gpt",
        "messages": [{"role": "system", "content": "be brief\n\nbe kind"}, {"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": {"type": "object"},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


def test_tool_history_images_and_thinking() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}},
                {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "a cat"}],
                },
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timeout", "is_error": True},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]
    assert to_chat_request(
        {"model": "m", "messages": messages, "tool_choice": {"type": "tool", "name": "x"}}
    ) == {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q":1}'},
                    },
                    {"id": "toolu_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
            {"role": "user", "content": "and now?"},
        ],
    }


def test_what_a_chat_provider_cannot_take_is_refused_or_kept_for_the_span() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    document = {"type": "document", "source": {"type": "text", "data": "x"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [document]}], "tools": [search]}
    with pytest.raises(BadRequestError) as refused:
        to_chat_request(body)
    assert (refused.value.param, refused.value.message) == (
        "messages",
        "messages: content block type 'document' is not supported when the model's provider is not Anthropic",
    )
    assert to_chat_request(body, strict=False) == {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "document"}]}],
        "tools": [search],
    }
    with pytest.raises(BadRequestError, match="messages: Field required"):
        to_chat_request({"model": "m", "messages": []}, strict=False)


def test_answer_with_text_tools_and_cache_usage() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "look", "arguments": '{"q": 2}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "look", "arguments": "not json"},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    assert to_message(completion, "fallback-name") == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 2}},
            {"type": "tool_use", "id": "call_2", "name": "look", "input": {"_raw": "not json"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 40,
            "output_tokens": 7,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 0,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn")],
)
def test_stop_reasons(finish: str | None, stop: str) -> None:
    completion = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert to_message(completion, "m")["stop_reason"] == stop


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-9", "model": "gpt-4o", "choices": choices, **extra}


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in data.strip().split(b"\n\n"):
        name, payload = raw.split(b"\n")
        assert name.startswith(b"event: ") and payload.startswith(b"data: ")
        out.append((name[7:].decode(), orjson.loads(payload[6:])))
    return out


def test_text_then_tool_call_stream() -> None:
    translated = MessageEvents("asked")
    out = b"".join(
        translated.feed(c)
        for c in (
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}),
            chunk(
                {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "look", "arguments": ""}}]}
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
            chunk(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
        )
    )
    start = {
        "id": "chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    assert events(out + translated.finish()) == [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "call_1", "name": "look", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"input_tokens": 9, "output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_an_empty_stream_is_still_a_whole_message() -> None:
    translated = MessageEvents("asked")
    assert [name for name, _ in events(translated.finish())] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    assert events(translated.finish())[0][1]["message"]["model"] == "asked"


class Chunks(Stream):
    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self._batches = batches
        self.closed = False

    async def batches(self) -> AsyncIterator[StreamBatch]:
        for chunks in self._batches:
            yield b"ignored", chunks

    async def aclose(self) -> None:
        self.closed = True


def test_messages_stream_sends_events_in_place_of_the_chunks() -> None:
    inner = Chunks([[chunk({"role": "assistant"}), chunk({"content": "a"})], [chunk({}, "stop")]])
    stream = MessagesStream(inner, "m")

    async def collect() -> list[StreamBatch]:
        got = [batch async for batch in stream]
        await stream.aclose()
        return got

    batches = asyncio.run(collect())
    assert [[name for name, _ in events(frames)] if frames else [] for frames, _ in batches] == [
        ["message_start", "content_block_start", "content_block_delta"],
        [],
        ["content_block_stop", "message_delta", "message_stop"],
    ]
    assert [chunks for _, chunks in batches] == [*inner._batches, []]
    assert inner.closed


def test_error_bodies() -> None:
    missing = ModelNotFoundError("no such model")
    assert orjson.loads(error_body(missing)) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    native = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'
    assert error_body(UpstreamStatusError("claude", 400, native)) == native
    openai_shaped = b'{"error":{"message":"no such parameter","type":"invalid_request_error"}}'
    assert orjson.loads(error_body(UpstreamStatusError("up", 422, openai_shaped))) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "no such parameter"},
    }
    data = b'{"type":"error","error":{"type":"api_error","message":"provider \'up\' failed"}}'
    assert error_event(ProviderError("provider 'up' failed")) == b"event: error\ndata: " + data + b"\n\n"


def test_the_closing_events_go_out_with_the_usage_chunk() -> None:
    usage = chunk(usage={"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3})
    inner = Chunks([[chunk({"content": "a"}), chunk({}, "stop")], [usage], []])
    stream = MessagesStream(inner, "m")

    async def collect() -> list[StreamBatch]:
        return [batch async for batch in stream]

    batches = asyncio.run(collect())
    assert [[name for name, _ in events(frames)] if frames else [] for frames, _ in batches] == [
        ["message_start", "content_block_start", "content_block_delta"],
        ["content_block_stop", "message_delta", "message_stop"],
        [],
    ]
    assert events(batches[1][0])[1][1]["usage"] == {"input_tokens": 2, "output_tokens": 1}


def test_more_text_is_written_byte_for_byte_as_any_event() -> None:
    translated = MessageEvents("m")
    translated.feed(chunk({"content": "a"}))
    text = 'a "quote", a \\ and ünïcode\n'
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    assert translated.feed(chunk({"content": text})) == _event("content_block_delta", delta)


def test_a_bare_text_chunk_is_more_text() -> None:
    translated = MessageEvents("m")
    translated.feed(chunk({"content": "a"}))
    assert translated.feed("b") == translated.feed(chunk({"content": "b"}))
