"""What a caller without a key can reach, how keys are checked, and the caps on the headers a trace
records: the app through Quart's test client, with the built-in mock provider."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from tests.fakes.traces import Traces
from tfgw.config import KeySettings, Settings, demo_settings
from tfgw.errors import AuthenticationError
from tfgw.gateway import create_app
from tfgw.gateway.auth import KeyRing
from tfgw.keys import hash_key

KEY = "tfgw-security-test-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
#: a body each POST route takes, so that only the key decides its answer
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/v1/embeddings": {"model": "demo-embed", "input": "hi"},
    "/v1/responses": {"model": "demo", "input": "hi"},
    "/v1/messages": {"model": "demo", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
}
#: the probes a load balancer asks without a key (/readyz then says only its status)
OPEN = {"/healthz", "/readyz"}


def keyed() -> Settings:
    return replace(demo_settings(), keys=(KeySettings("sec", hash_key(KEY)),))


Test = Callable[[Quart, Client], Awaitable[None]]


def run(settings: Settings, test: Test, *, real: bool = False) -> Traces:
    """`test` against the app; the traces it made, unless `real` keeps the real trace log."""
    traces = Traces()

    async def main() -> None:
        app = create_app(settings)
        async with app.test_app() as test_app:
            state = app.extensions["tfgw"]
            if not real:
                state.trace_log.close()  # the real one goes: these tests read the traces themselves
                state.trace_log = traces
            await test(app, test_app.test_client())

    asyncio.run(main())
    return traces


def routes(app: Quart) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, HEAD and OPTIONS aside."""
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    )


async def ask(client: Client, method: str, path: str, headers: dict[str, str]) -> int:
    if method == "POST":
        return (await client.post(path, json=BODIES.get(path, {}), headers=headers)).status_code
    return (await client.get(path, headers=headers)).status_code


def test_every_route_but_the_probes_needs_a_key_when_keys_exist() -> None:
    """Enumerated from the app's own URL map: a route added later is held to it too."""
    seen: dict[str, dict[tuple[str, str], int]] = {}

    async def test(app: Quart, client: Client) -> None:
        guarded = [route for route in routes(app) if route[1] not in OPEN]
        assert len(guarded) >= 7, guarded
        wrong = {"authorization": "Bearer tfgw-not-a-configured-key-0123456789"}
        seen["none"] = {route: await ask(client, *route, {}) for route in guarded}
        seen["wrong"] = {route: await ask(client, *route, wrong) for route in guarded}
        bad = {"x-api-key": "nope"}
        seen["x-api-key wrong"] = {route: await ask(client, *route, bad) for route in guarded}
        seen["key"] = {route: await ask(client, *route, AUTH) for route in guarded}

    run(keyed(), test)
    for how in ("none", "wrong", "x-api-key wrong"):
        assert seen[how] == dict.fromkeys(seen[how], 401), how
    assert 401 not in seen["key"].values(), seen["key"]


def test_the_stored_hash_is_not_a_key() -> None:
    """Only hashes are held (`KeyRing.by_hash`); the hash itself, sent as a key, is refused."""
    ring = KeyRing([KeySettings("sec", hash_key(KEY))])
    assert list(ring.by_hash) == [hash_key(KEY)]
    assert ring.authenticate(f"Bearer {KEY}") == KeySettings("sec", hash_key(KEY))
    with pytest.raises(AuthenticationError):
        ring.authenticate(f"Bearer {hash_key(KEY)}")
    with pytest.raises(AuthenticationError):
        ring.authenticate(None, api_key=KEY[:-1])


def test_readyz_shows_only_its_status_without_a_key_when_keys_exist() -> None:
    answers: dict[str, tuple[int, Any]] = {}

    async def test(app: Quart, client: Client) -> None:
        for how, headers in {"none": {}, "key": AUTH, "x-api-key": {"x-api-key": KEY}}.items():
            response = await client.get("/readyz", headers=headers)
            answers[how] = (response.status_code, await response.get_json())
        wrong = await client.get("/readyz", headers={"authorization": "Bearer tfgw-wrong-0123456789abc"})
        answers["wrong"] = (wrong.status_code, (await wrong.get_json())["error"]["code"])

    run(keyed(), test, real=True)
    details = {
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
    }
    assert answers == {
        "none": (200, {"status": "ready"}),
        "key": (200, details),
        "x-api-key": (200, details),
        "wrong": (401, "invalid_api_key"),
    }


@pytest.mark.parametrize(
    ("header", "cap", "attribute"),
    [
        ("x-tfgw-session-id", 256, "session.id"),
        ("x-tfgw-user-id", 256, "user.id"),
        ("x-tfgw-metadata", 4096, "metadata"),
    ],
)
def test_a_header_recorded_on_the_trace_is_capped(header: str, cap: int, attribute: str) -> None:
    def value(length: int) -> str:
        if header != "x-tfgw-metadata":
            return "s" * length
        return orjson.dumps({"k": "v" * (length - 8)}).decode()  # {"k":""} is 8 characters

    answers: list[tuple[int, Any]] = []

    async def test(app: Quart, client: Client) -> None:
        for length in (cap, cap + 1):
            response = await client.post("/v1/chat/completions", json=CHAT, headers={header: value(length)})
            answers.append((response.status_code, (await response.get_json()).get("error")))
        anthropic = await client.post(
            "/v1/messages", json=BODIES["/v1/messages"], headers={header: value(cap + 1)}
        )
        answers.append((anthropic.status_code, await anthropic.get_json()))

    traces = run(demo_settings(), test)
    message = f"The {header} header is longer than {cap} characters."
    assert answers == [
        (200, None),
        (400, {"message": message, "type": "invalid_request_error", "param": header, "code": None}),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
    ]
    kept, *refused = (trace.root.attributes for trace in traces.traces)
    assert kept[attribute] == value(cap)
    assert [attribute in attributes for attributes in refused] == [False, False]
    assert [attributes["http.response.status_code"] for attributes in refused] == [400, 400]
