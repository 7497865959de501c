"""The fake provider itself: each route's wire format, programmed failures, keys and disconnects."""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.upstream import CREATED, FakeUpstream, Recorded, embedding_of

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello big world"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def client(up: FakeUpstream) -> Iterator[httpx.Client]:
    up.reset()
    with httpx.Client(base_url=up.url, timeout=5) as http:
        yield http


def sse(response: httpx.Response) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; "[DONE]" stays a string."""
    events = []
    for block in response.text.split("\n\n")[:-1]:
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = lines["data"]
        events.append((lines.get("event"), data if data == "[DONE]" else orjson.loads(data)))
    return events


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-x",
        "choices": choices,
        **extra,
    }


def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def test_chat_json_echoes_the_last_user_message_and_is_recorded(
    up: FakeUpstream, client: httpx.Client
) -> None:
    body = {"model": "gpt-x", "messages": MESSAGES}
    response = client.post("/v1/chat/completions?trace=1", json=body, headers={"Authorization": "Bearer k"})

    assert response.status_code == 200
    assert response.json() == {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hello big world"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
    [recorded] = up.requests
    assert recorded == Recorded("POST", "/v1/chat/completions", {"trace": "1"}, recorded.headers, body)
    assert recorded.headers["authorization"] == "Bearer k"


def test_chat_n_gives_n_choices_and_counts_their_tokens(client: httpx.Client) -> None:
    body = {
        "model": "gpt-x",
        "n": 2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
    }
    answer = client.post("/v1/chat/completions", json=body).json()

    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in answer["choices"]} == {"echo: a"}
    assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}


def test_chat_stream_without_usage(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "gpt-x", "messages": MESSAGES, "stream": True}
    )

    assert response.headers["content-type"] == "text/event-stream"
    assert sse(response) == [
        (None, chunk([choice({"role": "assistant", "content": ""})])),
        (None, chunk([choice({"content": "echo: "})])),
        (None, chunk([choice({"content": "hello "})])),
        (None, chunk([choice({"content": "big "})])),
        (None, chunk([choice({"content": "world"})])),
        (None, chunk([choice({}, "stop")])),
        (None, "[DONE]"),
    ]


def test_chat_stream_with_usage(client: httpx.Client) -> None:
    body = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = client.post("/v1/chat/completions", json=body)

    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert sse(response) == [
        (None, chunk([choice({"role": "assistant", "content": ""})], usage=None)),
        (None, chunk([choice({"content": "echo: "})], usage=None)),
        (None, chunk([choice({"content": "hi"})], usage=None)),
        (None, chunk([choice({}, "stop")], usage=None)),
        (None, chunk([], usage=usage)),
        (None, "[DONE]"),
    ]


def test_chat_with_tools_answers_a_tool_call(client: httpx.Client) -> None:
    body = {"model": "gpt-x", "messages": MESSAGES, "tools": TOOLS}
    answer = client.post("/v1/chat/completions", json=body).json()
    streamed = sse(client.post("/v1/chat/completions", json={**body, "stream": True}))

    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"x": 1}'}}
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    first_call = {**call, "index": 0, "function": {"name": "get_weather", "arguments": ""}}
    assert [data["choices"] for _, data in streamed[:-1]] == [
        [choice({"role": "assistant", "content": None, "tool_calls": [first_call]})],
        [choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]})],
        [choice({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})],
        [choice({}, "tool_calls")],
    ]
    assert streamed[-1] == (None, "[DONE]")


def test_embeddings_for_a_string_a_list_and_base64(client: httpx.Client) -> None:
    one = client.post("/v1/embeddings", json={"model": "emb", "input": "two words"}).json()
    many = client.post("/v1/embeddings", json={"model": "emb", "input": ["a", "b c"]}).json()
    packed = client.post("/v1/embeddings", json={"model": "emb", "input": "a", "encoding_format": "base64"})

    assert one == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": embedding_of("two words")}],
        "model": "emb",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    assert len(embedding_of("a")) == 8 and embedding_of("a") != embedding_of("b c")
    assert many["data"] == [
        {"object": "embedding", "index": 0, "embedding": embedding_of("a")},
        {"object": "embedding", "index": 1, "embedding": embedding_of("b c")},
    ]
    assert many["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vector = base64.b64decode(packed.json()["data"][0]["embedding"])
    assert list(struct.unpack("<8f", vector)) == embedding_of("a")


def test_azure_routes_answer_with_the_deployment_as_model(up: FakeUpstream, client: httpx.Client) -> None:
    base = "/openai/deployments/my-dep"
    chat = client.post(f"{base}/chat/completions?api-version=2024-10-21", json={"messages": MESSAGES})
    emb = client.post(f"{base}/embeddings?api-version=2024-10-21", json={"input": "x"})
    missing = client.post(f"{base}/chat/completions", json={"messages": MESSAGES})

    assert chat.json()["model"] == "my-dep"
    assert chat.json()["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello big world"}
    assert emb.json()["model"] == "my-dep"
    assert missing.status_code == 404
    assert up.requests[0].query == {"api-version": "2024-10-21"}


def test_anthropic_json(client: httpx.Client) -> None:
    body = {"model": "claude-x", "max_tokens": 10, "system": "be brief", "messages": MESSAGES[1:]}
    response = client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)

    assert response.json() == {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "echo: hello big world"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 4,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def test_anthropic_stream(client: httpx.Client) -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)

    start_usage = {
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    text_delta = {"type": "content_block_delta", "index": 0}
    assert sse(response) == [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {**text_delta, "delta": {"type": "text_delta", "text": "echo: "}}),
        ("content_block_delta", {**text_delta, "delta": {"type": "text_delta", "text": "hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 2},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_anthropic_tools_answer_a_tool_use_block(client: httpx.Client) -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "messages": MESSAGES[1:],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    }
    answer = client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS).json()
    streamed = sse(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC_HEADERS))

    assert answer["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"x": 1}}
    ]
    assert answer["stop_reason"] == "tool_use"
    assert [data for name, data in streamed if name in ("content_block_start", "content_block_delta")] == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"x": '},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
    ]
    assert streamed[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_anthropic_refuses_what_the_real_api_refuses(client: httpx.Client) -> None:
    no_version = client.post("/v1/messages", json={"model": "c", "max_tokens": 1, "messages": MESSAGES[1:]})
    no_max = client.post(
        "/v1/messages", json={"model": "c", "messages": MESSAGES[1:]}, headers=ANTHROPIC_HEADERS
    )

    assert (no_version.status_code, no_version.json()) == (
        400,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
        },
    )
    assert no_max.json()["error"]["message"] == "max_tokens: Field required"


def test_fail_next_answers_wire_shaped_errors_then_recovers(up: FakeUpstream, client: httpx.Client) -> None:
    up.fail_next(429, times=2, headers={"retry-after": "1"})
    up.fail_next(503, path="/v1/messages")
    up.fail_next(502, body=b"<html>bad gateway</html>")
    chat = {"model": "gpt-x", "messages": MESSAGES}
    anthropic = {"model": "c", "max_tokens": 1, "messages": MESSAGES[1:]}

    first = client.post("/v1/chat/completions", json=chat)
    second = client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    third = client.post("/v1/chat/completions", json=chat)  # the 503 waits for /v1/messages
    fourth = client.post("/v1/messages", json=anthropic, headers=ANTHROPIC_HEADERS)
    fifth = client.post("/v1/messages", json=anthropic, headers=ANTHROPIC_HEADERS)

    assert (first.status_code, first.headers["retry-after"], first.json()) == (
        429,
        "1",
        {
            "error": {
                "message": "fake upstream error 429",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
    )
    assert second.status_code == 429
    assert (third.status_code, third.text) == (502, "<html>bad gateway</html>")
    assert (fourth.status_code, fourth.json()) == (
        503,
        {"type": "error", "error": {"type": "api_error", "message": "fake upstream error 503"}},
    )
    assert fifth.status_code == 200


def test_fail_next_with_a_json_body(up: FakeUpstream, client: httpx.Client) -> None:
    up.fail_next(400, body={"error": {"message": "context too long"}})
    response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": MESSAGES})

    assert (response.status_code, response.json()) == (400, {"error": {"message": "context too long"}})


@pytest.mark.parametrize(
    ("header", "good"),
    [("authorization", "Bearer sk-1"), ("api-key", "sk-1"), ("x-api-key", "sk-1")],
)
def test_require_key(up: FakeUpstream, client: httpx.Client, header: str, good: str) -> None:
    up.require_key("sk-1", header=header)
    chat = {"model": "gpt-x", "messages": MESSAGES}
    anthropic = {"model": "c", "max_tokens": 1, "messages": MESSAGES[1:]}

    missing = client.post("/v1/chat/completions", json=chat)
    wrong = client.post("/v1/chat/completions", json=chat, headers={header: good.replace("1", "2")})
    right = client.post("/v1/chat/completions", json=chat, headers={header: good})
    anthropic_missing = client.post("/v1/messages", json=anthropic, headers=ANTHROPIC_HEADERS)

    assert (missing.status_code, missing.json()) == (
        401,
        {
            "error": {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert (anthropic_missing.status_code, anthropic_missing.json()) == (
        401,
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
    )


def test_unknown_route_is_a_wire_shaped_404(client: httpx.Client) -> None:
    response = client.get("/v1/models/nope")

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Not Found: GET /v1/models/nope"


def test_delay_holds_back_the_headers(up: FakeUpstream, client: httpx.Client) -> None:
    up.delay(0.2)
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": MESSAGES})

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_stream_delay_spaces_the_events(up: FakeUpstream, client: httpx.Client) -> None:
    up.stream_delay(0.05)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=body)

    assert len(sse(response)) == 5
    assert time.monotonic() - started >= 4 * 0.05


def test_a_client_leaving_mid_stream_is_counted(up: FakeUpstream, client: httpx.Client) -> None:
    up.slow_stream_chunks(count=100, delay=0.02)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        first = next(response.iter_lines())
    assert orjson.loads(first.removeprefix("data: "))["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
    }

    wait_for(lambda: up.stream_disconnects == 1)
    full = client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert full["choices"][0]["message"]["content"] == "echo: hi" + " tick" * 100


def test_reset_forgets_records_and_behaviour(up: FakeUpstream, client: httpx.Client) -> None:
    up.fail_next(500)
    up.require_key("k")
    client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    up.reset()

    assert up.requests == []
    assert client.post("/v1/embeddings", json={"model": "e", "input": "x"}).status_code == 200


def test_stop_releases_the_port_and_the_thread() -> None:
    threads = set(threading.enumerate())
    with FakeUpstream() as upstream:
        port = int(upstream.url.rsplit(":", 1)[1])
        with httpx.Client(base_url=upstream.url) as http:
            assert http.post("/v1/embeddings", json={"model": "e", "input": "x"}).status_code == 200

    assert set(threading.enumerate()) == threads
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
