"""The Responses API as a provider answers it, read as chat completions for the span: a call
passed on as it is (`[providers.NAME] responses = true`) still gives the same attributes as any
other. The provider's side of the pair; the client's side is `tfgw.formats.responses`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from tfgw.errors import ProviderError
from tfgw.providers.http import JSON_STRING, named_events

__all__ = ["ResponsesReader", "from_response"]

Json = dict[str, Any]

#: fields of a text delta other than `delta`, each a string of printable ASCII without escapes, an
#: integer or `[]`: JSON whatever they hold, so the event is JSON exactly when its `delta` is
_FIELDS = rb'(?:,"(?!delta")[a-z_]+":(?:"[ !#-\[\]-~]*"|0|-?[1-9][0-9]*|\[\]))*'
#: a `response.output_text.delta` event of such fields in any order around its `delta`: what a
#: stream passed on reads as its text alone (`ResponsesReader.text_events`); any other goes to
#: `text_of`
TEXT_DELTA_EVENT = (
    rb'event: response\.output_text\.delta\ndata: \{"type":"response\.output_text\.delta"'
    + _FIELDS
    + rb',"delta":('
    + JSON_STRING
    + rb")"
    + _FIELDS
    + rb"\}\n\n"
)


def from_response(response: Mapping[str, Any]) -> Json:
    """A `response` as the `chat.completion` its span is made of: the message text joined, function
    calls as `tool_calls`; built-in tool items and reasoning are left out."""
    texts: list[str] = []
    calls: list[Json] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if part.get("type") in ("output_text", "refusal"):
                    texts.append(part.get("text") or part.get("refusal") or "")
        elif item.get("type") == "function_call":
            calls.append(_chat_call(item))
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    out: Json = {"id": response.get("id"), "object": "chat.completion", "model": response.get("model")}
    out["choices"] = [{"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}]
    if (usage := _chat_usage(response.get("usage"))) is not None:
        out["usage"] = usage
    return out


def _chat_call(item: Mapping[str, Any]) -> Json:
    function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
    return {"id": item.get("call_id"), "type": "function", "function": function}


def _finish(response: Mapping[str, Any], called: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else "content_filter"
    return "tool_calls" if called else "stop"


def _chat_usage(usage: Any) -> Json | None:
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


class ResponsesReader:
    """The events of a provider's own Responses stream as `chat.completion.chunk`s, for the span of a
    stream passed on as it came (`tfgw.providers.http.PassThrough`)."""

    terminal = "response.completed"
    ignored = frozenset(
        (
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
        )
    )
    ends: frozenset[str] = frozenset()  # its terminal event carries the usage
    text_events: re.Pattern[bytes] | None = named_events(TEXT_DELTA_EVENT)

    def __init__(self) -> None:
        self.finished = False
        self._id: Any = None
        self._model: Any = None
        self._calls = 0

    def feed(self, event: str | None, data: Any) -> list[Json]:
        kind = data.get("type") if isinstance(data, Mapping) else None
        if kind == "response.created":
            response = data.get("response") or {}
            self._id, self._model = response.get("id"), response.get("model")
            return [self._chunk({"role": "assistant"})]
        if kind == "response.output_text.delta" and data.get("delta"):
            return [self._chunk({"content": data["delta"]})]
        if kind == "response.output_item.done" and (data.get("item") or {}).get("type") == "function_call":
            call = {"index": self._calls, **_chat_call(data["item"])}
            self._calls += 1
            return [self._chunk({"tool_calls": [call]})]
        if kind in ("response.completed", "response.incomplete"):
            self.finished = True
            response = data.get("response") or {}
            usage = _chat_usage(response.get("usage"))
            last = {"id": self._id, "model": self._model, "choices": [], "usage": usage}
            return [self._chunk({}, _finish(response, self._calls > 0)), last]
        if kind in ("response.failed", "error"):
            self.finished = True
            error = (data.get("response") or {}).get("error") or data
            raise ProviderError(f"responses stream failed: {error.get('code')}: {error.get('message')}")
        return []

    @property
    def usage(self) -> Json | None:
        return None  # a Responses stream reports usage only in its terminal event

    def text_of(self, data: bytes) -> str | None:
        """The text of a `response.output_text.delta` event, the most common, read without `feed`."""
        if not data.startswith(b'{"type":"response.output_text.delta"'):
            return None
        try:
            text = orjson.loads(data).get("delta")
        except (orjson.JSONDecodeError, AttributeError):
            return None  # `feed` reports it
        return text if isinstance(text, str) and text else None

    def final(self) -> list[Json]:
        return []

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": self._id, "object": "chat.completion.chunk", "model": self._model, "choices": [choice]}
