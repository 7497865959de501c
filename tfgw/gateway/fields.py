"""The JSON types of the request-body fields the gateway itself reads (the translators, the mock
provider, policy), checked at the edge: a body whose field has another type is a 400 naming the
field and the type it takes, in the route's shape, before anything reads it.

Only what a client of the real API would be refused for is refused: each rule is one the
API's own reference states. Fields the gateway does not read are passed on as they are, and `null`
stands for a field that is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tfgw.errors import BadRequestError

__all__ = [
    "CHAT",
    "MESSAGES",
    "RESPONSES",
    "Field",
    "chat_parts",
    "check",
    "messages_parts",
    "responses_parts",
]


@dataclass(frozen=True, slots=True)
class Field:
    #: what the field takes, as the error says it: "an array of objects"
    says: str
    test: Callable[[Any], bool]


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _chat_tools(value: Any) -> bool:
    return _objects(value) and all(isinstance(tool.get("function", {}), Mapping) for tool in value)


def _choices(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 128


OBJECT = Field("an object", lambda value: isinstance(value, Mapping))
ARRAY = Field("an array", lambda value: isinstance(value, list))
OBJECTS = Field("an array of objects", _objects)

#: chat completions (what the mock provider and the policy read; the rest goes on as it is)
CHAT: Mapping[str, Field] = {
    "messages": OBJECTS,
    "tools": Field("an array of objects, each 'function' an object", _chat_tools),
    "n": Field("an integer from 1 to 128", _choices),
}
#: Anthropic Messages (what `tfgw.formats.messages` reads)
MESSAGES: Mapping[str, Field] = {
    "messages": OBJECTS,
    "tools": ARRAY,
    "stop_sequences": Field("an array of strings", _strings),
}
#: OpenAI Responses (what `tfgw.formats.responses` reads)
RESPONSES: Mapping[str, Field] = {
    "tools": ARRAY,
    "text": OBJECT,
    "reasoning": OBJECT,
}


def check(body: Mapping[str, Any], fields: Mapping[str, Field], parts: Parts | None = None) -> None:
    """Raises a 400 for the first of `fields` whose value in `body` is not what it takes, then for
    the first content part `parts` finds of another shape than its type says."""
    for name, field in fields.items():
        value = body.get(name)
        if value is not None and not field.test(value):
            raise BadRequestError(f"'{name}' must be {field.says}", param=name)
    if parts is not None and (found := parts(body)) is not None:
        where, says = found
        raise BadRequestError(f"'{where}' must be {says}", param=where)


# -- content parts: what a part of each type holds, where the translators and the mock read it --

#: (where, what it must be) of the first part of another shape, or None
Parts = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]

#: a part's type -> (its field read as text or as an object, what it must be)
CHAT_PARTS = {"text": ("text", "a string")}
MESSAGES_PARTS = {"text": ("text", "a string"), "image": ("source", "an object")}
RESPONSES_PARTS = {t: ("text", "a string") for t in ("input_text", "output_text", "text")}
_TESTS: Mapping[str, Callable[[Any], bool]] = {
    "a string": lambda value: isinstance(value, str),
    "an object": lambda value: isinstance(value, Mapping),
}


def _content(content: Any, where: str, kinds: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    """A message's content: a string (or absent) needs nothing; a list's parts are objects, each
    holding what its type says."""
    if not isinstance(content, list):
        return None
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            return f"{where}[{j}]", "an object"
        kind = part.get("type")
        if kind is not None and not isinstance(kind, str):  # an object would not even hash
            return f"{where}[{j}].type", "a string"
        rule = kinds.get(kind)  # type: ignore[arg-type]
        if rule is not None and not _TESTS[rule[1]](part.get(rule[0])):
            return f"{where}[{j}].{rule[0]}", rule[1]
    return None


def _in_messages(body: Mapping[str, Any], kinds: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content")  # a string: the common case, no call
        if (
            isinstance(content, list)
            and (found := _content(content, f"messages[{i}].content", kinds)) is not None
        ):
            return found
    return None


def chat_parts(body: Mapping[str, Any]) -> tuple[str, str] | None:
    return _in_messages(body, CHAT_PARTS)


def messages_parts(body: Mapping[str, Any]) -> tuple[str, str] | None:
    return _in_messages(body, MESSAGES_PARTS) or _content(body.get("system"), "system", MESSAGES_PARTS)


def responses_parts(body: Mapping[str, Any]) -> tuple[str, str] | None:
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, Mapping):
            return f"input[{i}]", "an object"
        content = item.get("content")
        if isinstance(content, list) and (found := _content(content, f"input[{i}].content", RESPONSES_PARTS)):
            return found
    return None
