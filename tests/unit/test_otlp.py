"""OTLP/JSON values: the encoding rules of opentelemetry-proto's specification, both ways."""

from __future__ import annotations

import math

from tfgw.tracing.otlp import any_value, attributes, decode_attributes, decode_value


def test_every_value_kind_round_trips() -> None:
    values = {
        "s": "text",
        "b": True,
        "i": 42,
        "neg": -(2**63),
        "d": 0.25,
        "list": ["a", 1, 2.5, False],
        "map": {"k": "v", "n": 3},
        "raw": b"\x00\xffbytes",
        "gone": None,
    }
    encoded = attributes(values)
    assert encoded == [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "42"}},
        {"key": "neg", "value": {"intValue": "-9223372036854775808"}},
        {"key": "d", "value": {"doubleValue": 0.25}},
        {"key": "list", "value": {"arrayValue": {"values": [
            {"stringValue": "a"}, {"intValue": "1"}, {"doubleValue": 2.5}, {"boolValue": False}]}}},
        {"key": "map", "value": {"kvlistValue": {"values": [
            {"key": "k", "value": {"stringValue": "v"}}, {"key": "n", "value": {"intValue": "3"}}]}}},
        {"key": "raw", "value": {"bytesValue": "AP9ieXRlcw=="}},
    ]  # fmt: skip
    decoded = decode_attributes(encoded)
    assert decoded == {k: v for k, v in values.items() if k not in ("gone", "raw")} | {"raw": "AP9ieXRlcw=="}


def test_out_of_range_ints_and_non_finite_doubles() -> None:
    assert any_value(2**64) == {"stringValue": "18446744073709551616"}
    assert [any_value(x) for x in (math.nan, math.inf, -math.inf)] == [
        {"doubleValue": "NaN"},
        {"doubleValue": "Infinity"},
        {"doubleValue": "-Infinity"},
    ]
    assert math.isinf(decode_value({"doubleValue": "-Infinity"}))


def test_int64_may_be_a_number_when_reading() -> None:
    assert decode_value({"intValue": 7}) == decode_value({"intValue": "7"}) == 7
