"""The Anthropic Messages API adapter: the one place its wire format is translated.

Contract, in both directions:

- requests: an OpenAI chat-completions body becomes a `POST /v1/messages` body
  (`to_messages_request`); system and developer messages move to the top-level `system`, tool
  calls and tool results become `tool_use` and `tool_result` blocks, and consecutive messages of
  one role are merged, since Anthropic requires user and assistant turns to alternate;
- answers: a message becomes a `chat.completion` (`from_messages_response`), and the SSE events of
  a streamed message become `chat.completion.chunk` objects (`StreamTranslator`);
- usage: `prompt_tokens` counts every input token, cached or not (input + cache creation + cache
  read), and `prompt_tokens_details.cached_tokens` is the cache read, as OpenInference counts them;
- errors: Anthropic error bodies become OpenAI-shaped error bodies (`to_error_body`).

`/v1/messages` calls are not translated: `messages()`, `open_messages()` and `count_tokens()` pass
the client's body on (with the provider's model name) and its answer back byte for byte; the
translations above only give the span its chat-completions view of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from tfgw.config import ProviderSettings
from tfgw.errors import BadRequestError, ProviderError, UpstreamStatusError
from tfgw.providers.base import Call, Chunk, NativeMessages, Provider, Reply, StreamBatch, wants_usage
from tfgw.providers.http import JSON_STRING, HttpClient, PassThrough, SseStream, named_events, sse_events

__all__ = [
    "AnthropicProvider",
    "StreamTranslator",
    "from_messages_response",
    "to_error_body",
    "to_messages_request",
]

Json = dict[str, Any]

DEFAULT_API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI does not

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}

#: how Anthropic's `content_block_delta` events begin (`StreamTranslator.text_of`)
TEXT_DELTA_START = b'{"type":"content_block_delta"'
#: how a text block starts, empty, as Anthropic sends it: nothing for the span
TEXT_BLOCK_START = b'{"type":"content_block_start"'
TEXT_BLOCK_EMPTY = b'"content_block":{"type":"text","text":""}}'
#: a text delta as Anthropic sends it, byte for byte but for its index and text: what a stream passed
#: on reads as its text alone (`StreamTranslator.text_events`); any other shape goes to `text_of`
TEXT_DELTA_EVENT = (
    rb'event: content_block_delta\ndata: \{"type":"content_block_delta","index":(?:0|[1-9][0-9]*),'
    rb'"delta":\{"type":"text_delta","text":(' + JSON_STRING + rb")\}\}\n\n"
)
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)


# --------------------------------------------------------------------------------------------------
# Requests


def to_messages_request(body: Mapping[str, Any], model: str) -> Json:
    """An OpenAI chat-completions request body as an Anthropic Messages request body.

    Kept: messages, tools, tool_choice, parallel_tool_calls, max_tokens (or max_completion_tokens,
    4096 when neither is given), temperature, top_p, stop, stream and user. Temperature is passed
    as it is, so values above 1 are rejected by Anthropic.

    Dropped without an error, as Anthropic has no equivalent: response_format (a json_schema too: the
    model is not held to the schema), logprobs, top_logprobs, presence_penalty, frequency_penalty,
    logit_bias, seed, stream_options, and any other key. tool_choice is dropped when there are no
    tools. `n` above 1 is a `BadRequestError`.
    """
    if (body.get("n") or 1) > 1:
        raise BadRequestError("n > 1 is not supported by anthropic provider", param="n")
    system, messages = _messages(body.get("messages") or [])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: Json = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        out["system"] = system
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if tools := body.get("tools"):
        out["tools"] = [_tool(tool) for tool in tools]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    return out


def _messages(items: list[Json]) -> tuple[str, list[Json]]:
    """Split OpenAI messages into Anthropic's `system` text and its alternating `messages`."""
    system: list[str] = []
    messages: list[Json] = []
    for item in items:
        role = item.get("role")
        if role in ("system", "developer"):
            system.append(_text(item.get("content")))
        elif role == "user":
            _append(messages, "user", _content(item.get("content")))
        elif role == "assistant":
            blocks = _as_blocks(_content(item.get("content")))
            blocks += [_tool_use(call) for call in item.get("tool_calls") or []]
            if blocks:
                _append(messages, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": item.get("tool_call_id"),
                "content": _content(item.get("content")),
            }
            _append(messages, "user", [result])
        else:
            raise BadRequestError(f"message role {role!r} is not supported by anthropic provider")
    return "\n\n".join(s for s in system if s), messages


def _append(messages: list[Json], role: str, content: str | list[Json]) -> None:
    """Add a turn, merging it into the previous one when that has the same role."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"] = _as_blocks(messages[-1]["content"]) + _as_blocks(content)
    else:
        messages.append({"role": role, "content": content})


def _as_blocks(content: str | list[Json]) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _text(content: str | list[Json] | None) -> str:
    """Flatten message content (a string or a list of text parts) to one string."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n\n".join(part["text"] for part in content if part.get("type") == "text")


def _content(content: str | list[Json] | None) -> str | list[Json]:
    """OpenAI message content as Anthropic content: a string stays a string, parts become blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    blocks: list[Json] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}))
        else:
            raise BadRequestError(
                f"content part type {kind!r} is not supported by anthropic provider", param="messages"
            )
    return blocks


def _image(image_url: Json) -> Json:
    url = image_url.get("url") or ""
    if match := _DATA_URL.fullmatch(url):
        return {"type": "image", "source": {"type": "base64", "media_type": match[1], "data": match[2]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise BadRequestError("image_url must be a base64 data URL or an http(s) URL", param="messages")


def _tool_use(call: Json) -> Json:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("tool call arguments must be a JSON object", param="messages") from exc
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}


def _tool(tool: Json) -> Json:
    if tool.get("type") != "function":
        raise BadRequestError(
            f"tool type {tool.get('type')!r} is not supported by anthropic provider", param="tools"
        )
    function = tool.get("function") or {}
    out: Json = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: str | Json | None, parallel: bool | None) -> Json | None:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise BadRequestError(
                f"tool_choice type {choice.get('type')!r} is not supported by anthropic provider",
                param="tool_choice",
            )
        mapped: Json | None = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice is None:
        mapped = None
    elif choice in TOOL_CHOICES:
        mapped = dict(TOOL_CHOICES[choice])
    else:
        raise BadRequestError(f"tool_choice {choice!r} is not supported", param="tool_choice")
    if parallel is False and (mapped is None or mapped["type"] != "none"):
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    return mapped


# --------------------------------------------------------------------------------------------------
# Answers


def from_messages_response(
    data: Mapping[str, Any], model_requested: str, *, created: int | None = None
) -> Json:
    """An Anthropic message as an OpenAI `chat.completion`. Thinking blocks are left out."""
    texts: list[str] = []
    tool_calls: list[Json] = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: Json = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": data.get("model") or model_requested,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(data.get("stop_reason")),
            }
        ],
        "usage": _usage(data.get("usage") or {}),
    }


def _finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def _usage(usage: Mapping[str, Any]) -> Json:
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cached
    completion = usage.get("output_tokens") or 0
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    if written := usage.get("cache_creation_input_tokens"):
        # not in OpenAI's shape; the name LiteLLM and others use, so clients and traces see cache writes
        out["cache_creation_input_tokens"] = written
    return out


class StreamTranslator:
    """Turns the events of one streamed Anthropic message into OpenAI `chat.completion.chunk`s (the
    `tfgw.providers.http.EventReader` of a passed-on Messages stream, too)."""

    terminal = "message_stop"
    ignored = frozenset(("ping", "content_block_stop"))
    ends = frozenset((terminal,))
    text_events: re.Pattern[bytes] | None = named_events(TEXT_DELTA_EVENT)

    def __init__(self, model_requested: str, *, created: int | None = None) -> None:
        self.id = ""
        self.model = model_requested
        self.created = int(time.time()) if created is None else created
        self.finished = False  # message_stop seen
        self._usage: Json = {}  # Anthropic-shaped token counts seen so far
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool call index

    @property
    def usage(self) -> Json | None:
        return _usage(self._usage) if self._usage else None

    def feed(self, event: str | None, data: Mapping[str, Any]) -> list[Json]:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self._count(message.get("usage") or {}, USAGE_KEYS)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if kind == "message_delta":  # its counts are totals so far, and may include the input's
            self._count(data.get("usage") or {}, USAGE_KEYS)
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _finish_reason(stop_reason))]
        if kind == "message_stop":
            self.finished = True
        elif kind == "error":
            error = data.get("error") or {}
            raise ProviderError(f"anthropic stream error: {error.get('type')}: {error.get('message')}")
        return []  # content_block_stop, ping and events added after this was written

    def final(self) -> list[Json]:
        return [self.usage_chunk()]

    def text_of(self, data: bytes) -> str | None:
        """The text of a `text_delta` event, Anthropic's most common, read without `feed`'s dispatch
        or a chunk of its own (for a stream passed on, `tfgw.providers.http.PassThrough`); "" for
        the start of an empty text block, which says nothing."""
        if not data.startswith(TEXT_DELTA_START) or data.find(b'"text_delta"') < 0:  # not `in`: http.CR
            return "" if data.startswith(TEXT_BLOCK_START) and data.endswith(TEXT_BLOCK_EMPTY) else None
        try:
            delta = orjson.loads(data).get("delta")
        except (orjson.JSONDecodeError, AttributeError):
            return None  # `feed` reports it
        if not isinstance(delta, dict) or delta.get("type") != "text_delta":
            return None
        text = delta.get("text")
        return text if isinstance(text, str) and text else None

    def usage_chunk(self) -> Json:
        """The last chunk OpenAI sends when `stream_options.include_usage` is true."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage,
        }

    def _block_start(self, index: int, block: Json) -> list[Json]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "tool_use":
            self._tool_index[index] = tool = len(self._tool_index)
            call = {
                "index": tool,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking blocks and server tools are not shown

    def _block_delta(self, index: int, delta: Json) -> list[Json]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tool_index:
            call = {"index": self._tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking_delta, signature_delta

    def _count(self, usage: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        self._usage.update({key: usage[key] for key in keys if usage.get(key) is not None})

    def _chunk(self, delta: Json, finish_reason: str | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }


def to_error_body(data: bytes) -> bytes:
    """An Anthropic error body as an OpenAI error body; an unreadable one becomes a generic error."""
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message, kind = error["message"], error.get("type") or "api_error"
    else:
        message, kind = data.decode("utf-8", errors="replace")[:500], "api_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


# --------------------------------------------------------------------------------------------------
# The provider


class AnthropicStream(SseStream):
    """An Anthropic SSE response, read as OpenAI SSE frames."""

    def __init__(
        self, client: HttpClient, resp: aiohttp.ClientResponse, model: str, include_usage: bool
    ) -> None:
        super().__init__(client, resp)
        self.translator = StreamTranslator(model)
        self.include_usage = include_usage

    def reported_usage(self) -> Json | None:
        return self.translator.usage

    async def batches(self) -> AsyncIterator[StreamBatch]:
        async for _, block in self.reads():
            if not block:  # no event ended in this read yet
                continue
            frames: list[bytes] = []
            chunks: list[Chunk] = []
            for event, data in sse_events(block):
                for chunk in self.translator.feed(event, self.parse(data)):
                    frames.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                    chunks.append(chunk)
            yield b"".join(frames), chunks
        if not self.translator.finished:
            raise ProviderError(f"provider {self.client.provider!r} ended the stream before message_stop")
        usage = self.translator.usage_chunk()
        last = b"data: " + orjson.dumps(usage) + b"\n\n" if self.include_usage else b""
        yield last + b"data: [DONE]\n\n", [usage]


class AnthropicProvider(Provider, NativeMessages):
    def __init__(self, settings: ProviderSettings, client: HttpClient) -> None:
        super().__init__(settings)
        self.client = client
        self.url = f"{settings.base_url}/v1/messages"
        self.headers = {
            **({"x-api-key": settings.api_key} if settings.api_key else {}),
            "anthropic-version": settings.api_version or DEFAULT_API_VERSION,
            "content-type": "application/json",
            **settings.headers,
        }

    async def chat(self, call: Call) -> Reply:
        request = to_messages_request(call.body, call.model)
        request.pop("stream", None)
        try:
            _, raw = await self.client.post(self.url, orjson.dumps(request), self.headers, call.timeout)
        except UpstreamStatusError as exc:
            raise self._openai_shaped(exc) from exc
        data = from_messages_response(self._decode(raw), call.model)
        return Reply(body=orjson.dumps(data), data=data)

    async def open_stream(self, call: Call) -> AnthropicStream:
        request = {**to_messages_request(call.body, call.model), "stream": True}
        try:
            resp = await self.client.open(self.url, orjson.dumps(request), self.headers, call.timeout)
        except UpstreamStatusError as exc:
            raise self._openai_shaped(exc) from exc
        return AnthropicStream(self.client, resp, call.model, wants_usage(call.body))

    async def embeddings(self, call: Call) -> Reply:
        raise BadRequestError("anthropic provider has no embeddings endpoint")

    async def messages(self, call: Call) -> Reply:
        body = orjson.dumps(self.upstream_body(call))
        _, raw = await self.client.post(self.url, body, self._native_headers(call), call.timeout)
        return Reply(body=raw, data=from_messages_response(self._decode(raw), call.model))

    async def open_messages(self, call: Call) -> PassThrough:
        body = orjson.dumps(self.upstream_body(call))
        resp = await self.client.open(self.url, body, self._native_headers(call), call.timeout)
        return PassThrough(self.client, resp, StreamTranslator(call.model))

    async def count_tokens(self, call: Call) -> Reply:
        body = orjson.dumps(self.upstream_body(call))
        headers = self._native_headers(call)
        _, raw = await self.client.post(f"{self.url}/count_tokens", body, headers, call.timeout)
        return Reply(body=raw, data=self._decode(raw))

    def _native_headers(self, call: Call) -> dict[str, str]:
        """The provider's headers, with the client's `anthropic-version` and `anthropic-beta`."""
        return {**self.headers, **call.headers} if call.headers else self.headers

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"provider {self.name!r} returned a body that is not JSON") from exc
        if not isinstance(message, dict):
            raise ProviderError(f"provider {self.name!r} returned a body that is not a JSON object")
        return message

    def _openai_shaped(self, exc: UpstreamStatusError) -> UpstreamStatusError:
        body = to_error_body(exc.upstream_body)
        return UpstreamStatusError(self.name, exc.upstream_status, body, exc.upstream_headers)
