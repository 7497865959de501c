"""The Anthropic adapter: whole-value translation of requests, answers, streams and errors."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tfgw.config import ProviderSettings, Timeouts
from tfgw.errors import BadRequestError, ProviderError, UpstreamStatusError
from tfgw.providers.anthropic import (
    AnthropicProvider,
    StreamTranslator,
    from_messages_response,
    to_error_body,
    to_messages_request,
)
from tfgw.providers.base import Call

NOW = 1_700_000_000


# --------------------------------------------------------------------------------------------------
# Requests


def test_simple_chat_request() -> None:
    body = {
        "model": "claude",
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "alice",
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "logprobs": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "n": 1,
    }
    assert to_messages_request(body, "claude-sonnet-4-5") == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "alice"},
    }


def test_system_and_developer_messages_go_to_system() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "Anyone there?"}]},
            {"role": "assistant", "content": "Bonjour."},
        ]
    }
    assert to_messages_request(body, "m") == {
        "model": "m",
        "max_tokens": 4096,
        "system": "You are terse.\n\nAnswer in French.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Anyone there?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Bonjour."}]},
        ],
    }


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_tool_choice_tool_calls_and_results() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Which is warmer?"},
        ],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    assert to_messages_request(body, "m") == {
        "model": "m",
        "max_tokens": 4096,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "24C"}],
                    },
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_messages_request(body, "m").get("tool_choice") == expected


def test_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                    },
                ],
            }
        ]
    }
    assert to_messages_request(body, "m") == {
        "model": "m",
        "max_tokens": 4096,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    }


def test_stop_and_max_tokens() -> None:
    messages = [{"role": "user", "content": "Count"}]
    assert to_messages_request({"messages": messages, "stop": "10", "max_tokens": 50}, "m") == {
        "model": "m",
        "max_tokens": 50,
        "messages": messages,
        "stop_sequences": ["10"],
    }
    body = {"messages": messages, "stop": ["5", "6"], "max_tokens": 50, "max_completion_tokens": 70}
    assert to_messages_request(body, "m") == {
        "model": "m",
        "max_tokens": 70,
        "messages": messages,
        "stop_sequences": ["5", "6"],
    }


def test_n_above_one_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError) as caught:
        to_messages_request({"messages": [{"role": "user", "content": "x"}], "n": 2}, "m")
    assert orjson.loads(caught.value.body()) == {
        "error": {
            "message": "n > 1 is not supported by anthropic provider",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }
    }


# --------------------------------------------------------------------------------------------------
# Answers


def test_response_with_text() -> None:
    data = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
            {"type": "text", "text": "Hello! "},
            {"type": "text", "text": "How can I help?"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 8},
    }
    assert from_messages_response(data, "claude", created=NOW) == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 8,
            "total_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_response_with_tool_use() -> None:
    data = {
        "id": "msg_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 300, "output_tokens": 40},
    }
    assert from_messages_response(data, "claude", created=NOW) == {
        "id": "msg_02",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 300,
            "completion_tokens": 40,
            "total_tokens": 340,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_response_with_cache_tokens() -> None:
    data = {
        "id": "msg_03",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Done"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 1000,
            "output_tokens": 5,
        },
    }
    assert from_messages_response(data, "claude", created=NOW) == {
        "id": "msg_03",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-haiku-4-5",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Done", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": 1210,
            "completion_tokens": 5,
            "total_tokens": 1215,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "cache_creation_input_tokens": 200,
        },
    }


# A streamed answer as Anthropic sends it: thinking, text, then a tool call.
STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_04", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                  "output_tokens": 1}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "The user wants weather."}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "signature_delta", "signature": "EqQB"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "Let me"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": " check."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 42}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "msg_04",
        "object": "chat.completion.chunk",
        "created": NOW,
        "model": "claude-sonnet-4-5",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


EXPECTED_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me"}),
    chunk({"content": " check."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
    chunk({}, "tool_calls"),
]
EXPECTED_USAGE = {
    "prompt_tokens": 150,
    "completion_tokens": 42,
    "total_tokens": 192,
    "prompt_tokens_details": {"cached_tokens": 100},
}


def test_stream() -> None:
    translator = StreamTranslator("claude", created=NOW)
    assert translator.usage is None
    chunks = [out for event, data in STREAM_EVENTS for out in translator.feed(event, data)]
    assert chunks == EXPECTED_CHUNKS
    assert translator.usage == EXPECTED_USAGE
    assert translator.usage_chunk() == {
        "id": "msg_04",
        "object": "chat.completion.chunk",
        "created": NOW,
        "model": "claude-sonnet-4-5",
        "choices": [],
        "usage": EXPECTED_USAGE,
    }


def test_stream_error_event() -> None:
    translator = StreamTranslator("claude", created=NOW)
    translator.feed("message_start", STREAM_EVENTS[0][1])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderError) as caught:
        translator.feed("error", error)
    assert caught.value.message == "anthropic stream error: overloaded_error: Overloaded"


def test_error_body() -> None:
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}'
    assert orjson.loads(to_error_body(body)) == {
        "error": {
            "message": "max_tokens: too big",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert orjson.loads(to_error_body(b"<html>502 Bad Gateway</html>" + b"x" * 600)) == {
        "error": {
            "message": "<html>502 Bad Gateway</html>" + "x" * 472,
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }


# --------------------------------------------------------------------------------------------------
# The provider, over a fake HttpClient


class FakeContent:
    """The body in reads of 37 bytes, so events arrive cut across reads, several in one read."""

    def __init__(self, raw: bytes) -> None:
        self.reads = iter([raw[i : i + 37] for i in range(0, len(raw), 37)])

    async def readany(self) -> bytes:
        """The next read, b"" once the body has ended (as aiohttp's `StreamReader`)."""
        return next(self.reads, b"")


class FakeResponse:
    def __init__(self, raw: bytes) -> None:
        self.content = FakeContent(raw)
        self.released = False

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.released = True


class FakeClient:
    """Records what the provider sends and answers with a canned body, response or error."""

    provider = "claude"

    def __init__(self, answer: bytes | FakeResponse | UpstreamStatusError) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: Timeouts
    ) -> tuple[int, bytes]:
        self.sent.append((url, orjson.loads(body), dict(headers)))
        if isinstance(self.answer, UpstreamStatusError):
            raise self.answer
        assert isinstance(self.answer, bytes)
        return 200, self.answer

    async def open(self, url: str, body: bytes, headers: dict[str, str], timeout: Timeouts) -> FakeResponse:
        self.sent.append((url, orjson.loads(body), dict(headers)))
        if isinstance(self.answer, UpstreamStatusError):
            raise self.answer
        assert isinstance(self.answer, FakeResponse)
        return self.answer


SETTINGS = ProviderSettings(
    name="claude",
    kind="anthropic",
    base_url="https://api.anthropic.com",
    api_key="sk-ant-secret",
    headers={"anthropic-beta": "prompt-caching-2024-07-31"},
)
HEADERS = {
    "x-api-key": "sk-ant-secret",
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
    "anthropic-beta": "prompt-caching-2024-07-31",
}
URL = "https://api.anthropic.com/v1/messages"


def make_call(**extra: Any) -> Call:
    body = {"model": "fast", "messages": [{"role": "user", "content": "Hi"}], **extra}
    return Call(model="claude-haiku-4-5", body=body, timeout=Timeouts())


def test_provider_chat() -> None:
    answer = {
        "id": "msg_05",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    client = FakeClient(orjson.dumps(answer))
    provider = AnthropicProvider(SETTINGS, client)  # type: ignore[arg-type]
    reply = asyncio.run(provider.chat(make_call(stream=False)))
    request = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert client.sent == [(URL, request, HEADERS)]
    assert orjson.loads(reply.body) == reply.data
    assert {**reply.data, "created": NOW} == {
        "id": "msg_05",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-haiku-4-5",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_provider_stream_frames() -> None:
    raw = b"".join(
        b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for event, data in STREAM_EVENTS
    )
    client = FakeClient(FakeResponse(raw))
    provider = AnthropicProvider(SETTINGS, client)  # type: ignore[arg-type]

    async def read(include_usage: bool) -> tuple[bytes, list[dict]]:
        options = {"include_usage": include_usage}
        stream = await provider.open_stream(make_call(stream=True, stream_options=options))
        stream.translator.created = NOW
        batches = [batch async for batch in stream]
        return b"".join(frames for frames, _ in batches), [c for _, chunks in batches for c in chunks]

    usage_chunk = {
        "id": "msg_04",
        "object": "chat.completion.chunk",
        "created": NOW,
        "model": "claude-sonnet-4-5",
        "choices": [],
        "usage": EXPECTED_USAGE,
    }
    sent, chunks = asyncio.run(read(include_usage=True))
    assert client.sent[0][1]["stream"] is True
    frames = sent.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    assert all(f.startswith(b"data: ") for f in frames[:-1])
    assert [orjson.loads(f[6:]) for f in frames[:-2]] == chunks == [*EXPECTED_CHUNKS, usage_chunk]

    # the gateway still sees the usage when the client did not ask for it; the client does not
    client.answer = FakeResponse(raw)
    sent, chunks = asyncio.run(read(include_usage=False))
    assert chunks == [*EXPECTED_CHUNKS, usage_chunk]
    assert [orjson.loads(f[6:]) for f in sent.split(b"\n\n")[:-2]] == EXPECTED_CHUNKS


def test_provider_stream_cut_before_message_stop() -> None:
    raw = b"".join(b"data: " + orjson.dumps(data) + b"\n\n" for _, data in STREAM_EVENTS[:5])
    provider = AnthropicProvider(SETTINGS, FakeClient(FakeResponse(raw)))  # type: ignore[arg-type]

    async def read() -> list[tuple[bytes, list[dict]]]:
        stream = await provider.open_stream(make_call(stream=True))
        return [batch async for batch in stream]

    with pytest.raises(ProviderError, match="ended the stream before message_stop"):
        asyncio.run(read())


def test_provider_upstream_error_is_openai_shaped() -> None:
    upstream = b'{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}'
    original = UpstreamStatusError("claude", 404, upstream, {})
    provider = AnthropicProvider(SETTINGS, FakeClient(original))  # type: ignore[arg-type]
    with pytest.raises(UpstreamStatusError) as caught:
        asyncio.run(provider.chat(make_call()))
    assert caught.value.__cause__ is original
    assert caught.value.status == 404
    assert orjson.loads(caught.value.body()) == {
        "error": {"message": "model: claude-9", "type": "not_found_error", "param": None, "code": None}
    }


def test_provider_has_no_embeddings() -> None:
    provider = AnthropicProvider(SETTINGS, FakeClient(b""))  # type: ignore[arg-type]
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(provider.embeddings(make_call()))
    assert caught.value.message == "anthropic provider has no embeddings endpoint"


def test_text_of_reads_only_plain_text_deltas() -> None:
    translator = StreamTranslator("m")
    text = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \\"you\\""}}'
    assert translator.text_of(text) == 'Hi "you"'
    empty = b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    assert translator.text_of(empty) == ""  # says nothing: not parsed at all
    for other in (
        b'{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"text_delta"}}',
        b'{"type":"content_block_delta", not json "text_delta"',
        b'{"type":"message_stop"}',
        b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}',
        b'{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}',
    ):
        assert translator.text_of(other) is None, other
