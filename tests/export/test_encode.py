"""What leaves for a target: redaction, the project, protobuf and JSON bodies, batches. Whole values."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.export.target_stub import TargetStub
from tests.fakes.otlp import canonical, decode_request
from tests.samples import Failure, Request, span_id, trace_id, trace_line
from tfgw.export import encode
from tfgw.export.encode import Dropped, batches, is_content_key, prepare, redact, to_json, to_protobuf
from tfgw.tracing import otlp
from tfgw.tracing.encode import Encoder
from tfgw.tracing.spans import LlmCall, RequestTrace

TID, SID, PARENT = trace_id(7), span_id(7, 1), span_id(7, 0)


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def s(value: str) -> dict[str, Any]:
    return {"stringValue": value}


def line_of(*spans: dict[str, Any], project: str = "default") -> dict[str, Any]:
    return otlp.export_request(otlp.resource(project), list(spans))


def span(attributes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "traceId": TID,
        "spanId": SID,
        "parentSpanId": PARENT,
        "name": "chat gpt-4o",
        "kind": otlp.KIND_CLIENT,
        "startTimeUnixNano": "1704067200000000000",
        "endTimeUnixNano": "1704067200800000000",
        "attributes": attributes,
        "status": {},
        **extra,
    }


def realistic_lines() -> list[dict[str, Any]]:
    """Lines as the gateway writes them: a plain call, a stream, a fallback, a 502, embeddings."""
    requests = [
        Request(1, session_id="s-1", user_id="u-1", metadata={"team": "a"}),
        Request(2, stream=True, ttft_ms=95.0),
        Request(3, failures=(Failure(),), provider="anthropic", model="claude-sonnet"),
        Request(4, status=502, failures=(Failure(), Failure(provider="anthropic"))),
        Request(5, embeddings=True, parent_span_id="00f067aa0ba902b7"),
    ]
    # through JSON, as the exporter reads them from the file
    return [orjson.loads(orjson.dumps(trace_line(r))) for r in requests]


# -- redaction -------------------------------------------------------------------------------------

KEPT = [
    kv("openinference.span.kind", s("LLM")),
    kv("llm.model_name", s("gpt-4o")),
    kv("llm.provider", s("openai")),
    kv("llm.invocation_parameters", s('{"temperature":0.2}')),
    kv("llm.input_messages.0.message.role", s("user")),
    kv("llm.input_messages.1.message.role", s("assistant")),
    kv("llm.input_messages.1.message.tool_calls.0.tool_call.id", s("call_1")),
    kv("llm.input_messages.1.message.tool_calls.0.tool_call.function.name", s("look")),
    kv("llm.input_messages.2.message.role", s("tool")),
    kv("llm.input_messages.2.message.tool_call_id", s("call_1")),
    kv("llm.input_messages.0.message.contents.0.message_content.type", s("text")),
    kv("llm.input_messages.0.message.contents.1.message_content.type", s("image")),
    kv("llm.output_messages.0.message.role", s("assistant")),
    kv("llm.token_count.prompt", {"intValue": "12"}),
    kv("llm.token_count.completion", {"intValue": "48"}),
    kv("llm.cost.total", {"doubleValue": 0.00051}),
    kv("gen_ai.request.model", s("gpt-4o")),
    kv("gen_ai.response.finish_reasons", {"arrayValue": {"values": [s("stop")]}}),
    kv("gen_ai.usage.input_tokens", {"intValue": "12"}),
    kv("gen_ai.request.stream", {"boolValue": True}),
    kv("session.id", s("s-1")),
    kv("metadata", s('{"team":"a"}')),
    kv("error.type", s("provider_timeout")),
    kv("tfgw.route.attempt", {"intValue": "1"}),
]
CONTENT = [
    kv("input.value", s('{"messages":[]}')),
    kv("input.mime_type", s("application/json")),
    kv("output.value", s("{}")),
    kv("output.mime_type", s("application/json")),
    kv("llm.input_messages.0.message.content", s("hello")),
    kv("llm.input_messages.0.message.contents.0.message_content.text", s("what is this?")),
    kv("llm.input_messages.0.message.contents.1.message_content.image.image.url", s("https://x/cat.png")),
    kv("llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments", s('{"zoom":2}')),
    kv("llm.input_messages.2.message.content", s("a cat")),
    kv("llm.output_messages.0.message.content", s("A cat.")),
    kv("llm.output_messages.0.message.contents.0.message_content.text", s("A cat.")),
    kv("llm.tools.0.tool.json_schema", s('{"name":"look"}')),
    kv("llm.prompts.0.prompt.text", s("Once upon")),
    kv("llm.choices.0.completion.text", s("a time")),
    kv("embedding.embeddings.0.embedding.text", s("embed me")),
    kv("gen_ai.input.messages", s("[]")),
    kv("gen_ai.output.messages", s("[]")),
    kv("gen_ai.system_instructions", s("be brief")),
]
EXCEPTION_EVENT = {
    "timeUnixNano": "1704067200700000000",
    "name": "exception",
    "attributes": [
        kv("exception.type", s("tfgw.errors.ProviderTimeoutError")),
        kv("exception.message", s("no answer within 30.0 s")),
        kv("exception.stacktrace", s("Traceback (most recent call last):\n")),
    ],
}
DETAILS_EVENT = {
    "timeUnixNano": "1704067200600000000",
    "name": "gen_ai.client.inference.operation.details",
    "attributes": [
        kv("gen_ai.input.messages", s('[{"role":"user"}]')),
        kv("gen_ai.operation.name", s("chat")),
    ],
}


def test_redaction_removes_the_content_attributes_and_nothing_else() -> None:
    mixed = [attr for pair in zip(KEPT, CONTENT + CONTENT[:6], strict=True) for attr in pair]
    line = line_of(span(mixed, events=[DETAILS_EVENT, EXCEPTION_EVENT]))
    before = copy.deepcopy(line)

    redacted = redact(line, exclude_request_data=True)

    assert redacted == line_of(
        span(
            KEPT,
            events=[
                {**DETAILS_EVENT, "attributes": [kv("gen_ai.operation.name", s("chat"))]},
                EXCEPTION_EVENT,
            ],
        )
    )
    assert line == before, "the input line is never changed"


def test_redaction_shares_what_it_does_not_change() -> None:
    plain = span(KEPT, events=[EXCEPTION_EVENT])
    line = line_of(plain, span(KEPT + CONTENT[:1], spanId=span_id(7, 2)))

    redacted = redact(line, exclude_request_data=True)

    spans = redacted["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert spans[0] is plain, "a span without content is not copied"
    assert spans[1]["attributes"] == KEPT
    no_content = line_of(plain)
    assert redact(no_content, True) is no_content
    assert redact(line, False) is line


@pytest.mark.parametrize(
    ("key", "content"),
    [
        ("input.value", True),
        ("llm.input_messages.10.message.content", True),
        ("llm.output_messages.0.message.tool_calls.3.tool_call.function.arguments", True),
        ("llm.input_messages.0.message.contents.2.message_content.image.image.url", True),
        ("llm.input_messages.0.message.function_call_arguments_json", True),
        ("llm.tools.0.tool.json_schema", True),
        ("llm.prompt_template.variables", True),
        ("gen_ai.prompt.0.content", True),
        ("gen_ai.completion.0.tool_calls.0.arguments", True),
        ("gen_ai.tool.call.arguments", True),
        ("retrieval.documents.0.document.content", True),
        ("llm.input_messages.0.message.role", False),
        ("llm.input_messages.0.message.name", False),
        ("llm.output_messages.0.message.tool_calls.0.tool_call.function.name", False),
        ("llm.input_messages.0.message.contents.0.message_content.type", False),
        ("gen_ai.prompt.0.role", False),
        ("llm.token_count.prompt", False),
        ("llm.invocation_parameters", False),
        ("input.values", False),
        ("my.input.value", False),
        ("exception.message", False),
    ],
)
def test_content_keys(key: str, content: bool) -> None:
    assert is_content_key(key) is content


def gateway_line(exclude: bool, trace: RequestTrace) -> dict[str, Any]:
    line: dict[str, Any] = orjson.loads(orjson.dumps(Encoder("p", exclude_request_data=exclude).line(trace)))
    return line


def test_redacting_a_full_line_gives_what_the_gateway_writes_when_it_excludes() -> None:
    trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
    request = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is the weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"c":1}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "temperature": 0.2,
    }  # fmt: skip
    response = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Rain."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
    }
    trace.llm(
        LlmCall("chat", "openai", "openai", "https://api.openai.com/v1", "gpt-4o", None, 1, request, None)
    )
    trace.spans[-1].llm.response = response  # type: ignore[union-attr]
    embed = LlmCall(
        "embeddings", "openai", "openai", "https://api.openai.com/v1", "e3", None, 1, {"input": ["a"]}
    )
    trace.llm(embed)
    trace.finish()

    assert redact(gateway_line(False, trace), True) == gateway_line(True, trace)


# -- project ---------------------------------------------------------------------------------------


def resource_of(line: dict[str, Any]) -> dict[str, Any]:
    return otlp.decode_attributes(line["resourceSpans"][0]["resource"]["attributes"])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("otlp", {"service.name": "tfgw", "service.version": "0.1.0", "openinference.project.name": "shop"}),
        (
            "middleware",
            {"service.name": "tfgw", "service.version": "0.1.0", "openinference.project.name": "shop"},
        ),
        (
            "arize",
            {
                "service.name": "tfgw",
                "service.version": "0.1.0",
                "openinference.project.name": "shop",
                "model_id": "shop",
            },
        ),
    ],
)
def test_the_project_replaces_the_resource_project(kind: str, expected: dict[str, Any]) -> None:
    line = trace_line(Request(1, project="default"))
    target = TargetStub("http://x", kind=kind, project="shop")

    prepared = prepare(line, target)

    assert resource_of(dict(prepared)) == expected
    assert resource_of(line)["openinference.project.name"] == "default", "the input line is unchanged"
    assert prepared["resourceSpans"][0]["scopeSpans"] is line["resourceSpans"][0]["scopeSpans"]


def schema_urls(line: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `schemaUrl` fields of a line's resource spans and scope spans, as the gateway writes
    them (none, or the conventions release of its names)."""
    rs = line["resourceSpans"][0]
    pick = lambda part: {k: v for k, v in part.items() if k == "schemaUrl"}  # noqa: E731
    return pick(rs), pick(rs["scopeSpans"][0])


def test_prepare_redacts_for_an_excluding_target() -> None:
    line = line_of(span(KEPT + CONTENT))
    target = TargetStub("http://x", kind="arize", project="p", exclude_request_data=True)
    rs_schema, ss_schema = schema_urls(line)

    assert prepare(line, target) == {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        kv("service.name", s("tfgw")),
                        kv("service.version", s("0.1.0")),
                        kv("openinference.project.name", s("p")),
                        kv("model_id", s("p")),
                    ]
                },
                "scopeSpans": [{"scope": otlp.SCOPE, "spans": [span(KEPT)], **ss_schema}],
                **rs_schema,
            }
        ]
    }


# -- protobuf and JSON -----------------------------------------------------------------------------

EVERY_FIELD = span(
    [
        kv("s", s("text ✓")),
        kv("long", s("x" * 500)),
        kv("i", {"intValue": "-9223372036854775808"}),
        kv("i2", {"intValue": 42}),  # a number: lenient writers, accepted
        kv("b", {"boolValue": False}),
        kv("d", {"doubleValue": 0.25}),
        kv("nan", {"doubleValue": "NaN"}),
        kv("inf", {"doubleValue": "Infinity"}),
        kv("-inf", {"doubleValue": "-Infinity"}),
        kv("bytes", {"bytesValue": "AAEC/w=="}),
        kv(
            "array",
            {"arrayValue": {"values": [s("a"), {"intValue": "1"}, {"arrayValue": {"values": [s("b")]}}]}},
        ),
        kv(
            "kvlist", {"kvlistValue": {"values": [kv("k", s("v")), kv("n", {"kvlistValue": {"values": []}})]}}
        ),
        kv("empty", {}),
    ],
    traceState="vendor=1",
    flags=257,
    droppedAttributesCount=2,
    events=[{"timeUnixNano": "1704067200100000000", "name": "e", "attributes": [kv("a", s("b"))]}],
    droppedEventsCount=1,
    links=[
        {
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "traceState": "x=y",
            "attributes": [kv("l", {"intValue": "1"})],
            "droppedAttributesCount": 1,
            "flags": 1,
        }
    ],
    droppedLinksCount=3,
)
EVERY_FIELD["status"] = {"code": otlp.STATUS_ERROR, "message": "boom"}


def test_protobuf_round_trip_of_realistic_lines_gives_the_lines_back() -> None:
    for line in [*realistic_lines(), line_of(EVERY_FIELD)]:
        message = to_protobuf([line])

        assert decode_request(message) == canonical(line)


def test_the_protobuf_body_is_byte_for_byte_what_protobuf_itself_writes() -> None:
    """The hand-framed envelopes and attributes are protobuf's canonical serialization."""
    for line in [*realistic_lines(), line_of(EVERY_FIELD)]:
        [batch] = batches([line])

        assert ExportTraceServiceRequest.FromString(batch.body).SerializeToString() == batch.body


def test_lines_of_one_resource_merge_into_one_resource_spans() -> None:
    a, b, c = (trace_line(Request(n, project="a")) for n in (1, 2, 3))
    other = trace_line(Request(4, project="b"))

    merged = decode_request(to_protobuf([a, other, b, c]))
    rs_schema, ss_schema = schema_urls(a)

    def spans(*lines: dict[str, Any]) -> list[dict[str, Any]]:
        return [sp for line in lines for _, sp in otlp.spans_of(line)]  # type: ignore[misc]

    def resource_spans(project: str, *lines: dict[str, Any]) -> dict[str, Any]:
        scope_spans = {"scope": otlp.SCOPE, "spans": spans(*lines), **ss_schema}
        return {"resource": otlp.resource(project), "scopeSpans": [scope_spans], **rs_schema}

    expected = {"resourceSpans": [resource_spans("a", a, b, c), resource_spans("b", other)]}
    assert merged == canonical(expected)
    assert orjson.loads(to_json([a, other, b, c])) == expected


def test_the_json_body_follows_the_otlp_json_rules() -> None:
    lines = realistic_lines()
    body = to_json(lines)
    data = orjson.loads(body)

    [rs] = data["resourceSpans"]
    rs_schema, ss_schema = schema_urls(lines[0])
    assert set(rs) == {"resource", "scopeSpans", *rs_schema}, "the keys the lines have"
    [ss] = rs["scopeSpans"]
    assert (ss["scope"], set(ss)) == ({"name": "tfgw", "version": "0.1.0"}, {"scope", "spans", *ss_schema})
    assert ss["spans"] == [sp for line in lines for _, sp in otlp.spans_of(line)]
    for sp in ss["spans"]:
        assert len(sp["traceId"]) == 32 and len(sp["spanId"]) == 16
        assert int(sp["traceId"], 16) and sp["traceId"] == sp["traceId"].lower()
        assert isinstance(sp["startTimeUnixNano"], str) and isinstance(sp["kind"], int)
        for attr in sp["attributes"]:
            assert "intValue" not in attr["value"] or isinstance(attr["value"]["intValue"], str)
    assert b"_" not in b"".join(k.encode() for k in _keys(data) if k not in _attribute_keys(data))
    # and it is valid OTLP/JSON for a protobuf decoder (ids as hex)
    assert decode_request(to_protobuf(lines)) == canonical(data)


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _attribute_keys(data: Any) -> set[str]:
    if isinstance(data, dict):
        own = {data["key"]} if "key" in data and isinstance(data["key"], str) else set()
        return own | {k for v in data.values() for k in _attribute_keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in _attribute_keys(v)}
    return set()


def test_a_bad_span_raises_in_to_protobuf() -> None:
    with pytest.raises(ValueError, match="not 32 hex digits"):
        to_protobuf([line_of(span(KEPT, traceId="abcd"))])


# -- batches ---------------------------------------------------------------------------------------


def many_lines(count: int) -> list[dict[str, Any]]:
    return [
        trace_line(Request(n, stream=n % 2 == 0, failures=(Failure(),) * (n % 3)))
        for n in range(1, count + 1)
    ]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_batches_stay_under_the_limits_and_keep_lines_whole(protocol: str) -> None:
    lines = many_lines(120)
    total = sum(1 for line in lines for _ in otlp.spans_of(line))

    out = list(batches(lines, protocol, max_bytes=64 * 1024, max_spans=100))

    assert len(out) > 5
    assert sum(b.spans for b in out) == total
    assert [b.end_line for b in out] == sorted({b.end_line for b in out}) and out[-1].end_line == 120
    sent_traces: list[set[str]] = []
    for b in out:
        assert len(b.body) <= 64 * 1024 and 0 < b.spans <= 100 and not b.dropped
        if protocol == "http/json":
            assert b.content_type == "application/json"
            request = orjson.loads(b.body)
        else:
            assert b.content_type == "application/x-protobuf"
            request = decode_request(ExportTraceServiceRequest.FromString(b.body))
        assert len(request["resourceSpans"]) == 1
        found = [sp for _, sp in otlp.spans_of(request)]
        assert len(found) == b.spans
        sent_traces.append({sp["traceId"] for sp in found})
    for one, two in itertools.pairwise(sent_traces):
        assert not one & two, "a line is never split when it fits"


def test_the_default_limit_is_4_mib() -> None:
    big = "y" * 200_000
    lines = [line_of(span([kv("input.value", s(big))], spanId=span_id(n, 1))) for n in range(30)]

    out = list(batches(lines))

    assert [b.spans for b in out] == [20, 10]
    assert all(len(b.body) <= encode.MAX_BATCH_BYTES == 4 * 1024 * 1024 for b in out)
    assert [b.end_line for b in out] == [20, 30]


def test_a_span_over_the_limit_for_its_text_is_sent_without_it() -> None:
    huge = span([*KEPT, kv("input.value", s("z" * 5 * 1024 * 1024))], spanId=span_id(7, 9), name="huge")
    line = line_of(span(KEPT), huge, span(KEPT, spanId=span_id(7, 3)))

    out = list(batches([trace_line(Request(1)), line, trace_line(Request(2))]))

    assert [(b.spans, b.end_line) for b in out] == [(4 + 3 + 4, 3)]
    assert out[0].dropped == (
        Dropped(0, f"span 'huge' (trace {TID}, span {span_id(7, 9)}) sent without its text: "
                   "5,243,994 bytes encoded: over the 4,194,304-byte limit of a payload"),
    )  # fmt: skip
    assert out[0].dropped_spans == 0
    sent = [sp for _, sp in otlp.spans_of(decode_request(ExportTraceServiceRequest.FromString(out[0].body)))]
    (trimmed,) = [sp for sp in sent if sp["name"] == "huge"]
    assert otlp.decode_attributes(trimmed["attributes"]) == otlp.decode_attributes(KEPT)


def test_a_span_over_the_limit_without_text_to_leave_out_is_dropped_with_a_reason() -> None:
    huge = span([kv("custom.blob", s("z" * 5 * 1024 * 1024))], spanId=span_id(7, 9), name="huge")
    line = line_of(span(KEPT), huge, span(KEPT, spanId=span_id(7, 3)))

    out = list(batches([trace_line(Request(1)), line, trace_line(Request(2))]))

    assert [(b.spans, b.end_line) for b in out] == [(4 + 2 + 4, 3)]
    assert out[0].dropped == (
        Dropped(1, f"span 'huge' (trace {TID}, span {span_id(7, 9)}) is 5,242,974 bytes encoded: "
                   "over the 4,194,304-byte limit of a payload"),
    )  # fmt: skip
    assert out[0].dropped_spans == 1


def test_a_span_that_cannot_be_encoded_is_dropped_alone() -> None:
    bad = span(KEPT, spanId="xyz", name="bad")
    out = list(batches([line_of(span(KEPT), bad)]))

    assert [(b.spans, b.end_line) for b in out] == [(1, 1)]
    [dropped] = out[0].dropped
    assert dropped.spans == 1 and dropped.reason.startswith(
        f"span 'bad' (trace {TID}, span xyz) cannot be encoded"
    )


def test_only_dropped_spans_give_a_batch_with_nothing_to_send() -> None:
    out = list(batches([line_of(span(KEPT, traceId="00"))]))

    assert [(b.spans, b.body, b.end_line, b.dropped_spans) for b in out] == [(0, b"", 1, 1)]
    assert list(batches([])) == []


def test_a_line_over_the_limit_alone_is_split_span_by_span() -> None:
    spans = [span([kv("input.value", s("q" * 3000))], spanId=span_id(9, i)) for i in range(10)]
    lines = [trace_line(Request(1)), line_of(*spans), trace_line(Request(2))]

    out = list(batches(lines, max_bytes=8 * 1024))

    assert [b.spans for b in out] == [4, 2, 2, 2, 2, 2, 4]
    assert [b.end_line for b in out] == [1, 1, 1, 1, 1, 2, 3]
    assert all(len(b.body) <= 8 * 1024 for b in out)


def test_the_public_surface() -> None:
    assert encode.__all__ == [
        "DEFAULT_MAX_SPANS",
        "JSON",
        "MAX_BATCH_BYTES",
        "MODEL_ID",
        "PROTOBUF",
        "Dropped",
        "EncodeTarget",
        "EncodedBatch",
        "batches",
        "is_content_key",
        "prepare",
        "project",
        "redact",
        "to_json",
        "to_protobuf",
        "with_project",
    ]
