"""OTLP/JSON trace-file lines → OTLP protobuf, one resource, scope or span at a time.

`tfgw.export.encode` cuts lines into batches; `ProtobufFormat` gives it each part's exact bytes and
frames a batch of them as an `ExportTraceServiceRequest`. Parts are built with opentelemetry-proto's
own classes (upb), each serialized on its own; only the three enclosing length-delimited envelopes
(request → ResourceSpans → ScopeSpans) are framed here, which gives every span's exact size for
batching and no copying.

The attributes of a span, field 9, are most of the work and repeat from span to span (model,
provider, roles, token counts...): each short scalar `KeyValue`'s bytes are kept for reuse.
A value that breaks the OTLP/JSON rules (a bad id, say) raises ValueError or TypeError.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tfgw.tracing import otlp

__all__ = ["ProtobufFormat"]

#: AnyValue kinds whose `KeyValue` bytes are cached, keyed by (key, kind, JSON value)
_SCALAR = frozenset(("intValue", "boolValue", "doubleValue"))
_CACHED_STRING = 128
_CACHE_SIZE = 20_000


class ProtobufFormat:
    """OTLP protobuf (grpc, http/protobuf), one part at a time, for `tfgw.export.encode` to batch."""

    #: an upper bound of what framing a span costs in a batch: a tag and a length of ≤ 5 bytes
    per_span = 6

    def __init__(self) -> None:
        #: the bytes of short attributes, keyed by (key, text) and (key, kind, JSON value); a memo
        #: shared by every call and thread, so a clear() at any time is harmless
        self._strings: dict[tuple[str, str], bytes] = {}
        self._scalars: dict[tuple[str, str, Any], bytes] = {}

    def overhead(self, group: tuple[bytes, bytes]) -> int:
        """An upper bound of what a (resource, scope) group costs a batch beyond its spans."""
        # ResourceSpans and ScopeSpans: a tag and a length (≤ 5 bytes) each, plus their fields
        return 12 + len(group[0]) + len(group[1])

    def resource(self, resource: Mapping[str, Any], schema_url: str) -> bytes:
        message = Resource()
        _attributes(message.attributes, resource.get("attributes"))
        if resource.get("droppedAttributesCount"):
            message.dropped_attributes_count = resource["droppedAttributesCount"]
        return _field(1, message.SerializeToString()) + _schema_url(schema_url)

    def scope(self, scope: Mapping[str, Any], schema_url: str) -> bytes:
        message = InstrumentationScope()
        if scope.get("name"):
            message.name = scope["name"]
        if scope.get("version"):
            message.version = scope["version"]
        _attributes(message.attributes, scope.get("attributes"))
        if scope.get("droppedAttributesCount"):
            message.dropped_attributes_count = scope["droppedAttributesCount"]
        return _field(1, message.SerializeToString()) + _schema_url(schema_url)

    def span(self, span: Mapping[str, Any]) -> bytes:
        """The span's protobuf, fields in number order as protobuf writes them. Its attributes,
        field 9, are most of the work and repeat from span to span (model, provider, roles,
        token counts...): each short scalar `KeyValue`'s bytes are kept for reuse."""
        strings, scalars = self._strings, self._scalars
        attributes = []
        for kv in span.get("attributes") or ():
            value = kv.get("value")
            if not value or len(value) != 1:
                attributes.append(_field(9, _keyvalue(kv)))
                continue
            text = value.get("stringValue")
            if text is not None:  # the common case, encoded here
                if len(text) > _CACHED_STRING:
                    attributes.append(_string_attribute(kv["key"], text))
                    continue
                key = (kv["key"], text)
                data = strings.get(key)
                if data is None:
                    if len(strings) >= _CACHE_SIZE:
                        strings.clear()
                    data = strings[key] = _string_attribute(kv["key"], text)
                attributes.append(data)
                continue
            [(kind, v)] = value.items()
            if kind not in _SCALAR:
                attributes.append(_field(9, _keyvalue(kv)))
                continue
            scalar_key = (kv["key"], kind, v)
            data = scalars.get(scalar_key)
            if data is None:
                if len(scalars) >= _CACHE_SIZE:
                    scalars.clear()
                data = scalars[scalar_key] = _field(9, _keyvalue(kv))
            attributes.append(data)
        return _span_head(span) + b"".join(attributes) + _span_tail(span)

    def frame(self, resources: Mapping[bytes, Mapping[bytes, list[bytes]]]) -> bytes:
        """The request's body: encoded resource -> encoded scope -> encoded spans, in order."""
        out = []
        for rkey, scopes in resources.items():
            rs = [rkey]
            for skey, spans in scopes.items():
                ss = [skey]
                ss += [_field(2, data) for data in spans]
                rs.append(_field(2, b"".join(ss)))
            out.append(_field(1, b"".join(rs)))
        return b"".join(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    size = len(data)
    if size < 0x80:  # most attributes: a one-byte length
        return bytes((number << 3 | 2, size)) + data
    return bytes((number << 3 | 2,)) + _varint(size) + data


def _schema_url(url: str) -> bytes:
    return _field(3, url.encode()) if url else b""


#: OTLP/JSON writes enums as integers, but may use their protobuf names; the numbers and names are
#: the trace-file format's (`tfgw.tracing.otlp`)
_KINDS = {f"SPAN_KIND_{name}": Span.SpanKind.ValueType(n) for n, name in otlp.KIND_NAMES.items()}
_CODES = {f"STATUS_CODE_{name}": Status.StatusCode.ValueType(n) for n, name in otlp.STATUS_NAMES.items()}


def _span_head(s: Mapping[str, Any]) -> bytes:
    """Span fields 1-8: ids, trace state, name, kind, times."""
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
        span.kind = _KINDS[kind] if isinstance(kind, str) else kind
    span.start_time_unix_nano = int(s.get("startTimeUnixNano") or 0)
    span.end_time_unix_nano = int(s.get("endTimeUnixNano") or 0)
    data: bytes = span.SerializeToString()
    return data


def _span_tail(s: Mapping[str, Any]) -> bytes:
    """Span fields 10-16: dropped counts, events, links, status, flags."""
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
            span.status.code = _CODES[code] if isinstance(code, str) else code
    if s.get("flags"):
        span.flags = s["flags"]
    data: bytes = span.SerializeToString()
    return data


def _string_attribute(key: str, text: str) -> bytes:
    """Span field 9 holding `KeyValue{key, AnyValue{string_value = text}}`."""
    value = text.encode()
    return _field(9, _field(1, key.encode()) + _field(2, _field(1, value)))


def _keyvalue(kv: Mapping[str, Any]) -> bytes:
    """One attribute as a serialized `KeyValue`."""
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
        item: KeyValue = add()
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
