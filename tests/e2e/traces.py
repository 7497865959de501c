"""Reading what the gateway wrote to its trace log, for whole-value asserts.

`normalise()` turns one trace file line into a list of spans with decoded attributes, parents
named instead of numbered, JSON text attributes parsed, and the values that change from run to
run (durations, stack traces) checked for type and then replaced by a placeholder, so a test can
compare the whole thing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson

from tfgw.tracing import otlp

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")

#: attribute keys whose values are timings: a non-negative float, shown as "<float>"
TIMINGS = ("tfgw.overhead_ms", "tfgw.stream.time_to_first_token_ms", "gen_ai.response.time_to_first_chunk")
CALLER = "<caller>"
#: attributes that hold JSON text: parsed, so a test compares values, not key order
JSON_TEXT = ("llm.invocation_parameters", "embedding.invocation_parameters", "metadata")


class TraceFiles:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def lines(self) -> list[bytes]:
        out: list[bytes] = []
        for path in sorted(self.dir.glob("*.jsonl")):
            out += [line for line in path.read_bytes().split(b"\n") if line]
        return out

    def raw(self, trace_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The line holding `trace_id`, waiting for the writer thread to append it."""
        needle = f'"traceId":"{trace_id}"'.encode()
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if needle in line:
                    data: dict[str, Any] = orjson.loads(line)
                    return data
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id} was not written to {self.dir} in {timeout} s")
            time.sleep(0.02)

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        return normalise(self.raw(trace_id))

    def everything(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.dir.iterdir()))


def normalise(line: dict[str, Any]) -> list[dict[str, Any]]:
    pairs = list(otlp.spans_of(line))
    names = {span["spanId"]: span["name"] for _, span in pairs}
    trace_ids = {span["traceId"] for _, span in pairs}
    assert len(trace_ids) == 1 and HEX32.match(trace_ids.pop()), "one trace per line, hex id"
    out = []
    for _, span in pairs:
        assert HEX16.match(span["spanId"])
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        assert 0 < start <= end, span["name"]
        parent = span.get("parentSpanId")
        attributes = otlp.decode_attributes(span["attributes"])
        for key, value in attributes.items():
            if key in JSON_TEXT or key.endswith(".tool.json_schema"):
                attributes[key] = orjson.loads(value)
        for kind in ("input", "output"):
            if attributes.get(f"{kind}.mime_type") == "application/json":
                attributes[f"{kind}.value"] = orjson.loads(attributes[f"{kind}.value"])
        for key in TIMINGS:
            if key in attributes:
                assert isinstance(attributes[key], float) and attributes[key] >= 0, key
                attributes[key] = "<float>"
        events = []
        for event in span.get("events", ()):
            assert start <= int(event["timeUnixNano"]) <= end
            values = otlp.decode_attributes(event.get("attributes", ()))
            if "exception.stacktrace" in values:
                assert values["exception.stacktrace"].startswith("Traceback")
                values["exception.stacktrace"] = "<stacktrace>"
            events.append({"name": event["name"], **({"attributes": values} if values else {})})
        normalised: dict[str, Any] = {
            "name": span["name"],
            "kind": otlp.KIND_NAMES[span["kind"]],
            "parent": names.get(parent, CALLER) if parent else None,
            "status": span.get("status", {}),
            "attributes": attributes,
        }
        if events:
            normalised["events"] = events
        out.append(normalised)
    return out


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


def diff(got: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{key: (got, expected)}` for every key that differs: a readable failure for big dicts."""
    return {k: (got.get(k, "<absent>"), expected.get(k, "<absent>")) for k in {*got, *expected}
            if got.get(k, "<absent>") != expected.get(k, "<absent>")}  # fmt: skip
