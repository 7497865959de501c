"""A chat-completions stream read as another API's events: the one relay loop every translated
stream runs (`tfgw.formats.messages.MessagesStream`, `tfgw.formats.responses.ResponsesStream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from tfgw.errors import ProviderError
from tfgw.providers.base import Chunk, Stream, StreamBatch

__all__ = ["EventWriter", "TranslatedStream"]


class EventWriter(Protocol):
    """Writes one API's events for the chunks of a chat-completions stream."""

    @property
    def complete(self) -> bool: ...  # the answer's end and its usage came: only `[DONE]` is left

    def feed(self, chunk: Chunk) -> bytes: ...  # the events for one chunk
    def finish(self) -> bytes: ...  # the closing events, the API's terminal one last
    def failed(self, exc: ProviderError) -> bytes | None: ...  # a terminal failure event, if the API has one


class TranslatedStream(Stream):
    """Each batch's chunks become the `events` sent in its place; the chunks themselves go on, for
    the span. The closing events go out with the usage chunk's batch when the provider sends one
    (one write fewer), else at the end. A provider failure after the first event ends the stream
    with the API's own failure event when it has one (the failure is then `relayed`), else it is
    raised for the route's wire to tell; once the closing events are out, the answer is whole and
    a late failure is no news."""

    def __init__(self, chat: Stream, events: EventWriter) -> None:
        self.chat = chat
        self.events = events

    async def batches(self) -> AsyncIterator[StreamBatch]:
        events = self.events
        done = False
        try:
            async for _, chunks in self.chat:
                if done:  # `[DONE]`, or anything a provider sends after its usage chunk
                    yield b"", chunks
                    continue
                frames = b"".join([events.feed(chunk) for chunk in chunks])
                if events.complete:
                    frames, done = frames + events.finish(), True
                yield frames, chunks
        except ProviderError as exc:
            if done:
                return
            if (failed := events.failed(exc)) is not None:
                yield failed, []
                exc.relayed = True
            raise
        if not done:
            yield events.finish(), []

    async def aclose(self) -> None:
        await self.chat.aclose()

    def reported_usage(self) -> dict[str, Any] | None:
        return self.chat.reported_usage()
