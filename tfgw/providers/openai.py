"""OpenAI-compatible providers: OpenAI, Groq, Together, Mistral, DeepSeek, vLLM, Ollama, ...

The request goes on unchanged but for `model`, and the answer comes back unchanged: tools,
`response_format`, `n`, images in content and any field this module does not know pass through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson

from tfgw.providers.base import Call, Provider, Reply, Stream
from tfgw.providers.http import HttpClient, SseStream

__all__ = ["OpenAIProvider", "OpenAIStream"]


class OpenAIStream(SseStream):
    """OpenAI's own SSE frames, relayed as they come."""

    async def frames(self) -> AsyncIterator[bytes]:
        async for _, data in self.events():
            yield b"data: " + data + b"\n\n"


class OpenAIProvider(Provider):
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
        resp = await self.client.open(
            self.url(call, "chat/completions"), self.encode(call), self.headers, call.timeout
        )
        return OpenAIStream(self.client, resp)

    async def embeddings(self, call: Call) -> Reply:
        _, body = await self.client.post(
            self.url(call, "embeddings"), self.encode(call), self.headers, call.timeout
        )
        return Reply(body, self.client.decode(body))
