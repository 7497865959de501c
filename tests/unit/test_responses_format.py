"""OpenAI Responses ↔ chat completions (`tfgw.formats.responses`), each direction as a whole value."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tfgw.errors import BadRequestError, ProviderError
from tfgw.formats.responses import ResponseEvents, to_chat_request, to_response
from tfgw.providers.responses import ResponsesReader, from_response


def test_request_with_items_tools_and_formats() -> None:
    body = {
        "model": "gpt",
        "instructions": "be brief",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is "},
                    {"type": "input_text", "text": "this?"},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": '{"q":1}'},
            {"type": "function_call", "call_id": "call_2", "name": "look", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            {"type": "function_call_output", "call_id": "call_2", "output": {"ok": False}},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
        ],
        "max_output_tokens": 64,
        "temperature": 0.2,
        "stream": True,
        "tools": [{"type": "function", "name": "look", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "look"},
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
        },
        "reasoning": {"effort": "low"},
        "store": False,
    }
    assert to_chat_request(body) == {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is this?"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}}
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q":1}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": '{"ok":false}'},
            {"role": "assistant", "content": "A cat."},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {"name": "look", "parameters": {"type": "object"}, "strict": True},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "tools"),
    ],
)
def test_what_cannot_be_translated_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        to_chat_request(body)
    assert refused.value.param == param


def test_answer_with_text_tool_call_and_usage() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    assert to_response(completion, {"model": "gpt", "input": "x", "temperature": 0.5}, created=7) == {
        "id": "resp_chatcmpl-1",
        "object": "response",
        "created_at": 7,
        "status": "completed",
        "model": "gpt-4o",
        "output": [
            {
                "type": "message",
                "id": "msg_chatcmpl-1_0",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_chatcmpl-1_0",
                "call_id": "call_1",
                "name": "look",
                "arguments": "{}",
                "status": "completed",
            },
        ],
        "error": None,
        "incomplete_details": None,
        "previous_response_id": None,
        "text": {"format": {"type": "text"}},
        "metadata": {},
        "instructions": None,
        "max_output_tokens": None,
        "parallel_tool_calls": True,
        "temperature": 0.5,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 15,
        },
    }


def test_an_answer_cut_at_its_limit_is_incomplete() -> None:
    completion = {"choices": [{"message": {"content": "abc"}, "finish_reason": "length"}]}
    response = to_response(completion, {"model": "m"})
    assert (response["status"], response["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )


def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for raw in data.strip().split(b"\n\n"):
        name, payload = raw.split(b"\n")
        event = orjson.loads(payload[6:])
        assert name == b"event: " + event["type"].encode()
        out.append(event)
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c9", "model": "gpt-4o", "choices": choices, **extra}


def test_text_stream_events() -> None:
    translated = ResponseEvents({"model": "gpt"})
    out = b"".join(
        translated.feed(c)
        for c in (
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}),
            chunk({"content": "!"}),
            chunk({}, "stop"),
            chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        )
    )
    got = events(out + translated.finish())
    assert [(e["type"], e["sequence_number"]) for e in got] == [
        (kind, i)
        for i, kind in enumerate(
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        )
    ]
    assert got[4] == {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_c9_0",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
        "logprobs": [],
    }
    completed = got[-1]["response"]
    assert completed["output"] == [
        {
            "type": "message",
            "id": "msg_c9_0",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi!", "annotations": []}],
        }
    ]
    assert (completed["status"], completed["usage"]["total_tokens"]) == ("completed", 5)


def test_tool_call_stream_and_a_failure() -> None:
    translated = ResponseEvents({"model": "gpt"})
    out = translated.feed(
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "look", "arguments": ""}}]})
    )
    out += translated.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    got = events(out + translated.failed(ProviderError("provider 'up' is unreachable")))
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.failed",
    ]
    assert got[2]["item"] == {
        "type": "function_call",
        "id": "fc_c9_0",
        "call_id": "call_1",
        "name": "look",
        "arguments": "",
        "status": "in_progress",
    }
    failed = got[-1]["response"]
    assert (failed["status"], failed["error"]) == (
        "failed",
        {"code": "server_error", "message": "provider 'up' is unreachable"},
    )


# -- a provider's own responses, read for the span -------------------------------------------------


def test_from_response_is_the_chat_view() -> None:
    response = {
        "id": "resp_1",
        "model": "gpt-4o",
        "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Two "},
                    {"type": "output_text", "text": "calls."},
                ],
            },
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": '{"q":1}'},
        ],
        "usage": {
            "input_tokens": 8,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 14,
        },
    }
    assert from_response(response) == {
        "id": "resp_1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Two calls.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "look", "arguments": '{"q":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 8,
            "completion_tokens": 6,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    cut = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []}
    assert from_response(cut)["choices"][0]["finish_reason"] == "length"


def test_event_reader_folds_a_native_stream() -> None:
    reader = ResponsesReader()
    created = {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o"}}
    call = {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"}
    completed = {
        "type": "response.completed",
        "response": {"status": "completed", "usage": {"input_tokens": 2, "output_tokens": 1}},
    }
    chunks = [
        chunk
        for data in (
            created,
            {"type": "response.in_progress"},
            {"type": "response.output_text.delta", "delta": "Hi"},
            {"type": "response.output_item.done", "item": call},
            completed,
        )
        for chunk in reader.feed(data["type"], data)
    ]
    head = {"id": "resp_1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    assert chunks == [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "look", "arguments": "{}"},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            "id": "resp_1",
            "model": "gpt-4o",
            "choices": [],
            "usage": {
                "prompt_tokens": 2,
                "completion_tokens": 1,
                "total_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        },
    ]
    assert reader.finished
    failing = ResponsesReader()
    with pytest.raises(ProviderError, match="responses stream failed: server_error: boom"):
        failing.feed(
            "response.failed",
            {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}},
        )


def test_event_reader_reads_text_deltas_fast() -> None:
    reader = ResponsesReader()
    event = b'{"type":"response.output_text.delta","sequence_number":4,"output_index":0,"delta":"Hi"}'
    assert reader.text_of(event) == "Hi"
    assert reader.text_of(b'{"type":"response.output_text.done","text":"Hi"}') is None
    assert reader.text_of(b'{"type":"response.output_text.delta", broken') is None
