"""The hand-written span writer: protobuf's own bytes for every shape it takes on, protobuf's own
errors for every value it hands back to opentelemetry-proto's classes. Whole values."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.export.test_encode import EVERY_FIELD, KEPT, kv, line_of, realistic_lines, s, span
from tests.fakes.otlp import canonical, decode_request, encode_request
from tests.samples import span_id, trace_id
from tfgw.export import protobuf
from tfgw.export.encode import batches
from tfgw.export.protobuf import ProtobufFormat
from tfgw.tracing import otlp


def variant(**fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(span(KEPT))
    out.update(fields)
    return {k: v for k, v in out.items() if v is not ...}


def attributes(*items: dict[str, Any]) -> dict[str, Any]:
    return variant(attributes=list(items))


#: every field and value shape, within the OTLP/JSON rules (a few go to protobuf's own classes)
SHAPES = [
    variant(kind="SPAN_KIND_SERVER"),
    variant(kind=0, name="", startTimeUnixNano="0", endTimeUnixNano=None),
    variant(kind=..., name=..., status=..., attributes=...),
    variant(parentSpanId=...),
    variant(parentSpanId=""),
    variant(traceId="5B8EFFF798038103D269B633813FC60C"),  # upper-case hex
    variant(name="é" * 63),  # 126 bytes: a one-byte length
    variant(name="é" * 64),  # 128 bytes: two
    variant(name="x" * 20_000),  # three
    variant(startTimeUnixNano=1704067200000000000, endTimeUnixNano=str(2**64 - 1)),
    variant(startTimeUnixNano="0"),
    variant(endTimeUnixNano="0"),
    variant(traceState="vendor=1"),
    variant(status={"code": "STATUS_CODE_ERROR", "message": "boom ✓"}),
    variant(status={"code": otlp.STATUS_OK}),
    variant(status={"message": ""}),
    variant(status=...),
    variant(events=[{"timeUnixNano": "5", "name": "first token", "attributes": []}]),
    variant(events=[{}, {"timeUnixNano": 0, "name": "", "attributes": None}]),
    variant(
        events=[
            {
                "timeUnixNano": "1704067200100000000",
                "name": "exception",
                "attributes": [
                    kv("exception.type", s("tfgw.errors.ProviderTimeoutError")),
                    kv("exception.message", s("m" * 300)),
                    kv("n", {"intValue": "-3"}),
                    kv("d", {"doubleValue": 0.5}),
                    kv("b", {"boolValue": True}),
                ],
            }
        ]
    ),
    variant(events=[{"name": "e", "attributes": [kv("a", {"arrayValue": {"values": [s("x")]}})]}]),
    variant(events=[{"name": "e", "droppedAttributesCount": 2}]),
    variant(links=[{"traceId": trace_id(9), "spanId": span_id(9, 1), "flags": 1}]),
    variant(droppedAttributesCount=1, droppedEventsCount=2, droppedLinksCount=3, flags=257),
    attributes(kv("s", s("")), kv("ü" * 100, s("y")), kv("k", s("é" * 64))),
    attributes(
        kv("", {"intValue": "3"}), kv("", {"doubleValue": 1.5}), kv("", {"arrayValue": {"values": [s("")]}})
    ),
    variant(events=[{"name": "e", "attributes": [kv("", s("x")), kv("", {"boolValue": True})]}]),
    attributes(*(kv("k", s("x" * n)) for n in (126, 127, 128, 129, 16_383, 16_384, 20_000))),
    attributes(
        kv("i", {"intValue": "0"}),
        kv("i", {"intValue": "-1"}),
        kv("i", {"intValue": str(-(2**63))}),
        kv("i", {"intValue": str(2**63 - 1)}),
        kv("i", {"intValue": 128}),
    ),
    attributes(
        kv("d", {"doubleValue": 0.0}),
        kv("-0", {"doubleValue": -0.0}),  # its own key: 0.0 == -0.0, and they share a memo
        kv("d", {"doubleValue": 3}),
        kv("d", {"doubleValue": "Infinity"}),
        kv("d", {"doubleValue": 1e308}),
    ),
    attributes(kv("b", {"boolValue": False}), kv("b", {"boolValue": True})),
    attributes(
        kv("a", {"arrayValue": {"values": [s(""), s("stop"), s("x" * 300)]}}),
        kv("a", {"arrayValue": {"values": []}}),
        kv("a", {"arrayValue": {}}),
        kv("a", {"arrayValue": {"values": [s("a"), {"intValue": "3"}, {}]}}),
    ),
    attributes(
        kv("kv", {"kvlistValue": {"values": [kv("a", s("b"))]}}), kv("by", {"bytesValue": "AAEC/w=="})
    ),
    attributes(kv("e", {}), {"key": "no value"}, {"key": "null", "value": None}),
]
#: what lenient writers send, which protobuf's JSON parser refuses: read as protobuf's classes do
LENIENT = [
    (attributes(kv("two", {"stringValue": "a", "intValue": "1"})), attributes(kv("two", {"intValue": "1"}))),
    (attributes(kv("b", {"boolValue": 1})), attributes(kv("b", {"boolValue": True}))),
    (attributes(kv("i", {"intValue": True})), attributes(kv("i", {"intValue": "1"}))),
]


def test_every_shape_is_byte_for_byte_what_protobuf_itself_writes() -> None:
    """The same bytes as protobuf's JSON parser and serializer give (one resource and scope a
    line: the merge changes nothing), and canonical protobuf (a decode and encode keep them)."""
    lines = [*realistic_lines(), line_of(EVERY_FIELD), *(line_of(sp) for sp in SHAPES), line_of(*SHAPES)]
    for line in lines:
        [batch] = batches([line])

        assert batch.body == encode_request(line).SerializeToString()
        assert ExportTraceServiceRequest.FromString(batch.body).SerializeToString() == batch.body


def test_lenient_values_are_read_as_protobuf_reads_them() -> None:
    for lenient, strict in LENIENT:
        [batch] = batches([line_of(lenient)])

        assert batch.body == encode_request(line_of(strict)).SerializeToString()
        assert decode_request(ExportTraceServiceRequest.FromString(batch.body)) == canonical(line_of(strict))


def test_a_string_attribute_with_an_empty_key_keeps_its_empty_key_field() -> None:
    """As tfgw always wrote it (protobuf leaves an empty key out); a decoder reads the same."""
    line = line_of(attributes(kv("", s("x"))))
    [batch] = batches([line])

    assert b"\x4a\x07\x0a\x00\x12\x03\x0a\x01x" in batch.body
    assert decode_request(ExportTraceServiceRequest.FromString(batch.body)) == decode_request(
        encode_request(line)
    )


def test_the_remembered_attributes_are_the_ones_of_their_own_value() -> None:
    """A short string's bytes are reused, never for a value that only looks like it."""
    fmt = ProtobufFormat()
    plain = fmt.span(attributes(kv("k", s("a"))))
    double = fmt.span(attributes(kv("k", {"stringValue": "a", "intValue": "1"})))
    again = fmt.span(attributes(kv("k", s("a"))))

    assert plain == again != double
    assert fmt.span(attributes(kv("k", {"intValue": "1"}))) != fmt.span(
        attributes(kv("k", {"doubleValue": 1}))
    )


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            variant(kind=True),
            TypeError,
            "Field opentelemetry.proto.trace.v1.Span.kind: Expected an int, got a boolean.",
        ),
        (variant(kind="BAD"), KeyError, "'BAD'"),
        (variant(startTimeUnixNano="-1"), ValueError, "Value out of range: -1"),
        (variant(endTimeUnixNano=str(2**64)), ValueError, f"Value out of range: {2**64}"),
        (variant(startTimeUnixNano="x"), ValueError, "invalid literal for int() with base 10: 'x'"),
        (variant(traceId="00" * 15, spanId="zz"), ValueError, "id '" + "00" * 15 + "' is not 32 hex digits"),
        (variant(parentSpanId="00" * 9), ValueError, "id '" + "00" * 9 + "' is not 16 hex digits"),
        (variant(status={"code": "BAD"}), KeyError, "'BAD'"),
        (attributes(kv("i", {"intValue": str(2**63)})), ValueError, f"Value out of range: {2**63}"),
        (
            attributes(kv("i", {"intValue": "1.5"})),
            ValueError,
            "invalid literal for int() with base 10: '1.5'",
        ),
        (attributes(kv("d", {"doubleValue": "x"})), ValueError, "could not convert string to float: 'x'"),
        (
            attributes(kv("b", {"boolValue": "true"})),
            TypeError,
            "'str' object cannot be interpreted as an integer",
        ),
        (attributes({"value": s("no key")}), KeyError, "'key'"),
        (
            attributes({"key": None, "value": s("x")}),
            AttributeError,
            "'NoneType' object has no attribute 'encode'",
        ),
        (
            variant(events=[{"timeUnixNano": "1", "attributes": [kv("i", {"intValue": str(2**70)})]}]),
            ValueError,
            f"Value out of range: {2**70}",
        ),
        # the first bad value is the one reported: attributes before the other fields
        (variant(kind="BAD", attributes=[kv("i", {"intValue": "x"})]), ValueError, "invalid literal"),
    ],
)
def test_a_bad_value_raises_what_protobuf_raises(
    bad: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        ProtobufFormat().span(bad)

    assert str(raised.value).startswith(message)


# -- resources and scopes ---------------------------------------------------------------------------

#: every resource shape: written here, or (bytes, kvlist, mixed arrays, empty values) by protobuf's classes
RESOURCES = [
    {},
    {"attributes": []},
    otlp.resource("default"),
    {
        "attributes": [
            kv("service.name", s("tfgw")),
            kv("", s("")),
            kv("ü" * 100, s("é" * 64)),
            kv("n", {"intValue": "-7"}),
            kv("n2", {"intValue": 128}),
            kv("d", {"doubleValue": 0.5}),
            kv("d0", {"doubleValue": "NaN"}),
            kv("b", {"boolValue": False}),
            kv("a", {"arrayValue": {"values": [s("x"), s("")]}}),
        ]
    },
    {
        "attributes": [
            kv("kv", {"kvlistValue": {"values": [kv("a", s("b"))]}}),
            kv("by", {"bytesValue": "AAEC/w=="}),
            kv("e", {}),
            {"key": "null", "value": None},
            {"key": "no value"},
            kv("a", {"arrayValue": {"values": [s("a"), {"intValue": "3"}]}}),
            kv("a0", {"arrayValue": {"values": []}}),
        ]
    },
    {"attributes": [kv("k", s("x" * 20_000))], "droppedAttributesCount": 3},
    {"droppedAttributesCount": 2**32 - 1},
    {"droppedAttributesCount": 0, "attributes": None},
]
#: what lenient writers send, which protobuf's JSON parser refuses: read as protobuf's classes do
LENIENT_RESOURCES = [
    {"attributes": [kv("i", {"intValue": True}), kv("two", {"stringValue": "a", "intValue": "1"})]},
    {"attributes": [kv("b", {"boolValue": 1}), kv("d", {"doubleValue": "3"})]},
]
SCOPES = [
    {},
    otlp.SCOPE,
    {"name": "tfgw"},
    {"version": "1"},
    {"name": "", "version": ""},
    {"name": "é" * 70, "version": "2.0", "attributes": [kv("x", s("y")), kv("i", {"intValue": 3})]},
    {"name": "n", "attributes": [kv("by", {"bytesValue": "AA=="})], "droppedAttributesCount": 1},
]


def encode_request_of(lines: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """Lines of one resource and scope as one request, as the exporter merges them."""
    first = copy.deepcopy(lines[0])
    [rs] = first["resourceSpans"]
    for line in lines[1:]:
        [other] = line["resourceSpans"]
        assert (other["resource"], other["scopeSpans"][0]["scope"]) == (
            rs["resource"],
            rs["scopeSpans"][0]["scope"],
        )
        rs["scopeSpans"][0]["spans"] += other["scopeSpans"][0]["spans"]
    return encode_request(first)


def line_with(resource: dict[str, Any], scope: dict[str, Any], schema: str = "") -> dict[str, Any]:
    line = line_of(span(KEPT))
    [rs] = line["resourceSpans"]
    rs["resource"], rs["schemaUrl"] = resource, schema
    [ss] = rs["scopeSpans"]
    ss["scope"], ss["schemaUrl"] = scope, schema
    return line


def test_every_resource_and_scope_is_byte_for_byte_what_protobuf_itself_writes() -> None:
    lines = [line_with(resource, SCOPES[1]) for resource in RESOURCES]
    lines += [line_with(RESOURCES[2], scope, "https://opentelemetry.io/schemas/1.37.0") for scope in SCOPES]
    for line in lines:
        [batch] = batches([line])

        assert batch.body == encode_request(line).SerializeToString()
        assert ExportTraceServiceRequest.FromString(batch.body).SerializeToString() == batch.body


def test_the_hand_written_resource_and_scope_are_protobufs_own_bytes() -> None:
    """Each shape alone, against opentelemetry-proto's classes filled the way they always were."""
    for resource in [*RESOURCES, *LENIENT_RESOURCES]:
        assert ProtobufFormat().resource(resource, "u") == protobuf._field(
            1, protobuf._resource_upb(resource)
        ) + protobuf._field(3, b"u")
    for scope in SCOPES:
        assert ProtobufFormat().scope(scope, "") == protobuf._field(1, protobuf._scope_upb(scope))


@pytest.mark.parametrize(
    ("resource", "scope"),
    [
        ({"attributes": [kv("i", {"intValue": str(2**63)})]}, {}),
        ({"attributes": [kv("i", {"intValue": "1.5"})]}, {}),
        ({"attributes": [kv("d", {"doubleValue": "x"})]}, {}),
        ({"attributes": [{"key": None, "value": s("x")}]}, {}),
        ({"attributes": [{"value": s("no key")}]}, {}),
        ({"droppedAttributesCount": -1}, {}),
        ({"droppedAttributesCount": 2**32}, {}),
        ({"droppedAttributesCount": True}, {}),
        ({"droppedAttributesCount": "3"}, {}),
        ({}, {"name": 5}),
        ({}, {"version": ["1"]}),
        ({}, {"attributes": [kv("b", {"boolValue": "true"})]}),
        ({}, {"droppedAttributesCount": 1.5}),
    ],
)
def test_a_bad_resource_or_scope_raises_what_protobuf_raises(
    resource: dict[str, Any], scope: dict[str, Any]
) -> None:
    part, upb = ("resource", protobuf._resource_upb) if resource else ("scope", protobuf._scope_upb)
    value = resource or scope
    with pytest.raises(Exception) as expected:
        upb(value)
    with pytest.raises(expected.type) as raised:
        getattr(ProtobufFormat(), part)(value, "")

    assert str(raised.value) == str(expected.value)


def test_the_exporter_loads_no_protobuf_runtime_for_what_tfgw_writes() -> None:
    """http/protobuf bodies of the gateway's own lines, and a 2xx with an empty body, without
    opentelemetry-proto's classes or protobuf's upb runtime in the process (about 4 MiB)."""
    lines = realistic_lines()
    code = (
        "import sys, orjson\n"
        "from tfgw.export import encode, send, worker\n"
        "[batch] = encode.batches(orjson.loads(sys.stdin.buffer.read()))\n"
        "assert send._partial_success('application/x-protobuf', b'') == (0, None)\n"
        "sys.stdout.buffer.write(batch.body)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google', 'opentelemetry')))\n"
        "print(loaded, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=orjson.dumps(lines), capture_output=True, timeout=60, check=False
    )

    assert (done.returncode, done.stderr) == (0, b"[]\n")
    assert done.stdout == encode_request_of(lines).SerializeToString()
