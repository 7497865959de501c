"""The one structural validator of trace files: OTLP/JSON lines, checked field by field.

The rules are the OTLP/JSON ones (opentelemetry-proto docs/specification.md, "JSON Protobuf
Encoding"): an `ExportTraceServiceRequest` object per line, lowerCamelCase keys, trace and span ids
as hex, 64-bit integers as decimal strings (JSON numbers are accepted), enums as integers. Every rule
has an id and, in `RULES`, a severity for each `Strictness`:

- `STRICT` is `tfgw traces check`: everything a spec-following reader might refuse or misread is
  reported, with the fix named (an enum name such as `SPAN_KIND_SERVER` is a warning that gives the
  integer).
- `LENIENT` is `tfgw replay`: what can reach the wire faithfully is accepted — enum names are
  converted to integers, empty values are sent as they are, a time before 2000 is a warning — and
  everything else that `check` calls an error is an error too, so a file that passes `check`
  always passes `replay --dry-run`. docs/trace-files.md has the table of differences, and
  tests/tracing/test_verdicts.py pins it.

`Validator` does not decide severities: it reports `(rule, where, message)` to its caller's
`report` and returns, per span, what the caller's own checks need (`SpanFacts`: ids, times, status
code, decoded attributes). `tfgw.tracing.check` adds the cross-line and semantic-convention rules
on top; `tfgw.replay` counts spans, projects and the time range.

Speed: valid ids and times take a fast path; attributes are decoded once, scalars on a fast path;
a resource repeated from the line before is not decoded again.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

from tfgw.tracing import semconv
from tfgw.tracing.otlp.codec import (
    KIND_BY_NAME,
    KIND_NAMES,
    KIND_PREFIX,
    STATUS_BY_NAME,
    STATUS_NAMES,
    STATUS_PREFIX,
)
from tfgw.tracing.otlp.files import is_torn
from tfgw.tracing.otlp.values import BAD, VALUE_KEYS, Problems, decode, json_type

__all__ = [
    "ERROR",
    "IGNORE",
    "RULES",
    "WARNING",
    "Rule",
    "SpanFacts",
    "Strictness",
    "Validator",
    "Where",
    "kind_by_name",
    "status_by_name",
]

ERROR: Final = "error"
WARNING: Final = "warning"
IGNORE: Final = "ignore"


class Strictness(StrEnum):
    STRICT = "strict"  # tfgw traces check
    LENIENT = "lenient"  # tfgw replay


@dataclass(frozen=True, slots=True)
class Rule:
    severity: str  # STRICT
    description: str
    lenient: str | None = None  # LENIENT, when it differs

    def severity_for(self, strictness: Strictness) -> str:
        if strictness is Strictness.LENIENT and self.lenient is not None:
            return self.lenient
        return self.severity


RULES: Final[dict[str, Rule]] = {
    "json": Rule(ERROR, "a line is not valid JSON"),
    "torn-line": Rule(WARNING, "a last line without newline that is not JSON (a crash mid-write)"),
    "structure": Rule(ERROR, "not an ExportTraceServiceRequest: no resourceSpans, or a field mistyped"),
    "snake-case-key": Rule(ERROR, "a snake_case field name (trace_id): OTLP/JSON keys are lowerCamelCase"),
    "trace-id": Rule(ERROR, "traceId missing, not 32 hex digits, or all zero"),
    "span-id": Rule(ERROR, "spanId missing, not 16 hex digits, or all zero"),
    "parent-span-id": Rule(ERROR, "parentSpanId neither empty nor 16 hex digits"),
    "base64-id": Rule(ERROR, "an id in base64 (proto3 JSON's default): OTLP/JSON ids are hex"),
    "time": Rule(ERROR, "a time missing or not a uint64 (a decimal string or a JSON integer)"),
    "time-order": Rule(ERROR, "endTimeUnixNano before startTimeUnixNano"),
    "time-range": Rule(ERROR, "a time before the year 2000: not Unix nanoseconds", lenient=WARNING),
    "kind": Rule(ERROR, "kind neither an integer 0..5 nor a SPAN_KIND_* name"),
    "enum-name": Rule(
        WARNING,
        "kind or status.code as its enum name (SPAN_KIND_SERVER): OTLP/JSON wants the integer",
        lenient=IGNORE,
    ),
    "status": Rule(ERROR, "status not an object with a code 0..2 (or STATUS_CODE_*) and a string message"),
    "attribute": Rule(ERROR, "attributes not [{key, value}] with exactly one AnyValue field; a key twice"),
    "empty-value": Rule(
        WARNING, "an attribute with no value or an empty AnyValue: most backends drop it", lenient=IGNORE
    ),
    "service-name": Rule(WARNING, "a resource without service.name", lenient=IGNORE),
}

# The fields of each OTLP/JSON object a trace file holds: the snake_case spelling of any of them
# is the proto field name, which OTLP/JSON forbids.
LINE_KEYS: Final = frozenset(("resourceSpans",))
RESOURCE_SPANS_KEYS: Final = frozenset(("resource", "scopeSpans", "schemaUrl"))
RESOURCE_KEYS: Final = frozenset(("attributes", "droppedAttributesCount", "entityRefs"))
SCOPE_SPANS_KEYS: Final = frozenset(("scope", "spans", "schemaUrl"))
SCOPE_KEYS: Final = frozenset(("name", "version", "attributes", "droppedAttributesCount"))
SPAN_KEYS: Final = frozenset(
    (
        "traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind", "startTimeUnixNano",
        "endTimeUnixNano", "attributes", "droppedAttributesCount", "events", "droppedEventsCount", "links",
        "droppedLinksCount", "status",
    )
)  # fmt: skip
EVENT_KEYS: Final = frozenset(("timeUnixNano", "name", "attributes", "droppedAttributesCount"))
LINK_KEYS: Final = frozenset(
    ("traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags")
)
STATUS_KEYS: Final = frozenset(("message", "code"))
SPAN_COUNTS: Final = ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount", "flags")


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


_ALL_KEYS = (
    LINE_KEYS | RESOURCE_SPANS_KEYS | RESOURCE_KEYS | SCOPE_SPANS_KEYS | SCOPE_KEYS | SPAN_KEYS | EVENT_KEYS
)
SNAKE_TO_CAMEL: Final = {_snake(k): k for k in _ALL_KEYS | LINK_KEYS | VALUE_KEYS if _snake(k) != k}

YEAR_2000_NS: Final = 946_684_800 * 10**9
U64_MAX: Final = 2**64 - 1
U32_MAX: Final = 2**32 - 1

_HEX32 = re.compile(r"[0-9a-fA-F]{32}").fullmatch
_HEX16 = re.compile(r"[0-9a-fA-F]{16}").fullmatch
_ZERO32 = "0" * 32
_ZERO16 = "0" * 16
_NO_ID: Final = object()

#: where a finding is: (file, line, trace id, span id, span label: its name, else its id)
Where = tuple[str, int, "str | None", "str | None", "str | None"]
Report = Callable[[str, Where, str], None]


def kind_by_name(value: Any) -> int | None:
    """The integer of a SpanKind given by its proto name (`SPAN_KIND_SERVER` → 2), else None."""
    return KIND_BY_NAME.get(value) if type(value) is str else None


def status_by_name(value: Any) -> int | None:
    """The integer of a StatusCode given by its proto name (`STATUS_CODE_ERROR` → 2), else None."""
    return STATUS_BY_NAME.get(value) if type(value) is str else None


@dataclass(slots=True)
class SpanFacts:
    """What a valid-enough span holds, for the caller's own checks (None where a field is invalid)."""

    where: Where
    trace_key: str | None  # the ids lower-cased
    span_key: str | None
    parent_key: str | None
    start: int | None
    end: int | None
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]  # the decoded resource attributes


class Validator:
    """Walks trace file lines, reporting every structural finding to `report`."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self.reported = 0
        self._last_resource: tuple[Any, dict[str, Any]] = (None, {})  # raw attributes, decoded
        self._last_trace_id: object = _NO_ID  # the last valid traceId (ids repeat within a line)
        self._last_trace_key: str | None = None

    def report(self, rule: str, where: Where, message: str) -> None:
        self.reported += 1
        self._report(rule, where, message)

    # -- lines ---------------------------------------------------------------------------------

    def stream(self, name: str, lines: Iterable[bytes]) -> Iterator[tuple[int, list[SpanFacts]]]:
        """`(line number, its spans)` for every line that is JSON; a blank line is skipped, a
        torn last line reported as `torn-line`, any other non-JSON line as `json`."""
        lineno = 0
        for raw in lines:
            lineno += 1
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if not raw.strip():
                    continue
                where: Where = (name, lineno, None, None, None)
                if is_torn(raw):
                    self.report(
                        "torn-line", where, f"the last line is cut short ({len(raw)} bytes, no newline)"
                    )
                else:
                    self.report("json", where, f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
                continue
            yield lineno, self.line(data, name, lineno)

    def line(self, data: Any, file: str, lineno: int) -> list[SpanFacts]:
        where: Where = (file, lineno, None, None, None)
        if type(data) is not dict:
            message = f"a line must be an object with resourceSpans, not {json_type(data)}"
            self.report("structure", where, message)
            return []
        data = self.camel_keys(data, LINE_KEYS, where)
        resource_spans = data.get("resourceSpans")
        if type(resource_spans) is not list:
            if resource_spans is None:
                self.report("structure", where, "no resourceSpans: not an ExportTraceServiceRequest")
            else:
                self.report("structure", where, f"resourceSpans is {json_type(resource_spans)}, not a list")
            return []
        out: list[SpanFacts] = []
        for rs in resource_spans:
            if type(rs) is not dict:
                self.report("structure", where, f"a resourceSpans item is {json_type(rs)}, not an object")
                continue
            rs = self.camel_keys(rs, RESOURCE_SPANS_KEYS, where)
            self.string(rs, "schemaUrl", where)
            resource = self.resource(rs.get("resource"), where)
            scope_spans = rs.get("scopeSpans")
            if scope_spans is None:
                continue
            if type(scope_spans) is not list:
                self.report("structure", where, f"scopeSpans is {json_type(scope_spans)}, not a list")
                continue
            for ss in scope_spans:
                self.scope_spans(ss, resource, where, out)
        return out

    def resource(self, res: Any, where: Where) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if type(res) is dict:
            res = self.camel_keys(res, RESOURCE_KEYS, where)
            raw = res.get("attributes")
            if raw is not None and raw == self._last_resource[0]:
                attrs = self._last_resource[1]  # a writer repeats its resource on every line
            else:
                before = self.reported
                attrs = self.attributes(raw, where, "resource attribute")
                if self.reported == before:
                    self._last_resource = (raw, attrs)
            self.count(res, "droppedAttributesCount", where, "resource ")
        elif res is not None:
            self.report("structure", where, f"resource is {json_type(res)}, not an object")
        service = attrs.get(semconv.SERVICE_NAME)
        if type(service) is not str or not service:
            self.report("service-name", where, "the resource has no service.name")
        return attrs

    def scope_spans(self, ss: Any, resource: dict[str, Any], where: Where, out: list[SpanFacts]) -> None:
        if type(ss) is not dict:
            self.report("structure", where, f"a scopeSpans item is {json_type(ss)}, not an object")
            return
        ss = self.camel_keys(ss, SCOPE_SPANS_KEYS, where)
        self.string(ss, "schemaUrl", where)
        scope = ss.get("scope")
        if type(scope) is dict:
            scope = self.camel_keys(scope, SCOPE_KEYS, where)
            self.string(scope, "name", where, "scope ")
            self.string(scope, "version", where, "scope ")
            self.attributes(scope.get("attributes"), where, "scope attribute")
            self.count(scope, "droppedAttributesCount", where, "scope ")
        elif scope is not None:
            self.report("structure", where, f"scope is {json_type(scope)}, not an object")
        spans = ss.get("spans")
        if spans is None:
            return
        if type(spans) is not list:
            self.report("structure", where, f"spans is {json_type(spans)}, not a list")
            return
        file, lineno = where[0], where[1]
        for span in spans:
            if type(span) is dict:
                out.append(self.span(span, resource, file, lineno))
            else:
                self.report("structure", where, f"a span is {json_type(span)}, not an object")

    def camel_keys(self, obj: dict[str, Any], known: frozenset[str], where: Where) -> dict[str, Any]:
        """obj, with any snake_case OTLP field reported and renamed so the other checks still run."""
        if known.issuperset(obj):
            return obj
        obj, snake = _camel(obj)
        self.snake_keys(snake, where)
        return obj

    def snake_keys(self, keys: list[str], where: Where) -> None:
        for key in keys:
            message = f"{key!r} is snake_case: OTLP/JSON uses {SNAKE_TO_CAMEL[key]!r}"
            self.report("snake-case-key", where, message)

    def string(self, obj: dict[str, Any], field: str, where: Where, what: str = "") -> None:
        value = obj.get(field)
        if value is not None and type(value) is not str:
            self.report("structure", where, f"{what}{field} is {json_type(value)}, not a string")

    def count(self, obj: dict[str, Any], field: str, where: Where, what: str = "") -> None:
        value = obj.get(field)
        if value is not None and not (type(value) is int and 0 <= value <= U32_MAX):
            self.report("structure", where, f"{what}{field} {value!r} is not an integer 0..{U32_MAX}")

    # -- spans ---------------------------------------------------------------------------------

    def span(self, span: dict[str, Any], resource: dict[str, Any], file: str, lineno: int) -> SpanFacts:
        snake: list[str] = []
        if not SPAN_KEYS.issuperset(span):
            span, snake = _camel(span)
        trace_id: Any = span.get("traceId")
        span_id: Any = span.get("spanId")
        name = span.get("name")
        tid = trace_id if type(trace_id) is str else None
        sid = span_id if type(span_id) is str else None
        where: Where = (file, lineno, tid, sid, name if type(name) is str and name else sid)
        if snake:
            self.snake_keys(snake, where)
        if name is not None and type(name) is not str:
            self.report("structure", where, f"name is {json_type(name)}, not a string")
        if "traceState" in span:
            self.string(span, "traceState", where)
        trace_key, span_key, parent_key = self.ids(span, trace_id, span_id, where)
        start, end = self.times(span, where)
        kind = span.get("kind")
        if kind is not None and not (type(kind) is int and 0 <= kind <= 5):
            self.enum("kind", kind, kind_by_name(kind), KIND_NAMES, KIND_PREFIX, where)
        status_code = 0
        status = span.get("status")
        if status is not None and (status or type(status) is not dict):
            status_code = self.status(status, where)
        if not span.keys().isdisjoint(SPAN_COUNTS):
            for field in SPAN_COUNTS:
                self.count(span, field, where)
        attrs = self.attributes(span.get("attributes"), where, "attribute")
        events = span.get("events")
        if events is not None:
            self.events(events, where)
        links = span.get("links")
        if links is not None:
            self.links(links, where)
        return SpanFacts(where, trace_key, span_key, parent_key, start, end, status_code, attrs, resource)

    def ids(self, span: dict[str, Any], trace_id: Any, span_id: Any, where: Where) -> tuple[Any, Any, Any]:
        """The lower-cased trace, span and parent ids (None where missing or invalid)."""
        tkey: str | None
        if trace_id == self._last_trace_id:
            tkey = self._last_trace_key
        elif (problem := _id_problem(trace_id, "traceId", 32, "trace-id")) is None:
            tkey = self._last_trace_key = trace_id.lower()
            self._last_trace_id = trace_id
        else:
            self.report(problem[0], where, problem[1])
            tkey = where[2] or None
        skey: str | None
        if type(span_id) is str and _HEX16(span_id) and span_id != _ZERO16:
            skey = span_id.lower()
        else:
            problem = _id_problem(span_id, "spanId", 16, "span-id")
            if problem is not None:
                self.report(problem[0], where, problem[1])
            skey = where[3] or None
        parent = span.get("parentSpanId")
        if parent is None or parent == "" or parent == _ZERO16:
            return tkey, skey, None
        if type(parent) is str and _HEX16(parent):
            return tkey, skey, parent.lower()
        problem = _id_problem(parent, "parentSpanId", 16, "parent-span-id", zero_ok=True)
        if problem is not None:
            self.report(problem[0], where, problem[1])
        return tkey, skey, parent if type(parent) is str else None

    def times(self, span: dict[str, Any], where: Where) -> tuple[int | None, int | None]:
        # 19 digits: Unix nanoseconds from 2001 to 2286, the fast path
        start = span.get("startTimeUnixNano")
        if type(start) is str and len(start) == 19 and start.isascii() and start.isdigit():
            start = int(start)
        else:
            start = self.nanos(span, "startTimeUnixNano", where)
        end = span.get("endTimeUnixNano")
        if type(end) is str and len(end) == 19 and end.isascii() and end.isdigit():
            end = int(end)
        else:
            end = self.nanos(span, "endTimeUnixNano", where)
        if start is not None and end is not None and end < start:
            message = f"endTimeUnixNano is {(start - end) / 1e6:.3f} ms before startTimeUnixNano"
            self.report("time-order", where, message)
            end = None
        return start, end

    def nanos(self, obj: dict[str, Any], field: str, where: Where, what: str = "") -> int | None:
        value = obj.get(field)
        n = _uint64(value)
        if n is None:
            problem = "missing" if value is None else f"{value!r}, not a uint64 (decimal string or integer)"
            self.report("time", where, f"{what}{field} is {problem}")
        elif n < YEAR_2000_NS:
            self.report(
                "time-range", where, f"{what}{field} {value!r} is before 2000-01-01: not Unix nanoseconds"
            )
        return n

    def enum(
        self, field: str, value: Any, named: int | None, names: dict[int, str], prefix: str, where: Where
    ) -> None:
        if named is not None:
            self.report(
                "enum-name",
                where,
                f"{field} {value!r} is an enum name: OTLP/JSON enums are integers ({named})",
            )
            return
        rule = "kind" if field == "kind" else "status"
        self.report(rule, where, f"{field} {value!r} is not an integer 0..{len(names) - 1} (or {prefix}*)")

    def status(self, status: Any, where: Where) -> int:
        if type(status) is not dict:
            self.report("status", where, f"status is {json_type(status)}, not an object")
            return 0
        status = self.camel_keys(status, STATUS_KEYS, where)
        code = status.get("code", 0)
        message = status.get("message")
        if message is not None and type(message) is not str:
            self.report("status", where, f"status.message is {json_type(message)}, not a string")
        if type(code) is int and 0 <= code <= 2:
            return code
        named = status_by_name(code)
        self.enum("status.code", code, named, STATUS_NAMES, STATUS_PREFIX, where)
        return named or 0

    def events(self, events: Any, where: Where) -> None:
        if type(events) is not list:
            self.report("structure", where, f"events is {json_type(events)}, not a list")
            return
        for event in events:
            if type(event) is not dict:
                self.report("structure", where, f"an event is {json_type(event)}, not an object")
                continue
            event = self.camel_keys(event, EVENT_KEYS, where)
            time = event.get("timeUnixNano")
            if not (type(time) is str and len(time) == 19 and time.isascii() and time.isdigit()):
                self.nanos(event, "timeUnixNano", where, "event ")
            self.string(event, "name", where, "event ")
            if event.get("attributes"):
                self.attributes(event["attributes"], where, "event attribute")
            self.count(event, "droppedAttributesCount", where, "event ")

    def links(self, links: Any, where: Where) -> None:
        if type(links) is not list:
            self.report("structure", where, f"links is {json_type(links)}, not a list")
            return
        for link in links:
            if type(link) is not dict:
                self.report("structure", where, f"a link is {json_type(link)}, not an object")
                continue
            link = self.camel_keys(link, LINK_KEYS, where)
            for field, digits, rule in (("traceId", 32, "trace-id"), ("spanId", 16, "span-id")):
                problem = _id_problem(link.get(field), f"link {field}", digits, rule)
                if problem is not None:
                    self.report(problem[0], where, problem[1])
            self.string(link, "traceState", where, "link ")
            self.attributes(link.get("attributes"), where, "link attribute")
            self.count(link, "droppedAttributesCount", where, "link ")
            self.count(link, "flags", where, "link ")

    # -- attributes ----------------------------------------------------------------------------

    def attributes(self, kvs: Any, where: Where, what: str) -> dict[str, Any]:
        """The attributes as a dict, decoded once; every malformed one reported and left out."""
        if kvs is None:
            return {}
        if type(kvs) is not list:
            self.report("attribute", where, f"{what}s are {json_type(kvs)}, not a list")
            return {}
        out: dict[str, Any] = {}
        bad = 0
        for kv in kvs:
            # the fast path: a well-formed scalar attribute, what tfgw writes; decode() for the rest
            if type(kv) is dict and len(kv) == 2:
                key = kv.get("key")
                value = kv.get("value")
                if type(key) is str and type(value) is dict and len(value) == 1:
                    v = value.get("stringValue")
                    if type(v) is str:
                        out[key] = v
                        continue
                    v = value.get("intValue")
                    if v is not None:
                        if type(v) is str and len(v) < 19 and v.isascii() and v.isdigit():
                            out[key] = int(v)
                            continue
                    elif (
                        type(v := value.get("doubleValue")) is float
                        or type(v := value.get("boolValue")) is bool
                    ):
                        out[key] = v
                        continue
            if not self.attribute(kv, out, where, what):
                bad += 1
        if len(out) != len(kvs) - bad:
            self.duplicates(kvs, where, what)
        return out

    def duplicates(self, kvs: list[Any], where: Where, what: str) -> None:
        seen: set[str] = set()
        for kv in kvs:
            key = kv.get("key") if type(kv) is dict else None
            if type(key) is str:
                if key in seen:
                    self.report("attribute", where, f"{what} {key!r} appears more than once")
                seen.add(key)

    def attribute(self, kv: Any, out: dict[str, Any], where: Where, what: str) -> bool:
        if type(kv) is not dict:
            self.report("attribute", where, f"an {what} is {json_type(kv)}, not a {{key, value}} object")
            return False
        key = kv.get("key")
        if type(key) is not str:
            self.report("attribute", where, f"an {what} has no string key")
            return False
        if "value" not in kv:
            self.report("empty-value", where, f"{what} {key!r} has no value")
            out[key] = None
            return True
        problems: Problems = []
        value = decode(kv["value"], problems)
        for rule, message in problems:
            self.report(rule, where, f"{what} {key!r}: {message}")
        if value is BAD:
            return False
        out[key] = value
        return True


def _camel(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """obj with its snake_case OTLP field names in lowerCamelCase, and the names it renamed."""
    snake = [k for k in obj if k in SNAKE_TO_CAMEL]
    if not snake:
        return obj, snake
    return {SNAKE_TO_CAMEL.get(k, k): v for k, v in obj.items()}, snake


def _id_problem(
    value: Any, field: str, digits: int, rule: str, *, zero_ok: bool = False
) -> tuple[str, str] | None:
    """None for a valid hex id, else (rule, message)."""
    if value is None:
        return rule, f"{field} is missing"
    if type(value) is not str:
        return rule, f"{field} is {json_type(value)}, not a hex string"
    if (_HEX32 if digits == 32 else _HEX16)(value):
        if not zero_ok and value == (_ZERO32 if digits == 32 else _ZERO16):
            return rule, f"{field} is all zero: an invalid id"
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == digits // 2:
        return "base64-id", f"{field} {value!r} is base64: OTLP/JSON ids are hex ({raw.hex()})"
    return rule, f"{field} {value!r} is not {digits} hex digits"


def _uint64(value: Any) -> int | None:
    if type(value) is str:
        if value.isascii() and value.isdigit():
            n = int(value)
            return n if n <= U64_MAX else None
        return None
    if type(value) is int and 0 <= value <= U64_MAX:
        return value
    return None
