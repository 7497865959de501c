"""OpenAI Responses clients on chat-completions providers: the one place that pair is translated
(docs/http.md, "OpenAI Responses").

A `POST /v1/responses` becomes a chat-completions call to whichever provider serves the model (the
Anthropic adapter then turns that into a Messages call), and the answer comes back as a
`response`:

- requests (`to_chat_request`): `instructions` becomes the first (system) message, `input` (a string
  or items) becomes messages: message items with their content parts, `function_call` items the
  assistant's `tool_calls`, `function_call_output` items `tool` messages; function tools, tool_choice,
  `text.format` (as `response_format`), `reasoning.effort`, `max_output_tokens` their chat forms;
- answers (`to_response`): a `chat.completion` becomes a `response` with a `message` item and one
  `function_call` item per tool call; usage with its cached and reasoning details;
- streams (`ResponseEvents`, `ResponsesStream`): chunks become `response.created`,
  `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
  `response.output_text.delta`, `response.function_call_arguments.delta`, their `.done` events and,
  last, `response.completed` (or `response.incomplete` when the output hit its limit), with usage;
  a stream that fails after its first event ends with `response.failed`, a terminal event too.

The gateway keeps no responses, so `previous_response_id` and built-in tools (web search, file
search, computer use, ...) are a 400 naming them, unless the provider has the Responses API itself
(`[providers.NAME] responses = true`): then the call is passed on as it is, and
`tfgw.providers.responses` only gives its span the chat-completions view.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from tfgw.errors import BadRequestError, ProviderError
from tfgw.formats.stream import TranslatedStream
from tfgw.providers.base import Stream

__all__ = [
    "ResponseEvents",
    "ResponsesStream",
    "to_chat_request",
    "to_response",
]

Json = dict[str, Any]

#: the request keys echoed on the response object, with their defaults
ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "temperature": None,
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
}
TEXT_PARTS = ("input_text", "output_text", "text")


# --------------------------------------------------------------------------------------------------
# Requests


def to_chat_request(body: Mapping[str, Any], *, strict: bool = True) -> Json:
    """A Responses request body as a chat-completions request body.

    Kept: model, instructions, input, max_output_tokens (as `max_tokens`), temperature, top_p, user,
    parallel_tool_calls, function tools, tool_choice, text.format, reasoning.effort, stream. Dropped:
    store, metadata, truncation, include, service_tier and other keys with no chat counterpart.
    `strict=False` is the view a span of a passed-on call is made of: what only a provider with the
    Responses API can take (previous_response_id, built-in tools, other items) is no error there;
    items and parts of other types are left out or kept by their type, other tools kept as they are.
    """
    if strict and body.get("previous_response_id"):
        raise BadRequestError(
            "previous_response_id is not supported: the gateway keeps no responses, send the whole"
            " conversation in 'input'",
            param="previous_response_id",
        )
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    messages += _input(body.get("input"), strict)
    if not messages and strict:
        raise BadRequestError("'input' is required", param="input")
    out: Json = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if tools := body.get("tools"):
        out["tools"] = [_tool(tool, strict) for tool in tools]
    if (choice := body.get("tool_choice")) is not None:
        out["tool_choice"] = _tool_choice(choice, strict)
    if fmt := _response_format((body.get("text") or {}).get("format")):
        out["response_format"] = fmt
    if effort := (body.get("reasoning") or {}).get("effort"):
        out["reasoning_effort"] = effort
    return out


def _input(value: Any, strict: bool) -> list[Json]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequestError("'input' must be a string or an array of items", param="input")
    messages: list[Json] = []
    for item in value:
        if not isinstance(item, Mapping):
            raise BadRequestError("'input' items must be objects", param="input")
        kind = item.get("type") or "message"
        if kind == "message":
            content = _content(item.get("content"), strict)
            messages.append({"role": item.get("role") or "user", "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function"}
            call["function"] = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif strict and kind != "reasoning":  # reasoning items are the provider's own: left out
            raise BadRequestError(f"input item type {kind!r} is not supported", param="input")
    return messages


def _content(content: Any, strict: bool) -> str | list[Json]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequestError("a message's content must be a string or an array of parts", param="input")
    parts: list[Json] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal") or ""})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
            parts.append({"type": "image_url", "image_url": image})
        elif strict:
            raise BadRequestError(f"content part type {kind!r} is not supported", param="input")
        else:
            parts.append({"type": str(kind)})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool(tool: Any, strict: bool) -> Json:
    if not strict and isinstance(tool, Mapping) and tool.get("type") != "function":
        return dict(tool)  # a built-in tool, as the client declared it
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, Mapping) else type(tool).__name__
        raise BadRequestError(
            f"tool type {kind!r} is not supported: the gateway runs no built-in tools, only functions",
            param="tools",
        )
    function: Json = {"name": tool.get("name")}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, strict: bool) -> Any:
    if isinstance(choice, str) or not strict:
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise BadRequestError(f"tool_choice {choice!r} is not supported", param="tool_choice")


def _response_format(fmt: Any) -> Json | None:
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_schema":
        schema = {key: fmt[key] for key in ("name", "description", "schema", "strict") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}  # json_object


# --------------------------------------------------------------------------------------------------
# Answers


def to_response(
    completion: Mapping[str, Any], request: Mapping[str, Any], *, created: int | None = None
) -> Json:
    """A `chat.completion` as a `response` (its first choice), echoing `request`'s settings."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[Json] = []
    if message.get("content") or not message.get("tool_calls"):
        output.append(_message_item(_item_id("msg", completion, 0), message.get("content") or ""))
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        item = _call_item(_item_id("fc", completion, i), call.get("id"), function.get("name"))
        output.append({**item, "arguments": function.get("arguments") or "", "status": "completed"})
    incomplete = choice.get("finish_reason") == "length"
    return _response(completion.get("id"), completion.get("model"), request, created, output, incomplete) | {
        "usage": _usage(completion.get("usage"))
    }


def _response(
    chat_id: Any,
    model: Any,
    request: Mapping[str, Any],
    created: int | None,
    output: list[Json],
    incomplete: bool,
) -> Json:
    out: Json = {
        "id": f"resp_{chat_id}" if chat_id else "resp_tfgw",
        "object": "response",
        "created_at": int(time.time()) if created is None else created,
        "status": "incomplete" if incomplete else "completed",
        "model": model or request.get("model"),
        "output": output,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "previous_response_id": None,
        "text": request.get("text") or {"format": {"type": "text"}},
        "metadata": request.get("metadata") or {},
    }
    for key, default in ECHOED.items():
        value = request.get(key)
        out[key] = default if value is None else value
    return out


def _item_id(prefix: str, completion: Mapping[str, Any], index: int) -> str:
    return f"{prefix}_{completion.get('id') or 'tfgw'}_{index}"


def _message_item(item_id: str, text: str, status: str = "completed") -> Json:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def _call_item(item_id: str, call_id: Any, name: Any) -> Json:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name}


def _usage(usage: Any) -> Json | None:
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


# --------------------------------------------------------------------------------------------------
# Streams


class ResponseEvents:
    """The `chat.completion.chunk`s of one streamed answer as the Responses API's events.

    `feed()` returns the bytes for one chunk, `finish()` the closing events and the terminal
    `response.completed` / `response.incomplete`, `failed()` a terminal `response.failed`. Text is
    one `message` item, each tool call a `function_call` item, opened at their first delta."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.request = request
        self.created = int(time.time())
        self._seq = 0
        self._chat_id: str | None = None
        self._model: Any = None
        self._started = False
        self._items: list[Json] = []  # every output item so far, the open one last
        self._open: str | int | None = None  # "text", a tool call's index, or None
        self._text: list[str] = []
        self._args: list[str] = []
        self._finish: str | None = None
        self._usage: Json | None = None

    def feed(self, chunk: Mapping[str, Any] | str) -> bytes:
        """The events for one chunk (a bare `str` is more text of choice 0)."""
        if isinstance(chunk, str):
            chunk = {"choices": [{"index": 0, "delta": {"content": chunk}}]}
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self._chat_id, self._model = chunk.get("id"), chunk.get("model")
            out += self._head()
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """The answer's end and its usage came: nothing but `[DONE]` is left of an OpenAI stream."""
        return self._finish is not None and self._usage is not None

    def finish(self) -> bytes:
        out = [] if self._started else self._head()
        out += self._close()
        incomplete = self._finish == "length"
        response = self._response("incomplete" if incomplete else "completed") | {"usage": self._usage}
        kind = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(kind, {"response": response}))
        return b"".join(out)

    def failed(self, exc: ProviderError) -> bytes:
        out = [] if self._started else self._head()
        response = self._response("failed") | {"error": {"code": "server_error", "message": exc.message}}
        out.append(self._event("response.failed", {"response": response | {"usage": self._usage}}))
        return b"".join(out)

    def _head(self) -> list[bytes]:
        response = self._response("in_progress") | {"usage": None}
        return [
            self._event("response.created", {"response": response}),
            self._event("response.in_progress", {"response": response}),
        ]

    def _text_delta(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open != "text":
            out += self._close()
            out.append(self._add(_message_item(self._id("msg"), "", "in_progress"), "text"))
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(self._item_event("response.content_part.added", content_index=0, part=part))
        self._text.append(text)
        out.append(self._item_event("response.output_text.delta", content_index=0, delta=text, logprobs=[]))
        return out

    def _tool_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        index, function = call.get("index", 0), call.get("function") or {}
        out: list[bytes] = []
        if call.get("id") and self._open != index:
            out += self._close()
            item = _call_item(self._id("fc"), call.get("id"), function.get("name"))
            out.append(self._add({**item, "arguments": "", "status": "in_progress"}, index))
        if (arguments := function.get("arguments")) and self._open == index:
            self._args.append(arguments)
            out.append(self._item_event("response.function_call_arguments.delta", delta=arguments))
        return out

    def _add(self, item: Json, key: str | int) -> bytes:
        self._items.append(item)
        self._open = key
        return self._event("response.output_item.added", {"output_index": self._index, "item": item})

    def _close(self) -> list[bytes]:
        """The `.done` events of the open item, which is then final in `_items`."""
        if self._open is None:
            return []
        item, out = self._items[-1], []
        if self._open == "text":
            text, self._text = "".join(self._text), []
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(self._item_event("response.output_text.done", content_index=0, text=text, logprobs=[]))
            out.append(self._item_event("response.content_part.done", content_index=0, part=part))
            item = self._items[-1] = _message_item(item["id"], text)
        else:
            arguments, self._args = "".join(self._args), []
            out.append(self._item_event("response.function_call_arguments.done", arguments=arguments))
            item = self._items[-1] = {**item, "arguments": arguments, "status": "completed"}
        out.append(self._event("response.output_item.done", {"output_index": self._index, "item": item}))
        self._open = None
        return out

    @property
    def _index(self) -> int:
        return len(self._items) - 1

    def _item_event(self, kind: str, **fields: Any) -> bytes:
        """An event about the open item (its id and output index added)."""
        return self._event(kind, {"item_id": self._items[-1]["id"], "output_index": self._index, **fields})

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self._chat_id or 'tfgw'}_{len(self._items)}"

    def _response(self, status: str) -> Json:
        incomplete = status == "incomplete"
        output = list(self._items)
        return _response(self._chat_id, self._model, self.request, self.created, output, incomplete) | {
            "status": status
        }

    def _event(self, kind: str, data: Json) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesStream(TranslatedStream):
    """A chat-completions stream read as the Responses API's events; a provider failure after the
    first event ends it with `response.failed`."""

    def __init__(self, chat: Stream, request: Mapping[str, Any]) -> None:
        super().__init__(chat, ResponseEvents(request))
