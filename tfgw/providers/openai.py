"""OpenAI-compatible providers: OpenAI, Groq, Together, Mistral, DeepSeek, vLLM, Ollama, ...

The request goes on unchanged but for `model`, and the answer comes back unchanged: tools,
`response_format`, `n`, images in content and any field this module does not know pass through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import orjson

from tfgw.errors import ProviderError
from tfgw.providers.base import (
    Call,
    Chunk,
    NativeResponses,
    Provider,
    Reply,
    Stream,
    StreamBatch,
    wants_usage,
)
from tfgw.providers.http import HttpClient, PassThrough, SseStream, sse_data
from tfgw.providers.responses import ResponsesReader, from_response

__all__ = ["OpenAIProvider", "OpenAIStream"]


class OpenAIStream(SseStream):
    """OpenAI's own SSE frames, relayed as they come, byte for byte. The gateway always asks for
    the usage chunk (`stream_options.include_usage`) so that streamed calls carry token counts; it
    reaches the client only if the client asked for it too (else it is cut out of the bytes).
    A stream that ends before `data: [DONE]` (the connection closed or reset half-way) is the
    provider's failure, raised after the last whole event went on: an answer cut short must not
    pass for a whole one."""

    def __init__(self, client: HttpClient, resp: aiohttp.ClientResponse, client_wants_usage: bool) -> None:
        super().__init__(client, resp)
        self.client_wants_usage = client_wants_usage

    async def batches(self) -> AsyncIterator[StreamBatch]:
        """`reads()` and the events' parse in one generator: the hot path, a layer less a read."""
        done, hides_usage, loads = False, not self.client_wants_usage, orjson.loads
        read, whole = self.resp.content.readany, self.whole
        with self:  # the reads' failures mapped, the response released (`SseStream.__exit__`)
            while True:
                data = await read()  # b"" once the body has ended
                block = whole(data) if data else self.last()
                if block:  # an event ended in this read (or the body ended after one)
                    chunks: list[Chunk] = []
                    hidden: bytes | None = None
                    for event in sse_data(block):
                        if event == b"[DONE]":
                            done = True
                            continue
                        try:  # `parse`, without a call a chunk
                            chunk = loads(event)
                        except orjson.JSONDecodeError as exc:
                            raise self.invalid() from exc
                        if type(chunk) is not dict:
                            raise self.invalid()
                        if hides_usage and chunk.get("usage") and not chunk.get("choices"):
                            hidden = event
                        chunks.append(chunk)
                    yield (block if hidden is None else _without(block, hidden)), chunks
                if not data:
                    break
        if not done:
            raise ProviderError(f"provider {self.client.provider!r} ended the stream before [DONE]")


def _without(block: bytes, data: bytes) -> bytes:
    """`block` without the event whose data is `data`."""
    at = block.find(data)
    start = block.rfind(b"\n\n", 0, at) + 2 if at > 0 else 0
    start = 0 if start == 1 else start
    end = block.find(b"\n\n", at + len(data)) + 2
    return block[:start] + block[end:]


class OpenAIProvider(Provider, NativeResponses):
    def __init__(self, settings, client: HttpClient) -> None:
        super().__init__(settings)
        self.client = client
        self.headers: Mapping[str, str] = {
            "content-type": "application/json",
            **({"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}),
            **settings.headers,
        }

    def url(self, call: Call, endpoint: str) -> str:
        return f"{self.settings.base_url}/{endpoint}"

    def encode(self, call: Call) -> bytes:
        return orjson.dumps(self.upstream_body(call))

    async def chat(self, call: Call) -> Reply:
        _, body = await self.client.post(
            self.url(call, "chat/completions"), self.encode(call), self.headers, call.timeout
        )
        return Reply(body, self.client.decode(body))

    async def open_stream(self, call: Call) -> Stream:
        body = self.upstream_body(call)
        if self.settings.stream_usage:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        resp = await self.client.open(
            self.url(call, "chat/completions"), orjson.dumps(body), self.headers, call.timeout
        )
        return OpenAIStream(self.client, resp, wants_usage(call.body))

    async def embeddings(self, call: Call) -> Reply:
        _, body = await self.client.post(
            self.url(call, "embeddings"), self.encode(call), self.headers, call.timeout
        )
        return Reply(body, self.client.decode(body))

    async def responses(self, call: Call) -> Reply:
        url = self.url(call, "responses")
        _, body = await self.client.post(url, self.encode(call), self.headers, call.timeout)
        return Reply(body, from_response(self.client.decode(body)))

    async def open_responses(self, call: Call) -> Stream:
        url = self.url(call, "responses")
        resp = await self.client.open(url, self.encode(call), self.headers, call.timeout)
        return PassThrough(self.client, resp, ResponsesReader())
