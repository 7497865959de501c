"""The traced routes on bare ASGI (`tfgw.gateway.fast.Front`) answer as the Quart app does.

`tfgw serve` runs `Front` in front of the app: the traced POST routes are served by the same
handlers without Quart's dispatch, everything else by the app. Each request here goes both ways,
in-process, and the two answers must be the same: status, headers (but the trace's own and the
date) and body, for errors of every kind and for answers of the mock provider.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tfgw.config import KeySettings, demo_settings
from tfgw.gateway import create_app
from tfgw.gateway.fast import Front
from tfgw.keys import hash_key

KEY = "tfgw-unit-test-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
#: what differs from one answer to the next whichever way it went
VARYING = ("x-tfgw-trace-id", "x-tfgw-overhead-ms", "date")

Answer = tuple[int, dict[str, str], bytes]


def settings() -> Any:
    server = replace(demo_settings().server, max_body_bytes=4096)
    return replace(demo_settings(), server=server, keys=(KeySettings("unit", hash_key(KEY)),))


async def through_front(front: Front, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    """One request to `front` as Hypercorn makes it: the body in one message, then a client that
    stays until the answer is whole."""
    pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    pairs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": pairs, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    stays = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await stays.wait()  # never set: the watch for the client going away is cancelled
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await front(scope, receive, send)
    start, *rest = sent
    assert start["type"] == "http.response.start" and not rest[-1].get("more_body", False)
    names = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], names, b"".join(m.get("body", b"") for m in rest)


def comparable(answer: Answer) -> Answer:
    status, headers, body = answer
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in VARYING}
    if kept.get("content-type") == "application/json":  # the mock's ids and times differ
        data = orjson.loads(body)
        for name in ("id", "created"):
            data.pop(name, None)
        body = orjson.dumps(data)
    return status, kept, body


def both(path: str, body: bytes, headers: dict[str, str]) -> tuple[Answer, Answer]:
    async def main() -> tuple[Answer, Answer]:
        app = create_app(settings())
        async with app.test_app() as test_app:
            response = await test_app.test_client().post(path, data=body, headers=headers)
            quart = (response.status_code, dict(response.headers), await response.get_data())
            front = await through_front(Front(app, app.extensions["tfgw"]), path, body, headers)
            return comparable(quart), comparable(front)

    return asyncio.run(main())


JSON_HEADERS = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", orjson.dumps(CHAT), AUTH | JSON_HEADERS),  # the mock's answer
        ("/v1/chat/completions", orjson.dumps(CHAT), JSON_HEADERS),  # no key: 401
        ("/v1/chat/completions", b"{not json", AUTH | JSON_HEADERS),  # 400
        ("/v1/chat/completions", orjson.dumps({"model": "demo"}), AUTH | JSON_HEADERS),  # no messages
        ("/v1/chat/completions", orjson.dumps({**CHAT, "model": "nope"}), AUTH | JSON_HEADERS),  # 404
        ("/v1/chat/completions", orjson.dumps({**CHAT, "pad": "x" * 5000}), AUTH | JSON_HEADERS),  # 413
        ("/v1/embeddings", orjson.dumps({"model": "demo-embed", "input": "hi"}), AUTH | JSON_HEADERS),
        ("/v1/embeddings", orjson.dumps({"model": "demo-embed"}), AUTH | JSON_HEADERS),  # no input
        ("/v1/messages", orjson.dumps({**CHAT, "max_tokens": 8}), AUTH | {"anthropic-version": "2023-06-01"}),
        ("/v1/messages", b"[]", AUTH | JSON_HEADERS),  # not an object: Anthropic's error shape
        ("/v1/messages/count_tokens", orjson.dumps(CHAT), AUTH | JSON_HEADERS),
        ("/v1/responses", orjson.dumps({"model": "demo", "input": "hi"}), AUTH | JSON_HEADERS),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_traced_route_answers_as_the_quart_app_does(
    path: str, body: bytes, headers: dict[str, str]
) -> None:
    quart, front = both(path, body, headers)

    assert front == quart


def test_a_stream_is_the_same_frames_either_way() -> None:
    body = orjson.dumps({**CHAT, "stream": True})
    quart, front = both("/v1/chat/completions", body, AUTH | JSON_HEADERS)

    def frames(answer: Answer) -> list[Any]:
        datas = [line[6:] for line in answer[2].split(b"\n") if line.startswith(b"data: ")]
        return [d if d == b"[DONE]" else orjson.loads(d)["choices"] for d in datas]

    # Quart's test client counts the body it gathered into a content-length; a server chunks it
    quart_headers = {k: v for k, v in quart[1].items() if k != "content-length"}
    assert (front[0], front[1]) == (quart[0], quart_headers)
    assert front[1] == {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    assert frames(front) == frames(quart) and frames(front)[-1] == b"[DONE]"
