"""The gateway as a real process, driven by the official openai SDK against a real fake provider."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import ANTHROPIC_KEY, AZURE_KEY, GATEWAY_KEY, MAX_BODY, OPENAI_KEY, PROVIDER_KEYS
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import CREATED, TOOL_ARGUMENTS, FakeUpstream, embedding_of

HELLO = [{"role": "user", "content": "hello there world"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_chat_answers_as_the_provider_did(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="gpt", messages=HELLO, temperature=0.2)
    assert reply.model_dump(exclude_none=True) == {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "echo: hello there world"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    (seen,) = up.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.body == {"model": "gpt-4o-mini", "messages": HELLO, "temperature": 0.2}


def test_upstream_sees_the_provider_key_never_the_gateway_key(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    client.chat.completions.create(model="gpt", messages=HELLO)
    (seen,) = up.requests
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert GATEWAY_KEY not in repr(seen)


def test_stream_without_include_usage(client: openai.OpenAI, up: FakeUpstream) -> None:
    chunks = list(client.chat.completions.create(model="gpt", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there world"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_with_include_usage(client: openai.OpenAI, up: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


def test_embeddings(client: openai.OpenAI, up: FakeUpstream) -> None:
    result = client.embeddings.create(model="emb", input=["one", "two words"])
    assert [d.embedding for d in result.data] == [embedding_of("one"), embedding_of("two words")]
    assert result.model == "text-embedding-3-small"
    assert up.requests[0].body == {
        "model": "text-embedding-3-small",
        "input": ["one", "two words"],
        "encoding_format": "base64" if up.requests[0].body.get("encoding_format") == "base64" else "float",
    }


def test_models_lists_the_configured_names(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [
        "gpt",
        "claude",
        "azure-gpt",
        "gpt-native",
        "emb",
        "dead-then-gpt",
        "gpt-then-claude",
        "impatient",
    ]


def test_tools_response_format_and_images_pass_through_unchanged(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is here"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.invalid/cat.png", "detail": "low"},
                },
            ],
        },
    ]
    reply = client.chat.completions.create(
        model="gpt",
        messages=messages,
        tools=TOOLS,
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        extra_body={"vendor_specific": {"a": 1}},
    )
    assert up.requests[0].body == {
        "model": "gpt-4o-mini",
        "messages": messages,
        "tools": TOOLS,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "n": 2,
        "vendor_specific": {"a": 1},
    }
    assert len(reply.choices) == 2
    call = reply.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", TOOL_ARGUMENTS)
    assert reply.choices[0].finish_reason == "tool_calls"


def test_direct_provider_slash_model(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="up/some-new-model", messages=HELLO)
    assert reply.model == "some-new-model"
    assert up.requests[0].body["model"] == "some-new-model"


def test_azure_deployment_url_and_api_key_header(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="azure-gpt", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there world"
    (seen,) = up.requests
    assert (seen.path, seen.query) == (
        "/openai/deployments/my-deployment/chat/completions",
        {"api-version": "2024-10-21"},
    )
    assert seen.headers["api-key"] == AZURE_KEY
    assert "authorization" not in seen.headers


def test_anthropic_translation_json(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}, *HELLO], max_tokens=50
    )
    (seen,) = up.requests
    assert seen.path == "/v1/messages"
    assert (seen.headers["x-api-key"], seen.headers["anthropic-version"]) == (ANTHROPIC_KEY, "2023-06-01")
    assert seen.body == {
        "model": "claude-3-5-haiku",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there world"}],
        "max_tokens": 50,
    }
    assert reply.choices[0].message.content == "echo: hello there world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 4, 9)


def test_anthropic_translation_tools(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(
        model="claude", messages=HELLO, tools=TOOLS, tool_choice="required"
    )
    assert up.requests[0].body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert up.requests[0].body["tool_choice"] == {"type": "any"}
    call = reply.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, orjson.loads(call.function.arguments)) == (
        "toolu_1",
        "get_weather",
        {"x": 1},
    )
    assert reply.choices[0].finish_reason == "tool_calls"


def test_anthropic_translation_stream(client: openai.OpenAI, up: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)
    assert up.requests[0].body["stream"] is True


def test_fallback_on_connection_error(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="dead-then-gpt", messages=HELLO)
    assert reply.model == "gpt-4o-mini"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_fallback_on_provider_failure(client: openai.OpenAI, up: FakeUpstream, status: int) -> None:
    up.fail_next(status, path="/v1/chat/completions")
    reply = client.chat.completions.create(model="gpt-then-claude", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there world"
    assert [r.path for r in up.requests] == ["/v1/chat/completions", "/v1/messages"]


def test_fallback_for_streams_before_the_first_byte(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.fail_next(503, path="/v1/chat/completions")
    chunks = list(client.chat.completions.create(model="gpt-then-claude", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there world"


def test_provider_4xx_is_passed_on_without_fallback_or_keys(client: openai.OpenAI, up: FakeUpstream) -> None:
    body = {"error": {"message": f"key {OPENAI_KEY} may not use this", "type": "invalid_request_error",
                      "param": None, "code": "bad_param"}}  # fmt: skip
    up.fail_next(400, body=body)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-then-claude", messages=HELLO)
    assert info.value.status_code == 400
    assert info.value.body == {**body["error"], "message": "key sk-…6789 may not use this"}
    assert len(up.requests) == 1
    assert OPENAI_KEY not in info.value.response.text


def test_anthropic_error_becomes_openai_shaped(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.fail_next(
        400, body={"type": "error", "error": {"type": "invalid_request_error", "message": "bad things"}}
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=HELLO)
    assert info.value.body == {
        "message": "bad things",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_all_targets_failing_is_502(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.fail_next(503, times=2)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-then-claude", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.body == {
        "message": "provider 'claude' returned HTTP 503",
        "type": "api_error",
        "param": None,
        "code": "provider_error",
    }
    for key in PROVIDER_KEYS:
        assert key not in info.value.response.text


def test_provider_timeout_is_504(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.delay(2.0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="impatient", messages=HELLO)
    assert info.value.status_code == 504
    assert info.value.body == {
        "message": "provider 'up' timed out",
        "type": "api_error",
        "param": None,
        "code": "provider_timeout",
    }


def test_missing_and_wrong_gateway_key_are_401(gateway: Gateway) -> None:
    missing = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "gpt", "messages": HELLO})
    message = (
        "You didn't provide an API key. Send your tfgw key as 'Authorization: Bearer <key>'"
        " (or 'x-api-key: <key>')."
    )
    assert (missing.status_code, missing.json()) == (
        401,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )
    with (
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="tfgw-wrong", max_retries=0) as c,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        c.chat.completions.create(model="gpt", messages=HELLO)
    assert info.value.body == {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                               "param": None, "code": "invalid_api_key"}  # fmt: skip


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.body == {
        "message": "The model 'no-such-model' does not exist on this gateway. "
        "GET /v1/models lists the models it serves.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_bad_json_and_bad_schema_are_400(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
    url = f"{gateway.url}/v1/chat/completions"
    bad_json = httpx.post(url, content=b"{not json", headers=headers)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert bad_json.json()["error"]["message"].startswith("The request body is not valid JSON")
    no_messages = httpx.post(url, json={"model": "gpt"}, headers=headers)
    assert (no_messages.status_code, no_messages.json()) == (
        400,
        {"error": {"message": "'messages' must be a non-empty array", "type": "invalid_request_error",
                   "param": "messages", "code": None}},
    )  # fmt: skip
    no_model = httpx.post(url, json={"messages": HELLO}, headers=headers)
    assert (no_model.status_code, no_model.json()) == (
        400,
        {"error": {"message": "you must provide a model parameter", "type": "invalid_request_error",
                   "param": "model", "code": None}},
    )  # fmt: skip


def test_body_over_the_limit_is_413(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x" * MAX_BODY}])
    assert info.value.status_code == 413
    assert info.value.body["code"] == "request_too_large"
    assert up.requests == []


def test_unknown_route_is_openai_shaped_404(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
