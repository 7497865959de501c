"""The `recorded` provider: the index of recorded calls (tfgw.providers.recordings) and answers
served from it (tfgw.providers.recorded), recorded and replayed through the app's test client with
the built-in mock provider."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client
from typer.testing import CliRunner

from tfgw.cli import app as cli
from tfgw.config import ProviderSettings, Settings, TracingSettings, demo_settings
from tfgw.gateway import create_app
from tfgw.providers.base import Call
from tfgw.providers.mock import MockProvider
from tfgw.providers.recorded import (
    RecordedProvider,
    RecordedStream,
    RecordingNotFoundError,
    recorded_settings,
    stream_chunks,
    unusable_files,
)
from tfgw.providers.recordings import CHAT, Loaded, Recording, first_difference, load, normalise
from tfgw.tracing import otlp

CHAT_BODY = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
MESSAGES_BODY = {"model": "demo", "max_tokens": 64, "messages": [{"role": "user", "content": "hi claude"}]}
RESPONSES_BODY = {"model": "demo", "input": "hi responses"}


def run(settings: Settings, test: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        app = create_app(settings)
        async with app.test_app() as test_app:
            await test(test_app.test_client())

    asyncio.run(main())


def traced(directory: Path, settings: Settings | None = None, **tracing: Any) -> Settings:
    base = settings or demo_settings()
    return replace(base, tracing=TracingSettings(dir=str(directory), **tracing))


def sse_data(raw: bytes) -> list[Any]:
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(orjson.loads(line[6:]))
    return out


def folded(chunks: list[dict[str, Any]]) -> tuple[str, list[str | None], Any]:
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    return text, [f for f in finishes if f], usage


async def record_everything(client: Client) -> dict[str, Any]:
    """One of each call, answered by the mock provider: what the replay must give back."""
    out: dict[str, Any] = {}
    out["json"] = await (await client.post("/v1/chat/completions", json=CHAT_BODY)).get_json()
    tools = {**CHAT_BODY, "tools": TOOLS}
    out["tools"] = await (await client.post("/v1/chat/completions", json=tools)).get_json()
    stream = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    out["stream"] = sse_data(await (await client.post("/v1/chat/completions", json=stream)).get_data())
    out["messages"] = await (await client.post("/v1/messages", json=MESSAGES_BODY)).get_json()
    out["responses"] = await (await client.post("/v1/responses", json=RESPONSES_BODY)).get_json()
    return out


def record(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    directory = tmp_path / "recorded"
    answers: dict[str, Any] = {}

    async def test(client: Client) -> None:
        answers.update(await record_everything(client))

    run(traced(directory), test)
    return directory, answers


def replaying(tmp_path: Path, directory: Path, **provider: Any) -> Settings:
    settings = recorded_settings(traced(tmp_path / "replayed"), [directory])
    rec = replace(settings.providers["recorded"], **provider)
    return replace(settings, providers={**settings.providers, "recorded": rec})


def test_every_recorded_call_is_answered_again_as_it_was(tmp_path: Path) -> None:
    directory, recorded = record(tmp_path)
    replayed: dict[str, Any] = {}

    async def test(client: Client) -> None:
        replayed.update(await record_everything(client))

    run(replaying(tmp_path, directory), test)
    assert replayed["json"] == recorded["json"]
    assert replayed["tools"] == recorded["tools"]
    assert replayed["messages"] == recorded["messages"]
    assert replayed["responses"] == {**recorded["responses"], "created_at": replayed["responses"]["created_at"]}
    assert folded(replayed["stream"]) == folded(recorded["stream"])
    assert folded(recorded["stream"])[1] == ["stop"]
