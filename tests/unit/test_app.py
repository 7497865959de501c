"""The Quart app through its test client, with the built-in mock provider: auth, limits, errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from tests.fakes.traces import Traces
from tfgw.config import KeySettings, demo_settings
from tfgw.errors import (
    AuthenticationError,
    BadRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TfgwError,
)
from tfgw.gateway import create_app
from tfgw.keys import hash_key
from tfgw.tracing.exports import Exports

KEY = "tfgw-unit-test-key-0123456789"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def run(settings: Any, test: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        app = create_app(settings)
        async with app.test_app() as test_app:
            await test(test_app.test_client())

    asyncio.run(main())


def with_key(rpm: int | None = None, tpm: int | None = None) -> Any:
    return replace(demo_settings(), keys=(KeySettings("unit", hash_key(KEY), rpm=rpm, tpm=tpm),))


def test_requests_over_rpm_get_429_with_retry_after() -> None:
    async def test(client: Client) -> None:
        auth = {"authorization": f"Bearer {KEY}"}
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth)).status_code == 200
        limited = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert limited.status_code == 429
        # counted in one-second buckets over a minute: the first request leaves the window 59-60 s on
        assert 59 <= int(limited.headers["retry-after"]) <= 60
        assert await limited.get_json() == {
            "error": {
                "message": "Rate limit reached for key 'unit': 2 requests per minute.",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }

    run(with_key(rpm=2), test)


def test_tokens_over_tpm_get_429() -> None:
    async def test(client: Client) -> None:
        auth = {"authorization": f"Bearer {KEY}"}
        # the demo answer to CHAT costs 4 + 8 = 12 tokens; a 10-token budget is spent after one call
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth)).status_code == 200
        limited = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert limited.status_code == 429
        assert (await limited.get_json())["error"]["message"] == (
            "Rate limit reached for key 'unit': 10 tokens per minute (12 counted in the last minute,"
            " 0 estimated for this request)."
        )

    run(with_key(tpm=10), test)


def test_a_request_that_ends_without_an_answer_gives_its_token_estimate_back() -> None:
    async def test(client: Client) -> None:
        auth = {"authorization": f"Bearer {KEY}"}
        # estimated at 25 tokens (100 characters): admitted into the empty window, then refused at
        # routing; settled with no tokens when its trace ends, so the window is empty again
        unknown = {"model": "nope", "messages": [{"role": "user", "content": "x" * 100}]}
        assert (await client.post("/v1/chat/completions", json=unknown, headers=auth)).status_code == 404
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth)).status_code == 200

    run(with_key(tpm=10), test)


def test_health_and_readiness() -> None:
    async def test(client: Client) -> None:
        health = await client.get("/healthz")
        assert (health.status_code, await health.get_json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert (ready.status_code, await ready.get_json()) == (
            200,
            {
                "status": "ready",
                "version": "0.1.0",
                "models": 2,
                "worker": os.getpid(),
                "tracing": {
                    "written": 0,
                    "dropped": 0,
                    "write_errors": 0,
                    "encode_errors": 0,
                    "last_error": None,
                    "segment": None,
                },
            },
        )

    run(demo_settings(), test)


def test_a_stream_through_the_mock_provider_is_well_formed_sse() -> None:
    async def test(client: Client) -> None:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        frames = (await response.get_data()).split(b"\n\n")
        assert frames[-2:] == [b"data: [DONE]", b""]
        chunks = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "Hello from tfgw's demo provider. You said: hi"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    run(demo_settings(), test)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (BadRequestError("bad", param="messages"), 400, {"message": "bad", "type": "invalid_request_error",
                                                         "param": "messages", "code": None}),
        (AuthenticationError("who"), 401, {"message": "who", "type": "invalid_request_error", "param": None,
                                           "code": "invalid_api_key"}),
        (ModelNotFoundError("nope"), 404, {"message": "nope", "type": "invalid_request_error", "param": None,
                                           "code": "model_not_found"}),
        (PayloadTooLargeError("big"), 413, {"message": "big", "type": "invalid_request_error", "param": None,
                                            "code": "request_too_large"}),
        (RateLimitError("slow"), 429, {"message": "slow", "type": "rate_limit_error", "param": None,
                                       "code": "rate_limit_exceeded"}),
        (ProviderError("down"), 502, {"message": "down", "type": "api_error", "param": None,
                                      "code": "provider_error"}),
        (ProviderTimeoutError("late"), 504, {"message": "late", "type": "api_error", "param": None,
                                             "code": "provider_timeout"}),
        (TfgwError("oops"), 500, {"message": "oops", "type": "server_error", "param": None, "code": None}),
    ],
)  # fmt: skip
def test_every_error_has_openai_shape_and_status(error: TfgwError, status: int, body: dict[str, Any]) -> None:
    assert error.status == status
    assert orjson.loads(error.body()) == {"error": body}


@pytest.mark.parametrize(
    ("path", "body", "message", "param"),
    [
        ("/v1/chat/completions", {"model": "demo"}, "'messages' must be a non-empty array", "messages"),
        ("/v1/embeddings", {"model": "demo-embed"}, "'input' is required", "input"),
    ],
)
def test_a_request_refused_as_invalid_still_records_the_model_it_named(
    path: str, body: dict[str, Any], message: str, param: str
) -> None:
    traces = Traces()

    async def main() -> None:
        app = create_app(demo_settings())
        async with app.test_app() as test_app:
            state = app.extensions["tfgw"]
            state.trace_log.close()  # the real one goes: this test reads the traces themselves
            state.trace_log = traces
            response = await test_app.test_client().post(path, json=body)
            error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
            assert (response.status_code, await response.get_json()) == (400, {"error": error})

    asyncio.run(main())
    (trace,) = traces.traces
    assert [span.name for span in trace.spans] == [f"POST {path}", "auth"]
    assert trace.root.attributes == {
        "http.request.method": "POST",
        "url.path": path,
        "tfgw.model.requested": body["model"],
        "http.response.status_code": 400,
        "error.type": "BadRequestError",
    }


def test_readyz_shows_the_export_status_it_is_given() -> None:
    """The gateway knows the export targets only through the `Exports` that `tfgw serve` hands it."""
    status = {"phoenix": {"state": "not running", "reason": "starting: no heartbeat from its exporter yet"}}

    async def main() -> None:
        app = create_app(demo_settings(), exports=Exports(("phoenix",), lambda: status))
        async with app.test_app() as test_app:
            ready = await test_app.test_client().get("/readyz")
            assert (await ready.get_json())["export"] == status
            assert app.extensions["tfgw"].trace_log.targets == ("phoenix",)

    asyncio.run(main())


def test_an_embeddings_body_that_says_stream_gets_a_whole_answer() -> None:
    async def test(client: Client) -> None:
        answer = await client.post(
            "/v1/embeddings", json={"model": "demo-embed", "input": "hi", "stream": True}
        )
        assert (answer.status_code, answer.content_type) == (200, "application/json")
        assert len((await answer.get_json())["data"][0]["embedding"]) == 16

    run(demo_settings(), test)
