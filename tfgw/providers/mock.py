"""The built-in demo provider: deterministic answers, no network, no key.

It is what `tfgw serve --demo` and the README quick start run, so it answers like OpenAI does:
the same JSON and SSE shapes, usage included, tool calls when tools are given.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tfgw.errors import BadRequestError
from tfgw.providers.base import Call, Provider, Reply, Stream, StreamBatch, wants_usage

__all__ = ["MockProvider", "answer_text"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _words(text: str) -> int:
    return len(text.split())


def answer_text(messages: list[dict[str, Any]]) -> str:
    last = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return (
        f"Hello from tfgw's demo provider. You said: {last}" if last else "Hello from tfgw's demo provider."
    )


def _usage(messages: list[dict[str, Any]], completion: str) -> dict[str, int]:
    prompt = sum(_words(_text(m.get("content"))) for m in messages) + 3 * len(messages)
    done = _words(completion)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _id(kind: str, body: dict[str, Any]) -> str:
    return f"{kind}-mock-" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


class MockStream(Stream):
    def __init__(self, chunks: list[tuple[dict[str, Any], bool]], delay: float) -> None:
        self.chunks = chunks
        self.delay = delay

    async def batches(self) -> AsyncIterator[StreamBatch]:
        for chunk, send in self.chunks:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield (b"data: " + orjson.dumps(chunk) + b"\n\n" if send else b""), [chunk]
        yield b"data: [DONE]\n\n", []

    async def aclose(self) -> None:
        self.chunks = []


class MockProvider(Provider):
    #: seconds between streamed chunks, so a stream looks like one in the terminal
    chunk_delay = 0.02

    def answer(self, call: Call) -> tuple[dict[str, Any], str]:
        messages = call.body.get("messages")
        if not isinstance(messages, list):
            raise BadRequestError("'messages' must be an array", param="messages")
        tools = call.body.get("tools")
        if tools and call.body.get("tool_choice") != "none":
            name = tools[0].get("function", {}).get("name", "tool")
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
                ],
            }
            return message, "tool_calls"
        return {"role": "assistant", "content": answer_text(messages), "refusal": None}, "stop"

    async def chat(self, call: Call) -> Reply:
        message, finish = self.answer(call)
        n = int(call.body.get("n") or 1)
        data = {
            "id": _id("chatcmpl", call.body),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)
            ],
            "usage": _usage(call.body["messages"], message["content"] or ""),
        }
        return Reply(orjson.dumps(data), data)

    async def open_stream(self, call: Call) -> Stream:
        message, finish = self.answer(call)
        base = {
            "id": _id("chatcmpl", call.body),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
        }
        want_usage = wants_usage(call.body)
        extra = {"usage": None} if want_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice], **extra}

        chunks = [chunk({"role": "assistant", "content": ""})]
        if message.get("tool_calls"):
            call0 = message["tool_calls"][0]
            chunks.append(chunk({"tool_calls": [{"index": 0, **call0}]}))
        else:
            words = message["content"].split(" ")
            chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        chunks.append(chunk({}, finish))
        usage = {**base, "choices": [], "usage": _usage(call.body["messages"], message["content"] or "")}
        # like OpenAI when the gateway asks for usage: the usage chunk is sent only if the client asked
        return MockStream([*((c, True) for c in chunks), (usage, want_usage)], self.chunk_delay)

    async def embeddings(self, call: Call) -> Reply:
        raw = call.body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs:
            raise BadRequestError("'input' must be a string or a non-empty array", param="input")
        dims = int(call.body.get("dimensions") or 16)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text), dims)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(_words(str(text)) for text in inputs)
        out = {"object": "list", "data": data, "model": call.model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
        return Reply(orjson.dumps(out), out)


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[i % 32] - 127.5) / 127.5 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]
