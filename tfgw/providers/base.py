"""What every provider adapter is: OpenAI-shaped requests in, OpenAI-shaped answers out.

The gateway speaks OpenAI's wire format to clients. Each adapter translates that to its provider's
wire format and back, in exactly one module per format. Adapters do not know spans, routing or
Quart: they take a `Call` and return bytes the gateway can send as they are.

Failures are raised as `tfgw.errors.ProviderError` subclasses, so routing can decide on fallbacks:
a stream is opened with `open_stream()`, which raises before the first byte reaches the client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from tfgw.config import ProviderSettings, Timeouts

__all__ = [
    "Call",
    "Chunk",
    "NativeMessages",
    "NativeResponses",
    "Provider",
    "Reply",
    "Stream",
    "StreamBatch",
    "takes_responses",
    "wants_usage",
]

NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Call:
    """One request to one provider. `body` is the client's body, parsed (OpenAI-shaped, but for the
    native calls of `NativeMessages`); `model` is the provider's name for the model, which replaces
    the client's; `headers` are the client's headers the provider's API defines and wants passed on
    (`anthropic-version`, `anthropic-beta`), lower-case."""

    model: str
    body: dict[str, Any]
    timeout: Timeouts
    headers: Mapping[str, str] = field(default_factory=lambda: NO_HEADERS)


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole (non-streaming) answer: `body` is sent to the client as it is; `data` is the same
    answer parsed, for the gateway's own use (usage, ids)."""

    body: bytes
    data: dict[str, Any]


#: One piece of a streamed answer, for the gateway's own use: an OpenAI `chat.completion.chunk`,
#: or just the text of the first choice (a `str`): what a stream passed on in another API sends most,
#: its text events, read without building a chunk for each.
Chunk = dict[str, Any] | str

#: What one read of a streamed answer brought: the bytes to send to the client as they are
#: (SSE frames, whole events only; b"" when there is nothing to send, e.g. only the usage chunk the
#: gateway asked for and the client did not), and the `Chunk`s they carry, parsed once.
StreamBatch = tuple[bytes, list[Chunk]]


class Stream(ABC):
    """An open streaming answer: iterate for `StreamBatch`es, whose frames are OpenAI-style SSE
    (`data: {...}\\n\\n`, ending with `data: [DONE]\\n\\n`), and `aclose()` to release the upstream
    connection early.

    A batch is what arrived together: events the provider sent in one burst go to the client in
    one write (a write costs the server far more than the bytes in it), and one event at a time
    when the provider paces them."""

    def __aiter__(self) -> AsyncIterator[StreamBatch]:
        return self.batches()

    @abstractmethod
    def batches(self) -> AsyncIterator[StreamBatch]: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    def reported_usage(self) -> dict[str, Any] | None:
        """The OpenAI-shaped usage the provider has reported so far (Anthropic counts the input in
        its first event), for a stream that ends before its usage chunk: a client that went away."""
        return None


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


class NativeMessages(ABC):
    """A provider that takes Anthropic Messages calls as they are: the gateway passes `/v1/messages`
    bodies on and relays the answer's bytes untouched. `Reply.data` and a stream's chunks are still
    OpenAI-shaped (the chat-completions view the span is made of)."""

    @abstractmethod
    async def messages(self, call: Call) -> Reply: ...

    @abstractmethod
    async def open_messages(self, call: Call) -> Stream: ...

    @abstractmethod
    async def count_tokens(self, call: Call) -> Reply: ...


class NativeResponses(ABC):
    """A provider that can take OpenAI Responses calls as they are: when its settings say it serves
    the Responses API (`responses = true`), `/v1/responses` bodies are passed on and the answer's
    bytes relayed untouched; `Reply.data` and a stream's chunks are the chat-completions view."""

    @abstractmethod
    async def responses(self, call: Call) -> Reply: ...

    @abstractmethod
    async def open_responses(self, call: Call) -> Stream: ...


def takes_responses(provider: Provider) -> TypeGuard[NativeResponses]:
    """Whether `/v1/responses` is passed on to `provider` as it is (else translated)."""
    return isinstance(provider, NativeResponses) and provider.settings.responses
