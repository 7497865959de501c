"""What the fuzzing of the HTTP surface found (tests/properties/test_http_fuzz.py), each case as it
came: a 400 in the route's shape naming the field, where the gateway answered 500 before."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tfgw.config import demo_settings
from tfgw.gateway import create_app


def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async def main() -> tuple[int, Any]:
        async with create_app(demo_settings()).test_app() as test_app:
            answer = await test_app.test_client().post(path, data=orjson.dumps(body))
            return answer.status_code, orjson.loads(await answer.get_data())

    return asyncio.run(main())


def openai_400(message: str, param: str) -> tuple[int, Any]:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return 400, {"error": error}


RESPONSE = {"model": "demo", "input": "hi"}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("text", "json", "an object"),
        ("reasoning", "high", "an object"),
        ("tools", 5, "an array"),
    ],
)
def test_responses_fields_of_another_type_are_400_naming_them(field: str, value: Any, says: str) -> None:
    assert post("/v1/responses", {**RESPONSE, field: value}) == openai_400(f"'{field}' must be {says}", field)


MESSAGE = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("tools", 5, "an array"),
        ("stop_sequences", 5, "an array of strings"),
        ("stop_sequences", [1], "an array of strings"),
    ],
)
def test_messages_fields_of_another_type_are_400_in_anthropics_shape(
    field: str, value: Any, says: str
) -> None:
    error = {"type": "invalid_request_error", "message": f"'{field}' must be {says}"}
    assert post("/v1/messages", {**MESSAGE, field: value}) == (400, {"type": "error", "error": error})


CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"messages": ["hi"]}, "messages", "an array of objects"),
        ({"tools": "x"}, "tools", "an array of objects, each 'function' an object"),
        (
            {"tools": [{"type": "function", "function": "f"}]},
            "tools",
            "an array of objects, each 'function' an object",
        ),
        ({"n": "x"}, "n", "an integer from 1 to 128"),
        ({"n": 10**9}, "n", "an integer from 1 to 128"),
    ],
)
def test_chat_fields_of_another_type_are_400_naming_them(body: dict[str, Any], field: str, says: str) -> None:
    assert post("/v1/chat/completions", {**CHAT, **body}) == openai_400(f"'{field}' must be {says}", field)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        ),
        (
            "/v1/messages",
            {**MESSAGE, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        ),
        (
            "/v1/messages",
            {**MESSAGE, "messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
        ),
        (
            "/v1/responses",
            {**RESPONSE, "input": [{"type": "message", "content": [{"type": "input_text", "text": 5}]}]},
        ),
    ],
)
def test_a_content_part_of_another_type_is_400_not_500(path: str, body: dict[str, Any]) -> None:
    status, answer = post(path, body)
    assert status == 400, answer
