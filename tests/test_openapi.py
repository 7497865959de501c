"""The OpenAPI document: shipped in the package, served at /openapi.json, naming every route the app
has, and behind a gateway key when the config has keys."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from typing import Any

import httpx
import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from tests.e2e.gateway import Gateway
from tfgw.config import KeySettings, demo_settings
from tfgw.gateway import create_app
from tfgw.keys import hash_key

KEY = "tfgw-openapi-test-key-0123456789"


def document() -> dict[str, Any]:
    return orjson.loads(resources.files("tfgw.gateway").joinpath("openapi.json").read_bytes())


def run(settings: Any, test: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with create_app(settings).test_app() as test_app:
            await test(test_app.test_client())

    asyncio.run(main())


def test_the_document_names_every_route_of_the_app_with_its_methods() -> None:
    app = create_app(demo_settings())
    routes = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert documented == routes


def test_every_error_answer_is_in_its_apis_shape() -> None:
    openai, anthropic = "#/components/schemas/OpenAIError", "#/components/schemas/AnthropicError"
    shapes = {}
    for path, item in document()["paths"].items():
        for op in item.values():
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    shapes[path, status] = answer["content"]["application/json"]["schema"]["$ref"]
    assert {ref for (path, _), ref in shapes.items() if path.startswith("/v1/messages")} == {anthropic}
    assert {ref for (path, _), ref in shapes.items() if not path.startswith("/v1/messages")} == {openai}


def test_openapi_json_is_served_as_shipped() -> None:
    async def test(client: Client) -> None:
        answer = await client.get("/openapi.json")
        assert (answer.status_code, answer.content_type) == (200, "application/json")
        assert orjson.loads(await answer.get_data()) == document()

    run(demo_settings(), test)


def test_openapi_json_needs_a_key_when_there_are_keys() -> None:
    settings = replace(demo_settings(), keys=(KeySettings("unit", hash_key(KEY)),))

    async def test(client: Client) -> None:
        refused = await client.get("/openapi.json")
        assert (refused.status_code, await refused.get_json()) == (
            401,
            {
                "error": {
                    "message": "You didn't provide an API key. Send your tfgw key as"
                    " 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        )
        answer = await client.get("/openapi.json", headers={"x-api-key": KEY})
        assert answer.status_code == 200
        assert orjson.loads(await answer.get_data()) == document()

    run(settings, test)


def raw(port: int, request: bytes) -> bytes:
    """The whole answer to `request` on a fresh connection (the server closes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.e2e
def test_a_real_gateway_serves_the_document_and_its_server_refuses_bad_headers_before_the_app() -> None:
    """What docs/http.md excepts from the fuzzing: hypercorn answers these, with no JSON body."""
    with Gateway(None, "--demo") as gateway:
        answer = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
        assert (answer.status_code, answer.json()) == (200, document())
        # headers not ended after 16 KiB (h11's limit on what it holds incomplete): 431
        big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000
        status, _, rest = raw(gateway.port, big).partition(b"\r\n")
        assert (status, rest.rsplit(b"\r\n\r\n", 1)[1]) == (b"HTTP/1.1 431 ", b"")
        # a header name that is not a token, or NUL, CR or LF in a value: 400
        control = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx(bad): a\r\n\r\n"
        status, _, rest = raw(gateway.port, control).partition(b"\r\n")
        assert (status, rest.rsplit(b"\r\n\r\n", 1)[1]) == (b"HTTP/1.1 400 ", b"")
