"""The texts of a request or an answer, in each wire format, for the guardrails to read and rewrite.

Requests (what the client wrote, the history included):

- `chat` (OpenAI chat completions): every message's `content`, a string or its `text` parts (tool
  results are messages too);
- `messages` (Anthropic): `system`, a string or text blocks; every message's `content`, a string or
  its `text` blocks and its `tool_result` blocks' content (a string or text blocks);
- `responses` (OpenAI Responses): `instructions`; `input`, a string or items: message items'
  `content` (a string or `input_text` / `output_text` / `text` parts) and `function_call_output`
  items' `output` (a string or `input_text` parts);
- `embeddings`: `input`, a string or a list of strings (token arrays are not text: left alone).

Answers (what the model wrote): `chat` the choices' `message.content`; `messages` the `content`
text blocks; `responses` the message items' `output_text` parts, and `output_text` when present;
`embeddings` none.

`rewrite_request` / `rewrite_answer` return the body with every text replaced by `f(text)`: the
body is never changed in place, only the containers on the path to a changed text are copied, and
when `f` changes nothing (returns the very string it was given) the body itself comes back.
Anything not shaped as the format says (a missing key, a number where a string goes) is skipped:
validating the body is the route's business.

Streams (`StreamTexts`): which SSE events of a streamed answer carry text and of which content
block, which end a block, and which carry its full text again (the Responses `.done` events and
the completed response); the guard that decides what text goes out subclasses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

__all__ = [
    "FORMATS",
    "STREAM_FORMATS",
    "Frame",
    "StreamTexts",
    "answer_texts",
    "named_event",
    "plain_texts",
    "request_texts",
    "rewrite_answer",
    "rewrite_request",
    "sse_event",
]

LF = 10  # b"\n" as an int, for `in` (see `tfgw.providers.http.CR`)

Rewrite = Callable[[str], str]
Walk = Callable[[Any, Rewrite], Any]

#: the parts of a Responses message that hold text
RESPONSES_PARTS = frozenset(("input_text", "output_text", "text"))


def request_texts(fmt: str, body: Mapping[str, Any]) -> Iterator[str]:
    """Every text the client wrote in a request `body` of format `fmt`, in body order."""
    return _collect(_walker(REQUESTS, fmt), body)


def plain_texts(fmt: str, body: Mapping[str, Any]) -> list[str] | None:
    """The texts of a chat request whose every message's content is a string, read without a
    walk (the common case, on every request a rule or a tpm limit applies to); None for any other
    body, whose texts `request_texts` reads."""
    messages = body.get("messages") if fmt == "chat" else None
    if not isinstance(messages, list):
        return None
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return None
        out.append(content)
    return out


def rewrite_request(fmt: str, body: dict[str, Any], f: Rewrite) -> dict[str, Any]:
    """`body` with each client-written text replaced by `f(text)` (copied on write)."""
    out: dict[str, Any] = _walker(REQUESTS, fmt)(body, f)
    return out


def answer_texts(fmt: str, answer: Mapping[str, Any]) -> Iterator[str]:
    """Every text the model wrote in an `answer` of format `fmt`, in answer order."""
    return _collect(_walker(ANSWERS, fmt), answer)


def rewrite_answer(fmt: str, answer: dict[str, Any], f: Rewrite) -> dict[str, Any]:
    """`answer` with each model-written text replaced by `f(text)` (copied on write)."""
    out: dict[str, Any] = _walker(ANSWERS, fmt)(answer, f)
    return out


def _walker(table: Mapping[str, Walk], fmt: str) -> Walk:
    try:
        return table[fmt]
    except KeyError:
        raise ValueError(f"unknown body format {fmt!r} (one of {', '.join(FORMATS)})") from None


def _collect(walk: Walk, body: Any) -> Iterator[str]:
    found: list[str] = []

    def keep(text: str) -> str:
        found.append(text)
        return text

    walk(body, keep)
    return iter(found)


# --------------------------------------------------------------------------------------------------
# Copy-on-write steps: each returns its argument itself when nothing under it changed (explicit
# loops: this runs on every request a guardrail applies to)


def _text(value: Any, f: Rewrite) -> Any:
    return f(value) if isinstance(value, str) else value


def _key(obj: Any, key: str, step: Callable[[Any], Any]) -> Any:
    """`obj` with `obj[key]` replaced by `step(obj[key])`."""
    if not isinstance(obj, dict) or key not in obj:
        return obj
    old = obj[key]
    new = step(old)
    return obj if new is old else {**obj, key: new}


def _each(items: Any, key: str | None, step: Callable[[Any], Any]) -> Any:
    """The list `items` with each item (`key`: each dict item's `key`) replaced by `step(it)`."""
    if not isinstance(items, list):
        return items
    out: list[Any] | None = None
    for i, item in enumerate(items):
        if key is None:
            new = step(item)
        elif isinstance(item, dict) and key in item:
            old = item[key]
            new = step(old)
            new = item if new is old else {**item, key: new}
        else:
            continue
        if new is not item:
            if out is None:
                out = list(items)
            out[i] = new
    return items if out is None else out


def _typed(value: Any, types: frozenset[str], f: Rewrite) -> Any:
    """A string, or a list of parts (blocks) whose `text` counts in those of a type in `types`."""
    if isinstance(value, str):
        return f(value)
    if not isinstance(value, list):
        return value
    out: list[Any] | None = None
    for i, part in enumerate(value):
        if isinstance(part, dict) and part.get("type") in types and isinstance(text := part.get("text"), str):
            new = f(text)
            if new is not text:
                if out is None:
                    out = list(value)
                out[i] = {**part, "text": new}
    return value if out is None else out


def _type(obj: Any) -> Any:
    return obj.get("type") if isinstance(obj, dict) else None


TEXT = frozenset(("text",))
OUTPUT_TEXT = frozenset(("output_text",))
INPUT_TEXT = frozenset(("input_text",))


# --------------------------------------------------------------------------------------------------
# Requests


def _chat_request(body: Any, f: Rewrite) -> Any:
    return _key(body, "messages", lambda ms: _each(ms, "content", lambda c: _typed(c, TEXT, f)))


def _messages_request(body: Any, f: Rewrite) -> Any:
    body = _key(body, "system", lambda s: _typed(s, TEXT, f))
    return _key(body, "messages", lambda ms: _each(ms, "content", lambda c: _blocks(c, f)))


def _blocks(content: Any, f: Rewrite) -> Any:
    """An Anthropic message's content: a string, text blocks, tool results (a string or text blocks)."""
    if isinstance(content, str):
        return f(content)

    def block(b: Any) -> Any:
        kind = _type(b)
        if kind == "text":
            return _key(b, "text", lambda t: _text(t, f))
        if kind == "tool_result":
            return _key(b, "content", lambda c: _typed(c, TEXT, f))
        return b

    return _each(content, None, block)


def _responses_request(body: Any, f: Rewrite) -> Any:
    body = _key(body, "instructions", lambda t: _text(t, f))
    return _key(body, "input", lambda value: _text(value, f) if isinstance(value, str) else _items(value, f))


def _items(items: Any, f: Rewrite) -> Any:
    def item(it: Any) -> Any:
        kind = _type(it) or "message"
        if kind == "message":
            return _key(it, "content", lambda c: _typed(c, RESPONSES_PARTS, f))
        if kind == "function_call_output":
            return _key(it, "output", lambda o: _typed(o, INPUT_TEXT, f))
        return it

    return _each(items, None, item)


def _embeddings_request(body: Any, f: Rewrite) -> Any:
    return _key(
        body, "input", lambda v: _text(v, f) if isinstance(v, str) else _each(v, None, lambda x: _text(x, f))
    )


# --------------------------------------------------------------------------------------------------
# Answers


def _chat_answer(answer: Any, f: Rewrite) -> Any:
    return _key(
        answer,
        "choices",
        lambda cs: _each(cs, "message", lambda m: _key(m, "content", lambda t: _text(t, f))),
    )


def _messages_answer(answer: Any, f: Rewrite) -> Any:
    return _key(
        answer, "content", lambda blocks: _typed(blocks, TEXT, f) if isinstance(blocks, list) else blocks
    )


def _responses_answer(answer: Any, f: Rewrite) -> Any:
    answer = _key(answer, "output", lambda items: _each(items, None, lambda it: _output_item(it, f)))
    return _key(answer, "output_text", lambda t: _text(t, f))


def _output_item(item: Any, f: Rewrite) -> Any:
    """One `output` item of a Responses answer: a message's `output_text` parts."""
    if _type(item) != "message":
        return item
    return _key(
        item, "content", lambda parts: _typed(parts, OUTPUT_TEXT, f) if isinstance(parts, list) else parts
    )


def _no_texts(body: Any, f: Rewrite) -> Any:
    return body


REQUESTS: dict[str, Walk] = {
    "chat": _chat_request,
    "messages": _messages_request,
    "responses": _responses_request,
    "embeddings": _embeddings_request,
}
ANSWERS: dict[str, Walk] = {
    "chat": _chat_answer,
    "messages": _messages_answer,
    "responses": _responses_answer,
    "embeddings": _no_texts,
}
FORMATS = tuple(REQUESTS)


# --------------------------------------------------------------------------------------------------
# Streams: where the text is in each API's SSE events

SEP = b"\n\n"
STREAM_FORMATS = ("chat", "messages", "responses")
#: Responses events that end a content part (or its item) and carry its full text again
RESPONSES_DONE = frozenset(
    ("response.output_text.done", "response.content_part.done", "response.output_item.done")
)
RESPONSES_END = frozenset(("response.completed", "response.incomplete", "response.failed", "error"))


class Frame:
    """A text event that may go out with other text: its bytes, its data, where its text is."""

    __slots__ = ("data", "name", "raw", "set", "text")

    def __init__(
        self, name: str, data: dict[str, Any], raw: bytes, text: str, set_text: Callable[[Any, str], None]
    ):
        self.name, self.data, self.raw, self.text, self.set = name, data, raw, text, set_text

    def bytes(self, text: str) -> bytes:
        """The event with `text` (its own bytes when that is its text)."""
        if text == self.text:
            return self.raw + SEP
        self.set(self.data, text)
        return named_event(self.name, self.data)


def sse_event(raw: bytes) -> tuple[str | None, bytes | None]:
    """The name and data of one SSE event (its bytes without the blank line); comments: no data."""
    if raw.startswith(b"data: ") and LF not in raw:
        return None, raw[6:]
    name, data = None, []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return name, b"\n".join(data) if data else None


def named_event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + SEP


def _loads(data: bytes | None) -> Any:
    try:
        return orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return None


def _set_text_delta(event: Any, text: str) -> None:
    event["delta"]["text"] = text


def _set_delta(event: Any, text: str) -> None:
    event["delta"] = text


class StreamTexts:
    """A streamed answer's events read for their text, in `chat`, `messages` or `responses`.

    This class knows the events: which carry text and of which content block (`chat`: a choice;
    `messages`: a block index; `responses`: an output and content index), which end a block, which
    carry a block's full text again. A subclass decides what text goes out, through `_text` (chat),
    `_carry` and `_close` (named events) and `_whole` (a full text again). Frames that carry no text
    go out byte for byte."""

    def __init__(self, fmt: str) -> None:
        handlers = {"chat": self._chat, "messages": self._messages, "responses": self._responses}
        self._handle: Callable[[bytes], bytes] = handlers[fmt]
        self._blocks: dict[Any, Any] = {}  # the open content blocks, by key
        self._head: dict[str, Any] = {}  # chat: the last chunk's own fields, for chunks of held text

    def feed(self, frames: bytes) -> bytes:
        """Whole SSE events (each ending in a blank line), rewritten."""
        parts = frames.split(SEP)
        rest = parts.pop()
        return b"".join([self._handle(raw) if raw else SEP for raw in parts]) + rest

    def _text(self, key: Any, text: str, final: bool) -> str:
        raise NotImplementedError

    def _carry(self, key: Any, frame: Frame) -> bytes:
        raise NotImplementedError

    def _close(self, keys: Iterable[Any]) -> bytes:
        raise NotImplementedError

    def _whole(self, text: str) -> str:
        raise NotImplementedError

    def _chat(self, raw: bytes) -> bytes:
        _, data = sse_event(raw)
        if data == b"[DONE]":
            return self._chat_held(list(self._blocks)) + raw + SEP
        if data is None or not (
            data.find(b'"content"') >= 0 or (self._blocks and data.find(b"finish_reason") >= 0)
        ):
            return raw + SEP
        chunk = _loads(data)
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return raw + SEP
        self._head = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        before, changed = b"", False
        for choice in chunk["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            index, text = choice.get("index", 0), delta.get("content")
            ends = choice.get("finish_reason") is not None or bool(delta.get("tool_calls"))
            if isinstance(text, str) and text:
                new = self._text(index, text, ends)
                if new != text:
                    delta["content"], changed = new, True
            elif ends and index in self._blocks:
                before += self._chat_held([index])
        return before + (b"data: " + orjson.dumps(chunk) if changed else raw) + SEP

    def _chat_held(self, indexes: list[Any]) -> bytes:
        """The held text of these choices, each in a chunk of its own."""
        out = []
        for index in indexes:
            if held := self._text(index, "", True):
                choice = {"index": index, "delta": {"content": held}, "finish_reason": None}
                out.append(b"data: " + orjson.dumps({**self._head, "choices": [choice]}) + SEP)
        return b"".join(out)

    def _messages(self, raw: bytes) -> bytes:
        name, data = sse_event(raw)
        if name == "content_block_delta" and data is not None and data.find(b'"text_delta"') >= 0:
            event = _loads(data)
            delta = event.get("delta") if isinstance(event, dict) else None
            if isinstance(delta, dict) and isinstance(text := delta.get("text"), str):
                return self._carry(event.get("index", 0), Frame(name, event, raw, text, _set_text_delta))
        elif name == "content_block_stop" and self._blocks:
            event = _loads(data)
            index = event.get("index", 0) if isinstance(event, dict) else None
            return self._close([index] if index in self._blocks else []) + raw + SEP
        elif name in ("message_delta", "message_stop", "error") and self._blocks:
            return self._close(list(self._blocks)) + raw + SEP
        return raw + SEP

    def _responses(self, raw: bytes) -> bytes:
        name, data = sse_event(raw)
        if not name or data is None or not (name.endswith((".delta", ".done")) or name in RESPONSES_END):
            return raw + SEP
        event = _loads(data)
        if not isinstance(event, dict):
            return raw + SEP
        if name == "response.output_text.delta" and isinstance(text := event.get("delta"), str):
            key = (event.get("output_index"), event.get("content_index"))
            return self._carry(key, Frame(name, event, raw, text, _set_delta))
        out = b""
        if name in RESPONSES_END:
            out = self._close(list(self._blocks))
        elif name in RESPONSES_DONE:
            out = self._close([k for k in self._blocks if k[0] == event.get("output_index")])
        new = _responses_event(event, self._whole)
        return out + (raw + SEP if new is event else named_event(name, new))


def _responses_event(event: dict[str, Any], f: Rewrite) -> dict[str, Any]:
    """A Responses event with the full text it carries again (of a part, an item, the whole
    response) rewritten."""
    event = _key(event, "text", lambda t: _text(t, f))
    event = _key(
        event, "part", lambda p: _key(p, "text", lambda t: _text(t, f)) if _type(p) == "output_text" else p
    )
    event = _key(event, "item", lambda item: _output_item(item, f))
    return _key(event, "response", lambda r: _responses_answer(r, f))
