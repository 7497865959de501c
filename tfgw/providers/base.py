"""What every provider adapter is: OpenAI-shaped requests in, OpenAI-shaped answers out.

The gateway speaks OpenAI's wire format to clients. Each adapter translates that to its provider's
wire format and back, in exactly one module per format. Adapters do not know spans, routing or
Quart: they take a `Call` and return bytes the gateway can send as they are.

Failures are raised as `tfgw.errors.ProviderError` subclasses, so routing can decide on fallbacks:
a stream is opened with `open_stream()`, which raises before the first byte reaches the client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tfgw.config import ProviderSettings, Timeouts

__all__ = ["Call", "Provider", "Reply", "Stream", "StreamItem", "wants_usage"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request to one provider. `body` is the client's OpenAI-shaped body, parsed; `model` is the
    provider's name for the model, which replaces the client's."""

    model: str
    body: dict[str, Any]
    timeout: Timeouts


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole (non-streaming) answer: `body` is sent to the client as it is; `data` is the same
    answer parsed, for the gateway's own use (usage, ids)."""

    body: bytes
    data: dict[str, Any]


#: One step of a stream: the SSE frame to send to the client (None: nothing to send, e.g. the usage
#: chunk the gateway asked for and the client did not) and the OpenAI `chat.completion.chunk` it
#: carries, parsed, for the gateway's own use (None for `[DONE]`).
StreamItem = tuple[bytes | None, dict[str, Any] | None]


class Stream(ABC):
    """An open streaming answer: iterate for `StreamItem`s, whose frames are OpenAI-style SSE
    (`data: {...}\\n\\n`, ending with `data: [DONE]\\n\\n`), and `aclose()` to release the upstream
    connection early."""

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self.items()

    @abstractmethod
    def items(self) -> AsyncIterator[StreamItem]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client asked for the usage chunk at the end of a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class Provider(ABC):
    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.name = settings.name

    @abstractmethod
    async def chat(self, call: Call) -> Reply: ...

    @abstractmethod
    async def open_stream(self, call: Call) -> Stream: ...

    @abstractmethod
    async def embeddings(self, call: Call) -> Reply: ...

    def upstream_body(self, call: Call) -> dict[str, Any]:
        """The client's body with the provider's model name."""
        return {**call.body, "model": call.model}
