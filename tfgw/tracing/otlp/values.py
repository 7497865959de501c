"""Reading OTLP/JSON attribute values strictly: every malformed `AnyValue` said, never guessed.

`decode(value, problems)` turns an `AnyValue` into a Python value (int64 as int, double as float,
arrays as lists, kvlists as dicts, bytes kept as their base64 text) and appends `(rule, message)`
for whatever is wrong with it. It returns `BAD` when the value cannot be read at all, and `None`
for an empty `AnyValue` (`{}`, valid proto3 JSON for "no value"), which it reports under the rule
`empty-value` so a caller can decide how much that matters (`tfgw.tracing.otlp.validate`).

`json_type` and `value_type` name a value's type the way messages say it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

from tfgw.tracing.otlp.codec import INT64_MAX, INT64_MIN

__all__ = ["BAD", "MAX_VALUE_DEPTH", "VALUE_KEYS", "Problems", "decode", "json_type", "value_type"]

VALUE_KEYS: Final = frozenset(
    ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue")
)
SNAKE_VALUE_KEYS: Final = {
    "string_value": "stringValue",
    "bool_value": "boolValue",
    "int_value": "intValue",
    "double_value": "doubleValue",
    "array_value": "arrayValue",
    "kvlist_value": "kvlistValue",
    "bytes_value": "bytesValue",
}
MAX_VALUE_DEPTH: Final = 32

#: what is wrong with a value: (rule id, message)
Problems = list[tuple[str, str]]

BAD: Final[Any] = object()
_INT64 = re.compile(r"-?[0-9]+").fullmatch


def decode(value: Any, problems: Problems, depth: int = 0) -> Any:
    """An OTLP/JSON AnyValue as a Python value; `BAD` if unreadable, None if empty."""
    if type(value) is not dict:
        problems.append(("attribute", f"value is {json_type(value)}, not an AnyValue object"))
        return BAD
    if len(value) != 1:
        if not value:
            problems.append(("empty-value", "the AnyValue is empty: no value is set"))
            return None
        fields = ", ".join(sorted(value))
        problems.append(("attribute", f"the AnyValue has {len(value)} fields ({fields}): exactly one"))
        return BAD
    ((field, v),) = value.items()
    if field not in VALUE_KEYS:
        camel = SNAKE_VALUE_KEYS.get(field)
        if camel is None:
            problems.append(("attribute", f"{field!r} is not an AnyValue field"))
            return BAD
        problems.append(("snake-case-key", f"{field!r} is snake_case: OTLP/JSON uses {camel!r}"))
        field = camel
    if field == "arrayValue" or field == "kvlistValue":
        return _nested(field, v, problems, depth)
    scalar = _scalar(field, v)
    if scalar is BAD:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
        problems.append(("attribute", f"{field} {shown} is not a valid {field}"))
    return scalar


def _scalar(field: str, v: Any) -> Any:
    if field == "stringValue":
        return v if type(v) is str else BAD
    if field == "boolValue":
        return v if type(v) is bool else BAD
    if field == "intValue":
        if type(v) is int and INT64_MIN <= v <= INT64_MAX:
            return v
        if type(v) is str and _INT64(v) and INT64_MIN <= (n := int(v)) <= INT64_MAX:
            return n
        return BAD
    if field == "doubleValue":
        if type(v) is float or type(v) is int:
            return float(v)
        if type(v) is str:
            try:
                return float(v)  # "NaN", "Infinity", "-Infinity", as proto3 JSON writes them
            except ValueError:
                return BAD
        return BAD
    # bytesValue
    if type(v) is str:
        try:
            base64.b64decode(v, validate=True)
            return v
        except (binascii.Error, ValueError):
            pass
    return BAD


def _nested(field: str, v: Any, problems: Problems, depth: int) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        problems.append(("attribute", f"values nested deeper than {MAX_VALUE_DEPTH}"))
        return BAD
    if type(v) is not dict or type(items := v.get("values", [])) is not list:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
        problems.append(("attribute", f"{field} {shown} is not a valid {field}"))
        return BAD
    if field == "arrayValue":
        out = [decode(x, problems, depth + 1) for x in items]
        return BAD if any(x is BAD for x in out) else out
    kv: dict[str, Any] = {}
    for item in items:
        key = item.get("key") if type(item) is dict else None
        if type(key) is not str:
            problems.append(("attribute", "a kvlistValue item is not a {key, value} object"))
            return BAD
        if "value" not in item:
            problems.append(("empty-value", f"kvlistValue item {key!r} has no value"))
            kv[key] = None
            continue
        x = decode(item["value"], problems, depth + 1)
        if x is BAD:
            return BAD
        kv[key] = x
    return kv


def json_type(value: Any) -> str:
    """How a JSON value reads in a message: "null", "a boolean", "a number", "a string", ...."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int or type(value) is float:
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "an object"


def value_type(value: Any) -> str:
    """The AnyValue type a decoded attribute value had."""
    if value is None:
        return "an empty value"
    if type(value) is bool:
        return "a bool"
    if type(value) is int:
        return "an int"
    if type(value) is float:
        return "a double"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "a kvlist"
