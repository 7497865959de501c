"""The texts of each body format: every client (or model) text found, rewritten on a copy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tfgw.policy import texts


def mark(text: str) -> str:
    return f"<{text}>"


CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
    "temperature": 0,
}

MESSAGES = {
    "model": "m",
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t"}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "42"},
                {"type": "tool_result", "tool_use_id": "u", "content": [{"type": "text", "text": "43"}]},
                {"type": "image", "source": {"type": "url", "url": "u"}},
            ],
        },
    ],
}

RESPONSES = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "there"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "42"},
    ],
}


def test_chat_request() -> None:
    before = copy.deepcopy(CHAT)
    assert list(texts.request_texts("chat", CHAT)) == ["be brief", "hi", "42"]
    out = texts.rewrite_request("chat", CHAT, mark)
    assert out == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "<be brief>"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<hi>"},
                    {"type": "image_url", "image_url": {"url": "u"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "<42>"},
        ],
        "temperature": 0,
    }
    assert before == CHAT
    assert out["messages"][2] is CHAT["messages"][2]  # only the containers on a changed path are copied
    assert out["messages"][1]["content"][1] is CHAT["messages"][1]["content"][1]


def test_messages_request() -> None:
    before = copy.deepcopy(MESSAGES)
    assert list(texts.request_texts("messages", MESSAGES)) == ["be brief", "hi", "calling", "42", "43"]
    out = texts.rewrite_request("messages", MESSAGES, mark)
    assert out == {
        "model": "m",
        "system": [{"type": "text", "text": "<be brief>"}],
        "messages": [
            {"role": "user", "content": "<hi>"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "<calling>"}, {"type": "tool_use", "id": "t"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "<42>"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "u",
                        "content": [{"type": "text", "text": "<43>"}],
                    },
                    {"type": "image", "source": {"type": "url", "url": "u"}},
                ],
            },
        ],
    }
    assert before == MESSAGES
    assert texts.rewrite_request("messages", {"system": "s", "messages": []}, mark) == {
        "system": "<s>",
        "messages": [],
    }


def test_responses_request() -> None:
    before = copy.deepcopy(RESPONSES)
    assert list(texts.request_texts("responses", RESPONSES)) == ["be brief", "hi", "there", "ok", "42"]
    out = texts.rewrite_request("responses", RESPONSES, mark)
    assert out == {
        "model": "m",
        "instructions": "<be brief>",
        "input": [
            {"role": "user", "content": "<hi>"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<there>"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "<ok>"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "<42>"},
        ],
    }
    assert before == RESPONSES
    assert out["input"][3] is RESPONSES["input"][3]
    assert texts.rewrite_request("responses", {"input": "hi"}, mark) == {"input": "<hi>"}


def test_embeddings_request_leaves_token_arrays_alone() -> None:
    assert texts.rewrite_request("embeddings", {"input": "a"}, mark) == {"input": "<a>"}
    assert texts.rewrite_request("embeddings", {"input": ["a", "b"]}, mark) == {"input": ["<a>", "<b>"]}
    tokens: dict[str, Any] = {"input": [[1, 2], [3]]}
    assert texts.rewrite_request("embeddings", tokens, mark) is tokens
    assert list(texts.request_texts("embeddings", {"input": [1, 2, 3]})) == []


def test_answers() -> None:
    chat = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}},
            {"index": 1, "message": {}},
        ]
    }
    assert list(texts.answer_texts("chat", chat)) == ["hi"]
    assert texts.rewrite_answer("chat", chat, mark) == {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "<hi>"}},
            {"index": 1, "message": {}},
        ]
    }
    message = {
        "type": "message",
        "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t"}],
    }
    assert texts.rewrite_answer("messages", message, mark) == {
        "type": "message",
        "content": [{"type": "text", "text": "<hi>"}, {"type": "tool_use", "id": "t"}],
    }
    response = {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
            {"type": "function_call", "arguments": "{}"},
        ],
        "output_text": "hi",
    }
    assert list(texts.answer_texts("responses", response)) == ["hi", "hi"]
    assert texts.rewrite_answer("responses", response, mark) == {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "<hi>", "annotations": []}]},
            {"type": "function_call", "arguments": "{}"},
        ],
        "output_text": "<hi>",
    }
    assert response["output_text"] == "hi"
    assert list(texts.answer_texts("embeddings", {"data": [{"embedding": [0.1]}]})) == []


@pytest.mark.parametrize("fmt", texts.FORMATS)
def test_nothing_changed_is_the_body_itself(fmt: str) -> None:
    body = {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES, "embeddings": {"input": ["a"]}}[fmt]
    assert texts.rewrite_request(fmt, body, lambda t: t) is body


def test_bodies_of_the_wrong_shape_are_skipped() -> None:
    odd: dict[str, Any] = {
        "messages": [None, 3, {"role": "user", "content": 7}, {"content": [None, {"type": "text"}]}]
    }
    assert list(texts.request_texts("chat", odd)) == []
    assert texts.rewrite_request("chat", odd, mark) is odd
    assert list(texts.request_texts("messages", {"messages": "x", "system": 3})) == []


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown body format 'xml'"):
        texts.request_texts("xml", {})


def test_sse_event() -> None:
    assert texts.sse_event(b'data: {"a":1}') == (None, b'{"a":1}')
    assert texts.sse_event(b"event: ping\ndata: {}") == ("ping", b"{}")
    assert texts.sse_event(b"id: 3\nevent: x\ndata:a\ndata: b") == ("x", b"a\nb")
    assert texts.sse_event(b": keep-alive") == (None, None)


@pytest.mark.parametrize(
    ("fmt", "body", "plain"),
    [
        (
            "chat",
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
            ["Be brief.", "Hi"],
        ),
        ("chat", {"messages": []}, []),
        # anything but a string content is read by the walk: parts, a tool call's None, no content
        ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}, None),
        ("chat", {"messages": [{"role": "assistant", "content": None, "tool_calls": []}]}, None),
        ("chat", {"messages": [{"role": "user"}]}, None),
        ("chat", {"messages": ["not a message"]}, None),
        ("chat", {"model": "m"}, None),
        ("messages", {"messages": [{"role": "user", "content": "Hi"}]}, None),
    ],
)
def test_plain_texts_reads_string_contents_alone_and_agrees_with_the_walk(
    fmt: str, body: dict[str, Any], plain: list[str] | None
) -> None:
    assert texts.plain_texts(fmt, body) == plain
    if plain is not None:
        assert plain == list(texts.request_texts(fmt, body))
