"""Anthropic Messages clients on OpenAI chat-completions providers: the one place that pair is
translated (docs/http.md, "Anthropic Messages").

The gateway's providers all take chat-completions calls (the Anthropic adapter turns them back into
Messages calls itself). A `POST /v1/messages` routed to any provider but an Anthropic one goes
through here, both ways:

- requests (`to_chat_request`): `system` becomes the first message, content blocks become content
  parts, `tool_use` blocks become `tool_calls`, `tool_result` blocks become `tool` messages (ahead of
  the rest of their user turn, as OpenAI wants them right after the call), tools and tool_choice
  their function forms; a streamed call always asks for the usage chunk, as Anthropic always sends
  usage;
- answers (`to_message`): a `chat.completion` becomes a `message`; `input_tokens` counts the input
  not read from a cache, as Anthropic counts it;
- streams (`MessageEvents`): `chat.completion.chunk`s become `message_start`, `content_block_*`,
  `message_delta` and `message_stop` events, usage on the `message_delta`;
- errors (`error_body`, `error_event`): Anthropic's `{"type": "error", "error": {...}}`.

Requests to an Anthropic provider are passed on as they are (`tfgw.providers.anthropic`); their
span is still made of the chat-completions view of the call (`to_chat_request`,
`from_messages_response`), so every route's spans carry the same attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tfgw.errors import BadRequestError, ProviderError, TfgwError, UpstreamStatusError
from tfgw.formats.stream import TranslatedStream
from tfgw.providers.base import Stream

__all__ = ["MessageEvents", "MessagesStream", "error_body", "error_event", "to_chat_request", "to_message"]

Json = dict[str, Any]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
#: HTTP status → Anthropic error type (docs.anthropic.com, "Errors")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------------------------------
# Requests


def to_chat_request(body: Mapping[str, Any], *, strict: bool = True) -> Json:
    """An Anthropic Messages request body as a chat-completions request body.

    Kept: model, messages, system, max_tokens, temperature, top_p, stop_sequences (as `stop`),
    stream, metadata.user_id (as `user`), tools and tool_choice. Dropped: every other key (top_k,
    extended thinking, service_tier, ...) and thinking blocks in the history. Server tools (web search, code
    execution, ...) and document blocks are a `BadRequestError`: a chat-completions provider has
    nothing to run them with. `strict=False` is the view a span of a passed-on call is made of:
    such tools and blocks are kept as they are, for the span to name their type.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages: Field required (a non-empty array)", param="messages")
    out: Json = {"model": body.get("model"), "messages": _system(body.get("system"))}
    for message in messages:
        out["messages"] += _message(message, strict)
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("user_id"):
        out["user"] = metadata["user_id"]
    if tools := body.get("tools"):
        out["tools"] = [_tool(tool, strict) for tool in tools]
        _tool_choice(body.get("tool_choice"), out)
    return out


def _system(system: Any) -> list[Json]:
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": "\n\n".join(_texts(system, "system"))}]


def _texts(blocks: Any, param: str) -> list[str]:
    if not isinstance(blocks, list):
        raise BadRequestError(f"{param}: must be a string or an array of text blocks", param=param)
    texts = []
    for block in blocks:
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise BadRequestError(f"{param}: only text blocks are supported here", param=param)
        texts.append(str(block.get("text") or ""))
    return texts


def _message(message: Any, strict: bool) -> list[Json]:
    """One Anthropic turn as chat messages: a user turn with tool results is several."""
    if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
        raise BadRequestError("messages: each needs a role of 'user' or 'assistant'", param="messages")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise BadRequestError("messages: content must be a string or an array of blocks", param="messages")
    if role == "assistant":
        return [_assistant(content, strict)]
    out: list[Json] = []
    parts: list[Json] = []
    for block in content:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "tool_result":
            out.append(_tool_result(block))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image(block.get("source") or {}, strict))
        elif strict:
            raise _unsupported(f"content block type {kind!r}", "messages")
        else:
            parts.append({"type": str(kind)})
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        text = "\n\n".join(p["text"] for p in parts) if only_text and len(parts) == 1 else None
        out.append({"role": "user", "content": text if text is not None else parts})
    return out


def _assistant(content: list[Any], strict: bool) -> Json:
    texts: list[str] = []
    calls: list[Json] = []
    for block in content:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif strict and kind not in ("thinking", "redacted_thinking"):
            raise _unsupported(f"content block type {kind!r}", "messages")
    message: Json = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_result(block: Mapping[str, Any]) -> Json:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n\n".join(_texts(content, "messages"))
    text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _image(source: Mapping[str, Any], strict: bool) -> Json:
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    elif not strict:
        return {"type": "image"}
    else:
        raise _unsupported(f"image source type {source.get('type')!r}", "messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool(tool: Any, strict: bool) -> Json:
    if not strict and isinstance(tool, Mapping) and tool.get("type") not in (None, "custom"):
        return dict(tool)  # a server tool, as the client declared it
    if not isinstance(tool, Mapping) or tool.get("type") not in (None, "custom"):
        kind = tool.get("type") if isinstance(tool, Mapping) else type(tool).__name__
        raise _unsupported(f"tool type {kind!r}", "tools")
    function: Json = {"name": tool.get("name")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: Json) -> None:
    if not isinstance(choice, Mapping):
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in TOOL_CHOICES:
        out["tool_choice"] = TOOL_CHOICES[kind]
    else:
        raise BadRequestError(f"tool_choice: type {kind!r} is not supported", param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def _unsupported(what: str, param: str) -> BadRequestError:
    return BadRequestError(
        f"{param}: {what} is not supported when the model's provider is not Anthropic", param=param
    )


# --------------------------------------------------------------------------------------------------
# Answers


def to_message(completion: Mapping[str, Any], model: str) -> Json:
    """A `chat.completion` as an Anthropic `message` (its first choice: Messages has no `n`)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Json] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
        content.append({**block, "input": _input(function)})
    return {
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": _usage(completion.get("usage")),
    }


def _input(function: Mapping[str, Any]) -> Any:
    """A tool call's arguments as the `input` object; text that is not JSON is kept as a string
    under `_raw`, so the client sees what the model produced."""
    try:
        value = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": function.get("arguments")}
    return value if isinstance(value, dict) else {"_raw": value}


def _stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _usage(usage: Any) -> Json:
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    out: Json = {
        "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached - written),
        "output_tokens": usage.get("completion_tokens") or 0,
    }
    if cached or written:
        out["cache_read_input_tokens"] = cached
        out["cache_creation_input_tokens"] = written
    return out


class MessageEvents:
    """The `chat.completion.chunk`s of one streamed answer as Anthropic's SSE events.

    `feed()` returns the bytes for one chunk (often none: a role-only chunk, the usage chunk);
    `finish()` the closing events once the provider's stream ended. Text and each tool call get a
    content block of their own, opened when their first delta comes and closed when another begins."""

    __slots__ = (
        "_block",
        "_model",
        "_open",
        "_started",
        "_stop_reason",
        "_stopped",
        "_tools",
        "_usage",
        "id",
    )

    def __init__(self, model: str) -> None:
        self.id: str | None = None
        self._model = model
        self._started = False
        self._block = -1  # index of the last block opened
        self._open: str | int | None = None  # "text", a tool call's index, or None
        self._tools: dict[int, int] = {}  # tool call index → block index
        self._stop_reason = "end_turn"
        self._stopped = False  # a finish_reason came
        self._usage: Json | None = None

    def feed(self, chunk: Mapping[str, Any] | str) -> bytes:
        """The events for one chunk (a bare `str` is more text of choice 0)."""
        if isinstance(chunk, str):
            chunk = {"choices": [{"index": 0, "delta": {"content": chunk}}]}
        if self._open == "text" and (text := _more_text(chunk)):  # most chunks: written directly
            return b"".join(
                (TEXT_DELTA[0], str(self._block).encode(), TEXT_DELTA[1], orjson.dumps(text), b"}}\n\n")
            )
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self.id = chunk.get("id")
            self._model = chunk.get("model") or self._model
            out.append(self._start())
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open != "text":
                    out.append(self._open_block({"type": "text", "text": ""}, "text"))
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or ():
                out.append(self._tool_delta(call))
            if choice.get("finish_reason"):
                self._stop_reason = _stop_reason(choice["finish_reason"])
                self._stopped = True
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """The answer's end and its usage came: nothing but `[DONE]` is left of an OpenAI stream."""
        return self._stopped and self._usage is not None

    def failed(self, exc: ProviderError) -> None:
        return None  # the route's wire ends the stream with `error_event`

    def finish(self) -> bytes:
        out = [self._start()] if not self._started else []
        if self._open is not None:
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": self._block}))
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        usage = self._usage or {"input_tokens": 0, "output_tokens": 0}
        out.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _start(self) -> bytes:
        message: Json = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _tool_delta(self, call: Mapping[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out = b""
        if index not in self._tools:
            block: Json = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            block["input"] = {}
            out = self._open_block(block, index)
            self._tools[index] = self._block
        elif self._open != index:  # interleaved tool calls: Anthropic blocks cannot reopen
            return b""
        if function.get("arguments"):
            out += self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
        return out

    def _open_block(self, block: Json, key: str | int) -> bytes:
        out = b""
        if self._open is not None:
            out = _event("content_block_stop", {"type": "content_block_stop", "index": self._block})
        self._block += 1
        self._open = key
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + _event("content_block_start", start)

    def _delta(self, delta: Json) -> bytes:
        event = {"type": "content_block_delta", "index": self._block, "delta": delta}
        return _event("content_block_delta", event)


#: a `content_block_delta` event of text, around its index and its text, as `_event` writes it
TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":',
    b',"delta":{"type":"text_delta","text":',
)


def _more_text(chunk: Mapping[str, Any]) -> str | None:
    """The text of a chunk that is nothing but more text of its one choice, else None."""
    choices = chunk.get("choices")
    if not choices or len(choices) != 1 or chunk.get("usage"):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if not delta or choice.get("finish_reason") or delta.get("tool_calls"):
        return None
    text = delta.get("content")
    return text if isinstance(text, str) else None


class MessagesStream(TranslatedStream):
    """A chat-completions stream read as Anthropic's events (a failure after the first byte is
    told by the route's wire: `error_event`)."""

    def __init__(self, chat: Stream, model: str) -> None:
        super().__init__(chat, MessageEvents(model))


def _event(name: str, data: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --------------------------------------------------------------------------------------------------
# Errors


def error_body(exc: TfgwError) -> bytes:
    """`exc` in Anthropic's error shape; a provider's own Anthropic-shaped 4xx body is kept."""
    if isinstance(exc, UpstreamStatusError) and exc.upstream_status < 500:
        upstream = _anthropic_error(exc.upstream_body)
        if upstream is not None:
            return exc.upstream_body
    kind = ERROR_TYPES.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
    message = _openai_message(exc)
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def error_event(exc: TfgwError) -> bytes:
    """The `error` event that ends a stream which failed after its first byte."""
    return b"event: error\ndata: " + error_body(exc) + b"\n\n"


def _anthropic_error(body: bytes) -> Json | None:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and data.get("type") == "error" and isinstance(data.get("error"), dict):
        return data
    return None


def _openai_message(exc: TfgwError) -> str:
    """The message of `exc`, or of the OpenAI-shaped error body a provider sent back."""
    if isinstance(exc, UpstreamStatusError) and exc.upstream_status < 500:
        try:
            data: Any = orjson.loads(exc.body())
            return str(data["error"]["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
    return exc.message
