"""`tfgw traces check` and `tfgw replay --dry-run` read trace files through one validator at two
strictnesses (tfgw/tracing/otlp/validate.py). This table runs each structural rule's sample line
through both commands and pins both verdicts side by side, so every difference is deliberate and
visible: what `check` calls an error, replay refuses too, except where replay can send the data
faithfully (enum names are converted, empty values sent as they are, an old time sent as it is).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import samples
from tests.test_replay import agent_traces, collector_line, tfgw
from tfgw.tracing.check import RULES
from tfgw.tracing.otlp.validate import RULES as STRUCTURE_RULES
from tfgw.tracing.otlp.validate import Strictness

Line = dict[str, Any]
TRACE = samples.trace_id(1)
T0 = samples.T0
SPAN = "auth"  # a leaf: editing it leaves the rest of the trace whole
AT = f"trace={TRACE[:8]} span={SPAN}"
WHERE = f"span {SPAN!r} (trace {TRACE})"


def base() -> Line:
    return copy.deepcopy(samples.trace_line(samples.Request(1)))


def the_span(line: Line) -> dict[str, Any]:
    spans: list[dict[str, Any]] = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return next(s for s in spans if s["name"] == SPAN)


def on_span(**fields: Any) -> Callable[[], bytes]:
    def edit() -> bytes:
        line = base()
        span = the_span(line)
        for key, value in fields.items():
            if value is None:
                span.pop(key)
            else:
                span[key] = value
        return orjson.dumps(line) + b"\n"

    return edit


def with_attribute(*kvs: Any) -> Callable[[], bytes]:
    def edit() -> bytes:
        line = base()
        the_span(line)["attributes"].extend(kvs)
        return orjson.dumps(line) + b"\n"

    return edit


def raw(text: bytes) -> Callable[[], bytes]:
    return lambda: orjson.dumps(base()) + b"\n" + text


def without_service_name() -> bytes:
    line = base()
    res = line["resourceSpans"][0]["resource"]
    res["attributes"] = [kv for kv in res["attributes"] if kv["key"] != "service.name"]
    return orjson.dumps(line) + b"\n"


@dataclass(frozen=True)
class Row:
    rule: str
    content: Callable[[], bytes]
    check: list[str]  # `tfgw traces check`: its findings, "LINE: SEVERITY RULE WHERE: message"
    replay: str  # `tfgw replay --dry-run`: "ok", "ok, warned: ..." or the one-line error


ROWS = [
    Row("json", raw(b'{"resourceSpans": [\n'),
        ["2: error json: not valid JSON: unexpected end of data at column 21"],
        "error: 2: not valid JSON: unexpected end of data at column 21"),
    Row("torn-line", raw(b'{"resourceSpans": [{"res'),
        ["2: warning torn-line: the last line is cut short (24 bytes, no newline)"],
        "ok, warned: 2: the last line is cut short (24 bytes, no newline): skipped"),
    Row("structure", raw(b'{"resourceSpans": {}}\n'),
        ["2: error structure: resourceSpans is an object, not a list"],
        "error: 2: resourceSpans is an object, not a list"),
    Row("structure", on_span(droppedAttributesCount=-1),
        [f"1: error structure {AT}: droppedAttributesCount -1 is not an integer 0..4294967295"],
        f"error: 1: {WHERE}: droppedAttributesCount -1 is not an integer 0..4294967295"),
    Row("snake-case-key", on_span(startTimeUnixNano=None, start_time_unix_nano=str(samples.T0)),
        [f"1: error snake-case-key {AT}: 'start_time_unix_nano' is snake_case: OTLP/JSON uses "
         "'startTimeUnixNano'"],
        f"error: 1: {WHERE}: 'start_time_unix_nano' is snake_case: OTLP/JSON uses 'startTimeUnixNano'"),
    Row("trace-id", on_span(traceId="0" * 32),
        [f"1: error trace-id trace=00000000 span={SPAN}: traceId is all zero: an invalid id"],
        f"error: 1: span {SPAN!r} (trace {'0' * 32}): traceId is all zero: an invalid id"),
    Row("span-id", on_span(spanId="xyz"),
        [f"1: error span-id {AT}: spanId 'xyz' is not 16 hex digits"],
        f"error: 1: {WHERE}: spanId 'xyz' is not 16 hex digits"),
    Row("parent-span-id", on_span(parentSpanId="12345"),
        [f"1: error parent-span-id {AT}: parentSpanId '12345' is not 16 hex digits"],
        f"error: 1: {WHERE}: parentSpanId '12345' is not 16 hex digits"),
    Row("base64-id", on_span(spanId="ERERERERERE="),
        [f"1: error base64-id {AT}: spanId 'ERERERERERE=' is base64: OTLP/JSON ids are hex "
         "(1111111111111111)"],
        f"error: 1: {WHERE}: spanId 'ERERERERERE=' is base64: OTLP/JSON ids are hex (1111111111111111)"),
    Row("time", on_span(endTimeUnixNano=None),
        [f"1: error time {AT}: endTimeUnixNano is missing"],
        f"error: 1: {WHERE}: endTimeUnixNano is missing"),
    Row("time-order", on_span(startTimeUnixNano=str(T0 + 2000), endTimeUnixNano=str(T0 + 1000)),
        [f"1: error time-order {AT}: endTimeUnixNano is 0.001 ms before startTimeUnixNano"],
        f"error: 1: {WHERE}: endTimeUnixNano is 0.001 ms before startTimeUnixNano"),
    Row("time-range", on_span(events=[{"timeUnixNano": "1000", "name": "retry"}]),
        [f"1: error time-range {AT}: event timeUnixNano '1000' is before 2000-01-01: not Unix nanoseconds"],
        f"ok, warned: 1: {WHERE}: event timeUnixNano '1000' is before 2000-01-01: not Unix nanoseconds"),
    Row("kind", on_span(kind="SERVER"),
        [f"1: error kind {AT}: kind 'SERVER' is not an integer 0..5 (or SPAN_KIND_*)"],
        f"error: 1: {WHERE}: kind 'SERVER' is not an integer 0..5 (or SPAN_KIND_*)"),
    Row("enum-name", on_span(kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_OK"}),
        [f"1: warning enum-name {AT}: kind 'SPAN_KIND_SERVER' is an enum name: OTLP/JSON enums are "
         "integers (2)",
         f"1: warning enum-name {AT}: status.code 'STATUS_CODE_OK' is an enum name: OTLP/JSON enums are "
         "integers (1)"],
        "ok"),
    Row("status", on_span(status={"code": 7}),
        [f"1: error status {AT}: status.code 7 is not an integer 0..2 (or STATUS_CODE_*)"],
        f"error: 1: {WHERE}: status.code 7 is not an integer 0..2 (or STATUS_CODE_*)"),
    Row("attribute", with_attribute({"key": "n", "value": {"intValue": "1.5"}}),
        [f"1: error attribute {AT}: attribute 'n': intValue '1.5' is not a valid intValue"],
        f"error: 1: {WHERE}: attribute 'n': intValue '1.5' is not a valid intValue"),
    Row("attribute", with_attribute({"key": "tfgw.auth.outcome", "value": {"stringValue": "ok"}}),
        [f"1: error attribute {AT}: attribute 'tfgw.auth.outcome' appears more than once"],
        f"error: 1: {WHERE}: attribute 'tfgw.auth.outcome' appears more than once"),
    Row("empty-value", with_attribute({"key": "a", "value": {}}, {"key": "b"}),
        [f"1: warning empty-value {AT}: attribute 'a': the AnyValue is empty: no value is set",
         f"1: warning empty-value {AT}: attribute 'b' has no value"],
        "ok"),
    Row("service-name", without_service_name,
        ["1: warning service-name: the resource has no service.name"],
        "ok"),
]  # fmt: skip


def check_verdict(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[str]]:
    code, out, _ = tfgw(capsys, "traces", "check", str(path))
    *findings, _summary = out.splitlines()
    return code, [f.removeprefix(f"{path}:") for f in findings]


def replay_verdict(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    code, out, err = tfgw(
        capsys, "replay", str(path), "--endpoint", "http://127.0.0.1:9", "--dry-run", "--json"
    )
    if code:
        assert (code, out) == (2, "")
        return "error: " + err.removeprefix(f"tfgw: {path}:").rstrip("\n")
    warnings = [w.removeprefix(f"{path}:") for w in orjson.loads(out)["warnings"]]
    return "ok, warned: " + " | ".join(warnings) if warnings else "ok"


@pytest.mark.parametrize("row", ROWS, ids=[f"{i}-{r.rule}" for i, r in enumerate(ROWS)])
def test_check_and_replay_side_by_side(capsys: pytest.CaptureFixture[str], tmp_path: Path, row: Row) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(row.content())
    errors = any(" error " in f for f in row.check)
    assert (check_verdict(capsys, path), replay_verdict(capsys, path)) == (
        (int(errors), row.check),
        row.replay,
    )


def test_the_table_covers_every_structural_rule_and_its_strictness() -> None:
    assert {row.rule for row in ROWS} == set(STRUCTURE_RULES)
    for row in ROWS:
        rule = STRUCTURE_RULES[row.rule]
        # the replay column follows the rule's lenient severity, the check column its strict one
        assert row.replay.startswith("error") == (rule.severity_for(Strictness.LENIENT) == "error"), row
        assert all(f.split()[1] == rule.severity for f in row.check if f.split()[2] == row.rule), row
    assert all(rule.lenient != "error" or rule.severity == "error" for rule in RULES.values())


def test_a_file_of_openinference_only_llm_spans_from_the_sdk_passes_check_with_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Written by the OpenTelemetry SDK's own encoder, as OpenInference instrumentors write them:
    LLM spans with no gen_ai.* required attribute."""
    a, b, c = agent_traces()
    path = tmp_path / "collector.jsonl"
    path.write_bytes(collector_line(a + b) + collector_line(c))

    code, findings = check_verdict(capsys, path)

    missing = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
    llm_spans = [(1, a[-1]), (1, b[-1]), (2, c[-1])]
    assert (code, findings) == (
        0,
        [
            f"{line}: warning other-convention trace={format(span.context.trace_id, '032x')[:8]} "
            f"span=ChatOpenAI: an LLM span has no {key}: OTel GenAI readers will not see it"
            for line, span in llm_spans
            for key in missing
        ],
    )
