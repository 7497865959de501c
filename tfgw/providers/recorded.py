"""The `recorded` provider: answers served from the LLM spans of trace files, no network.

`[providers.NAME] kind = "recorded"` with `traces = [...]` answers chat completions (so
`/v1/messages` and `/v1/responses` too, which the gateway translates to chat for it) and
embeddings when their vectors were recorded, from the index `tfgw.providers.recordings` builds at
start. A streamed request gets the recorded answer as `chat.completion.chunk`s the gateway relays
in the route's own events; `pace = "recorded"` waits the recorded time to the first chunk and
between chunks (for a whole answer, the recorded time to the answer).

A request with no recording (`on_miss = "error"`) is a 400 `recording_not_found` in the route's
own error shape, naming the closest recording and the first field that differs; `on_miss =
"forward:NAME"` calls the provider NAME instead.

`tfgw serve --recorded PATH...` is `recorded_settings`: every configured model's targets answered
by one `recorded` provider over those paths (with no config: one model per name recorded).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from tfgw.config import ModelSettings, ProviderSettings, Settings, Target
from tfgw.errors import BadRequestError
from tfgw.providers.base import Call, Provider, Reply, Stream, StreamBatch, wants_usage
from tfgw.providers.recordings import (
    CHAT,
    EMBEDDINGS,
    LOADED,
    MESSAGE,
    RESPONSE,
    Recording,
    Recordings,
    normalise,
)

__all__ = [
    "PROVIDER_NAME",
    "RecordedProvider",
    "RecordedStream",
    "RecordingNotFoundError",
    "recorded_settings",
    "stream_chunks",
    "unusable_files",
]

#: the provider `tfgw serve --recorded` adds
PROVIDER_NAME: Final = "recorded"
_WORDS = re.compile(r"\s*\S+(?:\s+$)?|\s+")
#: the forms of recorded answer a chat call is served from
ANSWERS: Final = (CHAT, MESSAGE, RESPONSE)


class RecordingNotFoundError(BadRequestError):
    code = "recording_not_found"


class RecordedProvider(Provider):
    def __init__(
        self,
        settings: ProviderSettings,
        recordings: Recordings | None = None,
        forward: Provider | None = None,
    ) -> None:
        super().__init__(settings)
        self.recordings = recordings if recordings is not None else LOADED.get(settings.traces)
        self.forward = forward
        self.paced = settings.pace == "recorded"

    def _find(self, call: Call, stream: bool, forms: tuple[int, ...]) -> Recording | None:
        """The recording of `call`; None when it is to be forwarded; a miss raises."""
        asked = normalise(call.body)
        found = self.recordings.find(asked, stream)
        if found is not None and found.form in forms:
            return found
        if self.forward is not None:
            return None
        raise self._miss(asked, embeddings=EMBEDDINGS in forms)

    def _miss(self, asked: Mapping[str, Any], *, embeddings: bool) -> RecordingNotFoundError:
        if embeddings and self.recordings.no_vectors:
            return RecordingNotFoundError(
                f"no recorded answer for this request: the recordings of provider {self.name!r} hold"
                f" {self.recordings.no_vectors} embeddings calls without their vectors (tfgw records"
                " the inputs, not the vectors)",
                param="input",
            )
        closest = self.recordings.closest(asked)
        if closest is None:
            return RecordingNotFoundError(
                f"no recorded answer for this request: provider {self.name!r} has no recordings"
            )
        where, path = closest
        if path is None:
            return RecordingNotFoundError(
                f"no recorded answer for this request; the closest recording ({where}) cannot be read"
                " again to say where it differs"
            )
        return RecordingNotFoundError(
            f"no recorded answer for this request; the closest recording ({where}) differs at {path}",
            param=path,
        )

    async def chat(self, call: Call) -> Reply:
        found = self._find(call, False, ANSWERS)
        if found is None:
            assert self.forward is not None
            return await self.forward.chat(call)
        if self.paced and found.ttft is not None:  # a recorded stream: until its last chunk
            chunks = max(0, (found.chunks or 1) - 1) if found.stream else 0
            await asyncio.sleep(found.ttft + (found.spacing or 0.0) * chunks)
        data = found.completion()
        body = found.answer.encode() if found.form == CHAT else orjson.dumps(data)
        return Reply(body, data)

    async def open_stream(self, call: Call) -> Stream:
        opened = time.monotonic()
        found = self._find(call, True, ANSWERS)
        if found is None:
            assert self.forward is not None
            return await self.forward.open_stream(call)
        chunks = stream_chunks(found, wants_usage(call.body))
        if not self.paced or found.ttft is None:
            return RecordedStream(chunks)
        return RecordedStream(chunks, opened + found.ttft, found.spacing or 0.0)

    async def embeddings(self, call: Call) -> Reply:
        found = self._find(call, False, (EMBEDDINGS,))
        if found is None:
            assert self.forward is not None
            return await self.forward.embeddings(call)
        return Reply(found.answer.encode(), found.completion())


class RecordedStream(Stream):
    """The chunks of a recorded answer: all in one write, or at the recorded pace (the first at
    `first_at`, on the monotonic clock, then one every `spacing` seconds)."""

    def __init__(
        self, chunks: list[tuple[dict[str, Any], bool]], first_at: float | None = None, spacing: float = 0.0
    ) -> None:
        self.chunks = chunks
        self.first_at = first_at
        self.spacing = spacing

    async def batches(self) -> AsyncIterator[StreamBatch]:
        frames = [b"data: " + orjson.dumps(c) + b"\n\n" if send else b"" for c, send in self.chunks]
        if self.first_at is None:
            yield b"".join(frames) + b"data: [DONE]\n\n", [c for c, _ in self.chunks]
            return
        wait = self.first_at - time.monotonic()
        for i, (chunk, _) in enumerate(self.chunks):
            if wait > 0:
                await asyncio.sleep(wait)
            yield frames[i], [chunk]
            wait = self.spacing
        yield b"data: [DONE]\n\n", []

    async def aclose(self) -> None:
        self.chunks = []


def stream_chunks(recording: Recording, want_usage: bool) -> list[tuple[dict[str, Any], bool]]:
    """A recorded answer as OpenAI `chat.completion.chunk`s, each with whether it is sent: the
    usage chunk only when the client asked for it (as OpenAI does when the gateway asks for it).
    The text of a choice is cut at word boundaries into as many pieces as the recording streamed
    (every word its own piece when that is not known)."""
    data = recording.completion()
    base = {"id": data.get("id"), "object": "chat.completion.chunk",
            "created": data.get("created") or int(time.time()), "model": data.get("model")}  # fmt: skip
    extra = {"usage": None} if want_usage else {}
    choices = data.get("choices") or []
    usage = data.get("usage")
    pieces = None
    if recording.chunks:
        pieces = max(1, (recording.chunks - (usage is not None)) // max(1, len(choices)) - 2)

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    out: list[tuple[dict[str, Any], bool]] = []
    for choice in choices:
        index, message = choice.get("index", 0), choice.get("message") or {}
        out.append((chunk(index, {"role": message.get("role") or "assistant", "content": ""}), True))
        out += [(chunk(index, {"content": text}), True) for text in _pieces(message.get("content"), pieces)]
        for t, call in enumerate(message.get("tool_calls") or ()):
            out.append((chunk(index, {"tool_calls": [{"index": t, **call}]}), True))
        out.append((chunk(index, {}, choice.get("finish_reason")), True))
    if usage is not None:
        out.append(({**base, "choices": [], "usage": usage}, want_usage))
    return out


def _pieces(text: Any, count: int | None) -> list[str]:
    """`text` cut at word boundaries into `count` pieces (into words when None)."""
    if not isinstance(text, str) or not text:
        return []
    words = _WORDS.findall(text)
    if count is None or count >= len(words):
        return words
    size, extra = divmod(len(words), count)
    out, at = [], 0
    for i in range(count):
        step = size + (i < extra)
        out.append("".join(words[at : at + step]))
        at += step
    return out


# --------------------------------------------------------------------------------------------------
# tfgw serve --recorded


def recorded_settings(settings: Settings | None, paths: Sequence[str | Path]) -> Settings:
    """What `tfgw serve --recorded PATH...` serves: `settings` with every model's targets answered
    by one `recorded` provider over `paths` (made absolute), not reloaded while it serves; with no
    settings, one model for each name the recordings answered."""
    traces = tuple(str(Path(p).expanduser().resolve()) for p in paths)
    provider = ProviderSettings(name=PROVIDER_NAME, kind="recorded", base_url="", traces=traces)
    if settings is None:
        recordings = LOADED.get(traces)
        models = {
            name: ModelSettings(name=name, targets=(Target(PROVIDER_NAME, model),))
            for name, model in sorted(recordings.models.items())
        }
        return Settings(
            providers=MappingProxyType({PROVIDER_NAME: provider}), models=MappingProxyType(models)
        )
    providers = {**settings.providers, PROVIDER_NAME: provider}
    models = {
        name: dataclasses.replace(
            model, targets=tuple(dataclasses.replace(t, provider=PROVIDER_NAME) for t in model.targets)
        )
        for name, model in settings.models.items()
    }
    server = dataclasses.replace(settings.server, reload=False)
    return dataclasses.replace(
        settings,
        path=None,
        server=server,
        providers=MappingProxyType(providers),
        models=MappingProxyType(models),
    )


def unusable_files(recordings: Recordings) -> list[str]:
    """One line for each file whose LLM spans cannot serve answers (no request data recorded)."""
    return [
        f"{file}: written with exclude_request_data: its {count} LLM span{'s' * (count > 1)} hold no"
        " request or answer, so they cannot serve answers"
        for file, count in recordings.excluded.items()
    ]
