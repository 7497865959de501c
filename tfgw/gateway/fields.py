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

__all__ = ["CHAT", "MESSAGES", "RESPONSES", "Field", "check"]


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
    "tools": ARRAY,
    "stop_sequences": Field("an array of strings", _strings),
}
#: OpenAI Responses (what `tfgw.formats.responses` reads)
RESPONSES: Mapping[str, Field] = {
    "tools": ARRAY,
    "text": OBJECT,
    "reasoning": OBJECT,
}


def check(body: Mapping[str, Any], fields: Mapping[str, Field]) -> None:
    """Raises a 400 for the first of `fields` whose value in `body` is not what it takes."""
    for name, field in fields.items():
        value = body.get(name)
        if value is not None and not field.test(value):
            raise BadRequestError(f"'{name}' must be {field.says}", param=name)
