"""OTLP/JSON trace-file lines → OTLP protobuf, one resource, scope or span at a time.

`tfgw.export.encode` cuts lines into batches; `ProtobufFormat` gives it each part's exact bytes and
frames a batch of them as an `ExportTraceServiceRequest`, so every span's size is known for
batching and a body is joined once, with no copying of the spans.

Spans, resources and scopes are written here, field by field (opentelemetry-proto's trace.proto,
resource.proto and common.proto give the numbers and wire types), for the shapes tfgw writes: ids,
name, kind, times, string, int, double and bool attributes, arrays of strings, events, a status,
a resource's attributes, a scope's name and version. Anything else (links, dropped counts on a
span, flags, bytes or kvlist values, a value of an unexpected type) goes to opentelemetry-proto's
own classes (upb), imported only then: an exporter that never meets such a shape never loads
protobuf's runtime (about 4 MiB). Either way the bytes are protobuf's canonical serialization,
fields in number order; a test compares the two writers on every field.

The attributes are most of the work and repeat from span to span (model, provider, roles, token
counts...): each short scalar attribute's bytes are kept for reuse. A value that breaks the
OTLP/JSON rules (a bad id, say) raises ValueError or TypeError, the same one either way.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from tfgw.tracing import otlp

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["ProtobufFormat"]

#: AnyValue kinds whose attribute bytes are cached, keyed by (key, kind, JSON value)
_SCALAR = frozenset(("intValue", "boolValue", "doubleValue"))
_CACHED_STRING = 128
#: entries of each memo before it is cleared: what repeats from span to span (models, providers,
#: roles, names, token counts) is far fewer, and each entry a span's unique values (ids, short
#: texts) take is held until the clear: 20,000 held ~6 MiB more of the exporter's peak RSS for no
#: CPU it saved (bench/README.md, "Memory of the tree")
_CACHE_SIZE = 4_096

_FIXED64 = struct.Struct("<Q").pack
_TIMES = struct.Struct("<BQBQ").pack  # span fields 7 and 8, both fixed64
_DOUBLE = struct.Struct("<d").pack
_U64 = 1 << 64
_I64 = 1 << 63
_U31 = 1 << 31
_U32 = 1 << 32
#: the one-byte varints
_BYTE = [bytes((n,)) for n in range(128)]


class ProtobufFormat:
    """OTLP protobuf (grpc, http/protobuf), one part at a time, for `tfgw.export.encode` to batch."""

    #: an upper bound of what framing a span costs in a batch: a tag and a length of ≤ 5 bytes
    per_span = 6

    def __init__(self) -> None:
        #: the bytes of short attributes, keyed by (key, text) and (key, kind, JSON value); a memo
        #: shared by every call and thread, so a clear() at any time is harmless
        self._strings: dict[tuple[str, str], bytes] = {}
        self._scalars: dict[tuple[str, str, Any], bytes] = {}
        self._names: dict[tuple[str, int], bytes] = {}

    def overhead(self, group: tuple[bytes, bytes]) -> int:
        """An upper bound of what a (resource, scope) group costs a batch beyond its spans."""
        # ResourceSpans and ScopeSpans: a tag and a length (≤ 5 bytes) each, plus their fields
        return 12 + len(group[0]) + len(group[1])

    def resource(self, resource: Mapping[str, Any], schema_url: str) -> bytes:
        """`ResourceSpans` fields 1 (the `Resource`) and 3 (its schema URL)."""
        data = _resource(resource)
        return _field(1, _resource_upb(resource) if data is None else data) + _schema_url(schema_url)

    def scope(self, scope: Mapping[str, Any], schema_url: str) -> bytes:
        """`ScopeSpans` fields 1 (the `InstrumentationScope`) and 3 (its schema URL)."""
        data = _scope(scope)
        return _field(1, _scope_upb(scope) if data is None else data) + _schema_url(schema_url)

    def span(self, span: Mapping[str, Any]) -> bytes:
        """The span's protobuf, fields in number order. Its attributes (field 9) are encoded
        first, so a bad one is the error raised, as it always was."""
        parts = self._attributes(span.get("attributes") or ())
        parts.insert(0, _span_head(span, self._names))
        parts.append(_span_tail(span))
        return b"".join(parts)

    def _attributes(self, attributes: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """Span field 9, one bytes per attribute."""
        strings, scalars = self._strings, self._scalars
        out = []
        for kv in attributes:
            value = kv.get("value")
            if not value or len(value) != 1:
                out.append(_field(9, _keyvalue(kv)))
                continue
            text = value.get("stringValue")
            if text is not None:  # the common case
                if len(text) > _CACHED_STRING:
                    out.append(_string_attribute(kv["key"], text))
                    continue
                key = (kv["key"], text)
                data = strings.get(key)
                if data is None:
                    if len(strings) >= _CACHE_SIZE:
                        strings.clear()
                    data = strings[key] = _string_attribute(kv["key"], text)
                out.append(data)
                continue
            [(kind, v)] = value.items()
            if kind not in _SCALAR:
                out.append(_field(9, _other_keyvalue(kv) or _keyvalue(kv)))
                continue
            scalar_key = (kv["key"], kind, v)
            data = scalars.get(scalar_key)
            if data is None:
                if len(scalars) >= _CACHE_SIZE:
                    scalars.clear()
                data = scalars[scalar_key] = _field(9, _scalar_keyvalue(kv) or _keyvalue(kv))
            out.append(data)
        return out

    def frame(self, resources: Mapping[bytes, Mapping[bytes, list[bytes]]]) -> bytes:
        """The request's body: encoded resource -> encoded scope -> encoded spans, in order,
        joined once."""
        out: list[bytes] = []
        for rkey, scopes in resources.items():
            resource, resource_schema = _and_schema_url(rkey)
            rs: list[bytes] = [resource]
            for skey, spans in scopes.items():
                scope, scope_schema = _and_schema_url(skey)
                ss = [scope]
                for data in spans:
                    ss += (b"\x12", _varint(len(data)), data)
                ss.append(scope_schema)  # field 3, after the spans (2): protobuf's own order
                rs += (b"\x12", _varint(sum(map(len, ss))), *ss)
            rs.append(resource_schema)
            out += (b"\x0a", _varint(sum(map(len, rs))), *rs)
        return b"".join(out)


def _and_schema_url(part: bytes) -> tuple[bytes, bytes]:
    """A resource's or scope's encoded fields as (its field 1, its schema_url field after it)."""
    length, shift, i = 0, 0, 1  # part[0] is field 1's tag
    while True:
        byte = part[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    return part[: i + length], part[i + length :]


def _varint(n: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if n < 0x80:
        return _BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return bytes((number << 3 | 2,)) + _varint(len(data)) + data


def _text(tag: bytes, text: str) -> tuple[bytes, bytes, bytes]:
    """A string field: its tag, length and UTF-8, to join."""
    data = text.encode()
    return tag, _varint(len(data)), data


def _schema_url(url: str) -> bytes:
    return _field(3, url.encode()) if url else b""


#: OTLP/JSON writes enums as integers, but may use their protobuf names (the trace-file format's own
#: tables, `tfgw.tracing.otlp`)
_KINDS = otlp.KIND_BY_NAME
_CODES = otlp.STATUS_BY_NAME


def _enum(value: Any, names: Mapping[str, int]) -> int | None:
    """An enum's number in 1..2^31, or None for anything else (protobuf's own path decides)."""
    number = names.get(value) if type(value) is str else value
    return number if type(number) is int and 0 < number < _U31 else None


def _span_head(s: Mapping[str, Any], names: dict[tuple[str, int], bytes]) -> bytes:
    """Span fields 1-8: ids, trace state, name, kind, times. `names` keeps the bytes of
    fields 5 and 6 (name and kind), which repeat from span to span."""
    trace_id = bytes.fromhex(s["traceId"])
    if len(trace_id) != 16:
        _id(s["traceId"], 16)  # raises
    span_id = bytes.fromhex(s["spanId"])
    if len(span_id) != 8:
        _id(s["spanId"], 8)
    parent = s.get("parentSpanId")
    parent_id = b"\x22\x08" + _id(parent, 8) if parent else b""
    if s.get("traceState"):
        return _span_head_upb(s)
    name, kind = s.get("name"), s.get("kind")
    key = (name, kind) if type(name) is str and type(kind) is int else None
    name_kind = names.get(key) if key is not None else None
    if name_kind is None:
        name_kind = _name_kind(name, kind)
        if name_kind is None:
            return _span_head_upb(s)
        if key is not None:
            if len(names) >= _CACHE_SIZE:
                names.clear()
            names[key] = name_kind
    start, end = int(s.get("startTimeUnixNano") or 0), int(s.get("endTimeUnixNano") or 0)
    if 0 < start < _U64 and 0 < end < _U64:
        times = _TIMES(0x39, start, 0x41, end)
    elif 0 <= start < _U64 and 0 <= end < _U64:  # a time of 0 is not written
        times = (b"\x39" + _FIXED64(start) if start else b"") + (b"\x41" + _FIXED64(end) if end else b"")
    else:
        return _span_head_upb(s)
    return b"".join((b"\x0a\x10", trace_id, b"\x12\x08", span_id, parent_id, name_kind, times))


def _name_kind(name: Any, kind: Any) -> bytes | None:
    """Span fields 5 and 6, or None when protobuf's own path is to say what they are."""
    parts: list[bytes] = []
    if name:
        if type(name) is not str:
            return None
        parts += _text(b"\x2a", name)
    if kind:
        number = _enum(kind, _KINDS)
        if number is None:
            return None
        parts += (b"\x30", _varint(number))
    return b"".join(parts)


def _span_tail(s: Mapping[str, Any]) -> bytes:
    """Span fields 10-16: events and the status (any other field: `_span_tail_upb`)."""
    if (
        s.get("droppedAttributesCount")
        or s.get("droppedEventsCount")
        or s.get("links")
        or s.get("droppedLinksCount")
        or s.get("flags")
    ):
        return _span_tail_upb(s)
    parts: list[bytes] = []
    for e in s.get("events") or ():
        event = _event(e)
        if event is None:
            return _span_tail_upb(s)
        parts += (b"\x5a", _varint(len(event)), event)
    status = s.get("status")
    if status is not None:
        if type(status) is not dict:
            return _span_tail_upb(s)
        fields: list[bytes] = []
        message, code = status.get("message"), status.get("code")
        if message:
            if type(message) is not str:
                return _span_tail_upb(s)
            fields += _text(b"\x12", message)
        if code:
            number = _enum(code, _CODES)
            if number is None:
                return _span_tail_upb(s)
            fields += (b"\x18", _varint(number))
        data = b"".join(fields)
        parts += (b"\x7a", _varint(len(data)), data)
    return b"".join(parts)


def _event(e: Any) -> bytes | None:
    """An `Event` of a span, or None when it is not a shape written here."""
    if type(e) is not dict or e.get("droppedAttributesCount"):
        return None
    parts: list[bytes] = []
    nanos = int(e.get("timeUnixNano") or 0)
    if nanos:
        if not 0 < nanos < _U64:
            return None
        parts += (b"\x09", _FIXED64(nanos))
    name = e.get("name")
    if name:
        if type(name) is not str:
            return None
        parts += _text(b"\x12", name)
    for kv in e.get("attributes") or ():
        item = _string_keyvalue(kv) or _scalar_keyvalue(kv)
        if item is None:
            return None
        parts += (b"\x1a", _varint(len(item)), item)
    return b"".join(parts)


# -- resources and scopes: Resource{attributes = 1, dropped_attributes_count = 2},
# InstrumentationScope{name = 1, version = 2, attributes = 3, dropped_attributes_count = 4}


def _resource(resource: Mapping[str, Any]) -> bytes | None:
    """A `Resource`, or None when protobuf's own path is to say what it is."""
    parts = _keyvalues(b"\x0a", resource.get("attributes"))
    dropped = _count(b"\x10", resource.get("droppedAttributesCount"))
    return None if parts is None or dropped is None else b"".join((*parts, dropped))


def _scope(scope: Mapping[str, Any]) -> bytes | None:
    """An `InstrumentationScope`, or None when protobuf's own path is to say what it is."""
    parts: list[bytes] = []
    for tag, text in ((b"\x0a", scope.get("name")), (b"\x12", scope.get("version"))):
        if text:
            if type(text) is not str:
                return None
            parts += _text(tag, text)
    attributes = _keyvalues(b"\x1a", scope.get("attributes"))
    dropped = _count(b"\x20", scope.get("droppedAttributesCount"))
    return None if attributes is None or dropped is None else b"".join((*parts, *attributes, dropped))


def _keyvalues(tag: bytes, attributes: Any) -> list[bytes] | None:
    """A repeated `KeyValue` field, each of the shapes written here; protobuf's own classes write
    any other (the same bytes), or raise for it. None when `attributes` is not a list."""
    if not attributes:
        return []
    if type(attributes) is not list:
        return None
    parts: list[bytes] = []
    for kv in attributes:
        item = _string_keyvalue(kv) or _scalar_keyvalue(kv)
        if item is None and type(kv) is dict and type(kv.get("value")) is dict:
            item = _other_keyvalue(kv)
        if item is None:
            item = _keyvalue(kv)
        parts += (tag, _varint(len(item)), item)
    return parts


def _count(tag: bytes, value: Any) -> bytes | None:
    """A uint32 count field (b"" for none), or None for a value protobuf's own path is to check."""
    if not value:
        return b""
    return tag + _varint(value) if type(value) is int and 0 < value < _U32 else None


def _resource_upb(resource: Mapping[str, Any]) -> bytes:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    message = Resource()
    _attributes(message.attributes, resource.get("attributes"))
    if resource.get("droppedAttributesCount"):
        message.dropped_attributes_count = resource["droppedAttributesCount"]
    data: bytes = message.SerializeToString()
    return data


def _scope_upb(scope: Mapping[str, Any]) -> bytes:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

    message = InstrumentationScope()
    if scope.get("name"):
        message.name = scope["name"]
    if scope.get("version"):
        message.version = scope["version"]
    _attributes(message.attributes, scope.get("attributes"))
    if scope.get("droppedAttributesCount"):
        message.dropped_attributes_count = scope["droppedAttributesCount"]
    data: bytes = message.SerializeToString()
    return data


# -- what opentelemetry-proto's classes write (imported on first use: a process that never meets
# these shapes never loads protobuf's runtime)


def _span_head_upb(s: Mapping[str, Any]) -> bytes:
    """Span fields 1-8 by protobuf's own classes."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    span = Span()
    span.trace_id = _id(s["traceId"], 16)
    span.span_id = _id(s["spanId"], 8)
    parent = s.get("parentSpanId")
    if parent:
        span.parent_span_id = _id(parent, 8)
    if s.get("traceState"):
        span.trace_state = s["traceState"]
    span.name = s.get("name") or ""
    kind = s.get("kind")
    if kind:
        span.kind = cast(Any, _KINDS[kind] if isinstance(kind, str) else kind)  # protobuf checks it
    span.start_time_unix_nano = int(s.get("startTimeUnixNano") or 0)
    span.end_time_unix_nano = int(s.get("endTimeUnixNano") or 0)
    data: bytes = span.SerializeToString()
    return data


def _span_tail_upb(s: Mapping[str, Any]) -> bytes:
    """Span fields 10-16 by protobuf's own classes: dropped counts, events, links, status, flags."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    span = Span()
    if s.get("droppedAttributesCount"):
        span.dropped_attributes_count = s["droppedAttributesCount"]
    for e in s.get("events") or ():
        event = span.events.add()
        event.time_unix_nano = int(e.get("timeUnixNano") or 0)
        event.name = e.get("name") or ""
        _attributes(event.attributes, e.get("attributes"))
        if e.get("droppedAttributesCount"):
            event.dropped_attributes_count = e["droppedAttributesCount"]
    if s.get("droppedEventsCount"):
        span.dropped_events_count = s["droppedEventsCount"]
    for li in s.get("links") or ():
        link = span.links.add()
        link.trace_id = _id(li["traceId"], 16)
        link.span_id = _id(li["spanId"], 8)
        if li.get("traceState"):
            link.trace_state = li["traceState"]
        _attributes(link.attributes, li.get("attributes"))
        if li.get("droppedAttributesCount"):
            link.dropped_attributes_count = li["droppedAttributesCount"]
        if li.get("flags"):
            link.flags = li["flags"]
    if s.get("droppedLinksCount"):
        span.dropped_links_count = s["droppedLinksCount"]
    status = s.get("status")
    if status is not None:
        span.status.SetInParent()
        if status.get("message"):
            span.status.message = status["message"]
        code = status.get("code")
        if code:
            span.status.code = cast(Any, _CODES[code] if isinstance(code, str) else code)
    if s.get("flags"):
        span.flags = s["flags"]
    data: bytes = span.SerializeToString()
    return data


# -- attributes: KeyValue{key = 1, value = 2: AnyValue{string 1, bool 2, int 3, double 4, array 5}}


def _string_attribute(key: str, text: str) -> bytes:
    """Span field 9 holding `KeyValue{key, AnyValue{string_value = text}}`."""
    value = _join(_text(b"\x0a", text))
    item = _join((*_text(b"\x0a", key), b"\x12", _varint(len(value)), value))
    return b"\x4a" + _varint(len(item)) + item


def _join(parts: Iterable[bytes]) -> bytes:
    return b"".join(parts)


def _key(key: str) -> tuple[bytes, ...]:
    """`KeyValue.key`, which protobuf leaves out when it is empty (`_string_attribute` never
    did, and keeps writing it: the bytes on the wire stay what they were)."""
    return _text(b"\x0a", key) if key else ()


def _string_keyvalue(kv: Any) -> bytes | None:
    """A string attribute as a serialized `KeyValue`; None for any other."""
    value = kv.get("value") if type(kv) is dict else None
    if type(value) is not dict or len(value) != 1:
        return None
    key, text = kv.get("key"), value.get("stringValue")
    if type(key) is not str or type(text) is not str:
        return None
    data = _join(_text(b"\x0a", text))
    return _join((*_key(key), b"\x12", _varint(len(data)), data))


def _scalar_keyvalue(kv: Any) -> bytes | None:
    """An int, double or bool attribute as a serialized `KeyValue`; None for any other (or an
    int out of int64's range: protobuf's own path says why)."""
    value = kv.get("value") if type(kv) is dict else None
    key = kv.get("key") if type(kv) is dict else None
    if type(value) is not dict or len(value) != 1 or type(key) is not str:
        return None
    [(kind, v)] = value.items()
    if kind == "intValue" and type(v) in (str, int):
        number = int(v)
        if not -_I64 <= number < _I64:
            return None
        data = b"\x18" + _varint(number % _U64)
    elif kind == "doubleValue" and type(v) in (str, int, float):
        data = b"\x21" + _DOUBLE(float(v))
    elif kind == "boolValue" and type(v) is bool:
        data = b"\x10\x01" if v else b"\x10\x00"
    else:
        return None
    return _join((*_key(key), b"\x12", _BYTE[len(data)], data))


def _other_keyvalue(kv: Mapping[str, Any]) -> bytes | None:
    """An array of strings (finish reasons) as a serialized `KeyValue`; None for any other value."""
    key, value = kv.get("key"), kv["value"].get("arrayValue")
    values = value.get("values") if type(value) is dict and len(value) == 1 else None
    if type(key) is not str or type(values) is not list or not values:
        return None
    items: list[bytes] = []
    for x in values:
        text = x.get("stringValue") if type(x) is dict and len(x) == 1 else None
        if type(text) is not str:
            return None
        item = _join(_text(b"\x0a", text))
        items += (b"\x0a", _varint(len(item)), item)
    array = _join(items)
    data = _join((b"\x2a", _varint(len(array)), array))
    return _join((*_key(key), b"\x12", _varint(len(data)), data))


def _keyvalue(kv: Mapping[str, Any]) -> bytes:
    """One attribute as a serialized `KeyValue`, by protobuf's own classes."""
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    item = KeyValue()
    item.key = kv["key"]
    value = kv.get("value")
    if value:
        _value(item.value, value)
    elif value is not None:
        item.value.SetInParent()
    data: bytes = item.SerializeToString()
    return data


def _id(value: str, size: int) -> bytes:
    data = bytes.fromhex(value)
    if len(data) != size:
        raise ValueError(f"id {value!r} is not {size * 2} hex digits")
    return data


def _attributes(target: Any, attributes: Iterable[Mapping[str, Any]] | None) -> None:
    """Append OTLP/JSON `KeyValue`s to a repeated KeyValue field."""
    add = target.add
    for kv in attributes or ():
        item = add()
        item.key = kv["key"]
        value = kv.get("value")
        if not value:
            if value is not None:
                item.value.SetInParent()
        elif "stringValue" in value and len(value) == 1:  # most attributes: the fast path
            item.value.string_value = value["stringValue"]
        else:
            _value(item.value, value)


def _value(av: AnyValue, value: Mapping[str, Any]) -> None:
    """Fill `av` from an OTLP/JSON `AnyValue`. Unknown kinds are ignored, as receivers must."""
    for kind, v in value.items():
        if kind == "stringValue":
            av.string_value = v
        elif kind == "intValue":
            av.int_value = int(v)  # a decimal string, or a number from a lenient writer
        elif kind == "doubleValue":
            av.double_value = float(v)  # float("NaN"), float("Infinity"), float("-Infinity") too
        elif kind == "boolValue":
            av.bool_value = v
        elif kind == "arrayValue":
            values = av.array_value.values
            av.array_value.SetInParent()
            for x in (v or {}).get("values") or ():
                _value(values.add(), x)
        elif kind == "kvlistValue":
            av.kvlist_value.SetInParent()
            _attributes(av.kvlist_value.values, (v or {}).get("values"))
        elif kind == "bytesValue":
            av.bytes_value = base64.b64decode(v, validate=True)
