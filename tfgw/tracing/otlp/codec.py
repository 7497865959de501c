"""OTLP/JSON as plain dicts: the values and records a trace file line is made of.

The rules (opentelemetry-proto docs/specification.md, "JSON Protobuf Encoding"): lowerCamelCase
keys, trace and span ids as hex, 64-bit integers as decimal strings (numbers are accepted when
reading), enums as integers. One line of a trace file is one `ExportTraceServiceRequest`
(`{"resourceSpans": [...]}`), as the OpenTelemetry Collector's file exporter writes it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tfgw import __version__
from tfgw.tracing import semconv

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KIND_BY_NAME",
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_NAMES",
    "KIND_PREFIX",
    "KIND_SERVER",
    "SCOPE",
    "STATUS_BY_NAME",
    "STATUS_ERROR",
    "STATUS_NAMES",
    "STATUS_OK",
    "STATUS_PREFIX",
    "STATUS_UNSET",
    "any_value",
    "attributes",
    "decode_attributes",
    "decode_value",
    "export_request",
    "resource",
    "spans_of",
]

KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}
#: the proto names of the enums, which OTLP/JSON readers may meet in place of the integers
KIND_PREFIX = "SPAN_KIND_"
STATUS_PREFIX = "STATUS_CODE_"
KIND_BY_NAME = {KIND_PREFIX + name: code for code, name in KIND_NAMES.items()}
STATUS_BY_NAME = {STATUS_PREFIX + name: code for code, name in STATUS_NAMES.items()}

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

SCOPE = {"name": "tfgw", "version": __version__}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP `AnyValue`. bool is tested before int: it is one in Python."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)} if INT64_MIN <= value <= INT64_MAX else {"stringValue": str(value)}
    if isinstance(value, float):
        # proto3 JSON spells the non-finite doubles as strings
        return {"doubleValue": value if math.isfinite(value) else NON_FINITE[repr(value)]}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": attributes(value)}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def attributes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`{key: value}` as OTLP `KeyValue`s; None values are absent, never written.

    The common values (a str, an int in range, a bool, a finite float) are written here without a
    call to `any_value`: every span of every request goes through this loop."""
    out = []
    for k, v in values.items():
        t = type(v)
        if t is str:
            out.append({"key": k, "value": {"stringValue": v}})
        elif t is int and INT64_MIN <= v <= INT64_MAX:
            out.append({"key": k, "value": {"intValue": str(v)}})
        elif t is bool:
            out.append({"key": k, "value": {"boolValue": v}})
        elif t is float and math.isfinite(v):
            out.append({"key": k, "value": {"doubleValue": v}})
        elif v is not None:
            out.append({"key": k, "value": any_value(v)})
    return out


def decode_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON `AnyValue` as a Python value (int64 as a string or a number, both accepted)."""
    for kind, v in value.items():
        if kind == "stringValue" or kind == "boolValue":
            return v
        if kind == "doubleValue":
            return float(v)
        if kind == "intValue":
            return int(v)
        if kind == "arrayValue":
            return [decode_value(x) for x in (v or {}).get("values", ())]
        if kind == "kvlistValue":
            return decode_attributes((v or {}).get("values", ()))
        if kind == "bytesValue":
            return v
    return None


def decode_attributes(values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: decode_value(kv.get("value") or {}) for kv in values}


def resource(project: str) -> dict[str, Any]:
    return {
        "attributes": attributes(
            {
                semconv.SERVICE_NAME: "tfgw",
                semconv.SERVICE_VERSION: __version__,
                semconv.PROJECT_NAME: project,
            }
        )
    }


def export_request(resource: Any, spans: list[Any]) -> dict[str, Any]:
    """One trace file line: the spans of one resource, under tfgw's instrumentation scope, both
    with the `schemaUrl` of the conventions release tfgw's attribute names follow. The resource
    and the spans are dicts, or for `orjson.dumps` only, `orjson.Fragment`s of their JSON."""
    scope_spans = {"scope": SCOPE, "spans": spans, "schemaUrl": semconv.SCHEMA_URL}
    return {
        "resourceSpans": [
            {"resource": resource, "scopeSpans": [scope_spans], "schemaUrl": semconv.SCHEMA_URL}
        ]
    }


def spans_of(line: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Every `(resource, span)` of one decoded trace file line, whoever wrote it."""
    for rs in line.get("resourceSpans") or ():
        res = rs.get("resource") or {}
        for ss in rs.get("scopeSpans") or ():
            for span in ss.get("spans") or ():
                yield res, span
