"""`tfgw traces check`: whole outputs for valid files (tfgw's, the OpenTelemetry SDK's) and one broken
file per rule."""

from __future__ import annotations

import base64
import copy
import gzip
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from typer.testing import CliRunner, Result

import tfgw.cli
from tfgw.cli.check import check
from tfgw.tracing import otlp, trees
from tfgw.tracing.check import RULES, check_files, parse_conventions
from tfgw.tracing.otlp.files import TraceFileError

T0 = 1_760_000_000_000_000_000  # 2025-10-09, Unix nanoseconds
MS = 1_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
EMBED_TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, AUTH, RESOLVE, CHAT, STREAM = (f"{i:x}" * 16 for i in range(1, 6))
CHAT_NAME = "chat gpt-4o-mini"

APP = typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False)
APP.command()(check)


def cli(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(APP, list(args), input=stdin)


# -- building realistic lines --------------------------------------------------------------------


def span(
    name: str,
    span_id: str,
    parent: str,
    kind: int,
    start_ms: float,
    end_ms: float,
    attrs: dict[str, Any],
    *,
    trace: str = TRACE,
    status: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(T0 + int(start_ms * MS)),
        "endTimeUnixNano": str(T0 + int(end_ms * MS)),
        "attributes": otlp.attributes(attrs),
        "status": status or {},
    }
    if events:
        out["events"] = events
    return out


def root(path: str, trace: str, end_ms: float, caller: str = "") -> dict[str, Any]:
    return span(
        f"POST {path}",
        ROOT,
        caller,
        otlp.KIND_SERVER,
        0,
        end_ms,
        {
            "http.request.method": "POST",
            "url.path": path,
            "http.response.status_code": 200,
            "openinference.span.kind": "CHAIN",
            "session.id": "s-1",
            "user.id": "u-1",
            "metadata": '{"team": "search"}',
            "input.value": '{"model": "gpt-4o-mini"}',
            "output.value": "Hello!",
        },
        trace=trace,
    )


def gateway_spans(trace: str, model: str) -> list[dict[str, Any]]:
    auth = {"tfgw.key.name": "ci", "tfgw.auth.outcome": "ok"}
    resolve = {
        "tfgw.model.requested": model,
        "tfgw.route.provider": "openai",
        "tfgw.route.model": model,
        "tfgw.route.attempt": 1,
    }
    return [
        span("auth", AUTH, ROOT, otlp.KIND_INTERNAL, 0.1, 0.2, auth, trace=trace),
        span("model.resolve", RESOLVE, ROOT, otlp.KIND_INTERNAL, 0.2, 0.3, resolve, trace=trace),
    ]


LLM_ATTRS: dict[str, Any] = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.invocation_parameters": '{"temperature": 0.2, "max_tokens": 64, "top_p": 1.0, "stream": true}',
    "llm.input_messages.0.message.role": "system",
    "llm.input_messages.0.message.content": "Be brief.",
    "llm.input_messages.1.message.role": "user",
    "llm.input_messages.1.message.content": "Say hello",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "Hello!",
    "llm.token_count.prompt": 12,
    "llm.token_count.completion": 3,
    "llm.token_count.total": 15,
    "llm.token_count.prompt_details.cache_read": 0,
    "llm.token_count.prompt_details.cache_write": 0,
    "llm.token_count.completion_details.reasoning": 0,
    "llm.cost.prompt": 0.0000018,
    "llm.cost.completion": 0.0000018,
    "llm.cost.total": 0.0000036,
    "input.value": '{"messages": [{"role": "user", "content": "Say hello"}]}',
    "input.mime_type": "application/json",
    "output.value": "Hello!",
    "output.mime_type": "text/plain",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 3,
    "gen_ai.usage.cache_read.input_tokens": 0,
    "gen_ai.usage.cache_creation.input_tokens": 0,
    "gen_ai.request.temperature": 0.2,
    "gen_ai.request.max_tokens": 64,
    "gen_ai.request.top_p": 1.0,
    "gen_ai.request.stream": True,
    "gen_ai.response.time_to_first_chunk": 0.123,
    "server.address": "api.openai.com",
    "server.port": 443,
}


def chat_trace(trace: str = TRACE, caller: str = "") -> list[dict[str, Any]]:
    first_token = {"timeUnixNano": str(T0 + 124 * MS), "name": "First Token Stream Event", "attributes": []}
    return [
        root("/v1/chat/completions", trace, 400, caller),
        *gateway_spans(trace, "gpt-4o-mini"),
        span(CHAT_NAME, CHAT, ROOT, otlp.KIND_CLIENT, 1, 390, LLM_ATTRS, trace=trace, events=[first_token]),
        span(
            "stream",
            STREAM,
            CHAT,
            otlp.KIND_INTERNAL,
            124,
            390,
            {"tfgw.stream.chunks": 5, "tfgw.stream.time_to_first_token_ms": 123.0},
            trace=trace,
        ),
    ]


def embeddings_trace(trace: str = EMBED_TRACE) -> list[dict[str, Any]]:
    attrs = {
        "openinference.span.kind": "EMBEDDING",
        "embedding.model_name": "text-embedding-3-small",
        "embedding.invocation_parameters": '{"model": "text-embedding-3-small"}',
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 2,
        "llm.token_count.prompt": 2,
        "llm.token_count.total": 2,
    }
    return [
        root("/v1/embeddings", trace, 50),
        *gateway_spans(trace, "text-embedding-3-small"),
        span("embeddings text-embedding-3-small", CHAT, ROOT, otlp.KIND_CLIENT, 1, 45, attrs, trace=trace),
    ]


def line(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> bytes:
    res = otlp.resource("default") if resource is None else resource
    return orjson.dumps(otlp.export_request(res, spans)) + b"\n"


def valid_file() -> bytes:
    return line(chat_trace()) + line(embeddings_trace())


# -- the valid cases -----------------------------------------------------------------------------


def test_a_valid_tfgw_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    # the third trace joined a caller's (W3C traceparent): its root's parent is outside the file
    path.write_bytes(valid_file() + line(chat_trace("2" * 32, caller="c" * 16)))
    (tmp_path / "traces.jsonl.rows").write_text("not a trace file\n")
    done = cli(str(path))
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 14 spans in 3 traces from 1 file: 0 errors, 0 warnings\n",
    )


def test_traces_closed_to_bound_memory_are_not_orphans_when_they_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trees, "MAX_OPEN_TRACES", 1)
    spans = chat_trace()
    path = tmp_path / "t.jsonl"
    path.write_bytes(line(spans[:2]) + line(embeddings_trace()) + line(spans[2:]))
    done = cli(str(path))
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 9 spans in 2 traces from 1 file: 0 errors, 0 warnings\n",
    )


class _Ids(IdGenerator):
    """Sequential ids, so the SDK's spans are the same on every run."""

    def __init__(self) -> None:
        self.n = itertools.count(1)

    def generate_span_id(self) -> int:
        return 0x1000 + next(self.n)

    def generate_trace_id(self) -> int:
        return 0xABC0 + next(self.n)

    def is_trace_id_random(self) -> bool:
        return False


def sdk_line(*, hex_ids: bool) -> bytes:
    """Two traces as the OpenTelemetry SDK encodes them; hex ids as the Collector writes them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}), id_generator=_Ids())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.checkout", "1.0")
    for order in (1, 2):
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as server:
            server.set_attribute("http.request.method", "GET")
            with tracer.start_as_current_span("SELECT cart", kind=SpanKind.CLIENT) as db:
                db.set_attributes(
                    {"db.system": "postgresql", "db.rows": order, "db.ratio": 0.5, "db.ok": True}
                )
                db.set_attribute("db.tags", ["a", "b"])
                db.add_event("retry", {"attempt": 2})
                db.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    data = MessageToDict(encode_spans(exporter.get_finished_spans()), use_integers_for_enums=True)
    if hex_ids:
        for rs in data["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in s:
                            s[key] = base64.b64decode(s[key]).hex()
    return orjson.dumps(data) + b"\n"


def test_an_opentelemetry_sdk_file_with_hex_ids_passes(tmp_path: Path) -> None:
    path = tmp_path / "collector.json"
    path.write_bytes(sdk_line(hex_ids=True))
    done = cli(str(path))
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 4 spans in 2 traces from 1 file: 0 errors, 0 warnings\n",
    )


def test_base64_ids_from_the_sdk_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "sdk.json"
    path.write_bytes(sdk_line(hex_ids=False))
    done = cli(str(path))
    b64 = {n: base64.b64encode(n.to_bytes(8)).decode() for n in range(0x1000, 0x1010)}
    tid = {n: base64.b64encode(n.to_bytes(16)).decode() for n in range(0xABC0, 0xABD0)}

    def finding(trace: int, name: str, field: str, value: str, hexed: str) -> str:
        where = f"{path}:1: error base64-id trace={tid[trace][:8]} span={name}"
        return f"{where}: {field} {value!r} is base64: OTLP/JSON ids are hex ({hexed})"

    # ids in order of generation: trace 1, span 2 (server), span 3 (db); trace 4, span 5, span 6
    expected = []
    for trace, server, db in ((0xABC1, 0x1002, 0x1003), (0xABC4, 0x1005, 0x1006)):
        for name, sid, parent in (("SELECT cart", db, server), ("GET /cart", server, None)):
            expected.append(finding(trace, name, "traceId", tid[trace], f"{trace:032x}"))
            expected.append(finding(trace, name, "spanId", b64[sid], f"{sid:016x}"))
            if parent is not None:
                expected.append(finding(trace, name, "parentSpanId", b64[parent], f"{parent:016x}"))
    summary = "checked 4 spans in 2 traces from 1 file: 10 errors, 0 warnings"
    assert (done.exit_code, done.stdout.splitlines()) == (1, [*expected, summary])


# -- one broken file per rule --------------------------------------------------------------------

DELETE = object()


def edit_span(spans: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    """A copy of spans with the fields of the span called name set (DELETE removes one)."""
    spans = copy.deepcopy(spans)
    target = next(s for s in spans if s["name"] == name)
    for key, value in fields.items():
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
    return spans


def edit_attrs(
    spans: list[dict[str, Any]], name: str, values: dict[str, Any], raw: bool = False
) -> list[dict[str, Any]]:
    """A copy of spans with attributes of the span called name set (raw: as AnyValue dicts)."""
    spans = copy.deepcopy(spans)
    target = next(s for s in spans if s["name"] == name)
    kvs = [kv for kv in target["attributes"] if kv["key"] not in values]
    for key, value in values.items():
        if value is not DELETE:
            kvs.append({"key": key, "value": value if raw else otlp.any_value(value)})
    target["attributes"] = kvs
    return spans


def chat_line(spans: list[dict[str, Any]]) -> bytes:
    return line(spans) + line(embeddings_trace())


def many_spans(n: int) -> list[dict[str, Any]]:
    kids = [span(f"s{i}", f"{i + 1:016x}", ROOT, otlp.KIND_INTERNAL, 1, 2, {}) for i in range(n)]
    return [root("/v1/chat/completions", TRACE, 10), *kids]


@dataclass
class Case:
    rule: str
    content: Callable[[], bytes]
    findings: list[str]  # the text lines, without "FILE:"
    spans: int = 9
    traces: int = 2
    args: tuple[str, ...] = ()  # options of `tfgw traces check`


def chat_with(name: str, **fields: Any) -> Callable[[], bytes]:
    """A file of the chat trace, with fields of the span called name set, and the embeddings trace."""
    return lambda: line(edit_span(chat_trace(), name, **fields)) + line(embeddings_trace())


def chat_attrs(name: str, values: dict[str, Any], raw: bool = False) -> Callable[[], bytes]:
    """A file of the chat trace, with attributes of the span called name set, and the embeddings trace."""
    return lambda: line(edit_attrs(chat_trace(), name, values, raw)) + line(embeddings_trace())


T = "trace=4bf92f35"
E = "trace=0af76519"
ROOT_NAME = "POST /v1/chat/completions"
EMBED_NAME = "embeddings text-embedding-3-small"
LLM = f"{T} span={CHAT_NAME}"
ONE_OF = "AGENT, CHAIN, EMBEDDING, EVALUATOR, GUARDRAIL, LLM, PROMPT, RERANKER, RETRIEVER, TOOL"
ORPHAN = (
    "is not in the trace, and 1 other span(s) of the trace have an outside parent too (only the root may)"
)
CASES = [
    Case("json", lambda: valid_file() + b'{"resourceSpans": [\n', [
        "3: error json: not valid JSON: unexpected end of data at column 21"]),
    Case("torn-line", lambda: valid_file() + b'{"resourceSpans": [{"reso', [
        "3: warning torn-line: the last line is cut short (25 bytes, no newline)"]),
    Case("structure", lambda: valid_file() + b'{"resourceSpans": {}}\n[]\n{"scopeSpans": []}\n', [
        "3: error structure: resourceSpans is an object, not a list",
        "4: error structure: a line must be an object with resourceSpans, not an array",
        "5: error structure: no resourceSpans: not an ExportTraceServiceRequest"]),
    Case("snake-case-key", chat_with("auth", traceId=DELETE, trace_id=TRACE), [
        f"1: error snake-case-key {T} span=auth: 'trace_id' is snake_case: OTLP/JSON uses 'traceId'"]),
    Case("trace-id", lambda: line(edit_span(embeddings_trace(), "auth", traceId=DELETE)[1:2]) + chat_with(
        "auth", traceId="0" * 32)(), [
        "1: error trace-id span=auth: traceId is missing",
        "2: error trace-id trace=00000000 span=auth: traceId is all zero: an invalid id"],
        spans=10, traces=3),
    Case("span-id", chat_with("auth", spanId="xyz"), [
        f"1: error span-id {T} span=auth: spanId 'xyz' is not 16 hex digits"]),
    Case("parent-span-id", chat_with("auth", parentSpanId="12345"), [
        f"1: error parent-span-id {T} span=auth: parentSpanId '12345' is not 16 hex digits"]),
    Case("base64-id", chat_with("auth", spanId="ERERERERERE="), [
        f"1: error base64-id {T} span=auth: spanId 'ERERERERERE=' is base64: OTLP/JSON ids are hex "
        "(1111111111111111)"]),
    Case("time", chat_with("auth", startTimeUnixNano=1.5e18, endTimeUnixNano=DELETE), [
        f"1: error time {T} span=auth: startTimeUnixNano is 1.5e+18, not a uint64 (decimal string or "
        "integer)",
        f"1: error time {T} span=auth: endTimeUnixNano is missing"]),
    Case("time-order", chat_with("auth", endTimeUnixNano=str(T0)), [
        f"1: error time-order {T} span=auth: endTimeUnixNano is 0.100 ms before startTimeUnixNano"]),
    Case("time-range", chat_with(ROOT_NAME, startTimeUnixNano="1000"), [
        f"1: error time-range {T} span={ROOT_NAME}: startTimeUnixNano '1000' is before 2000-01-01: "
        "not Unix nanoseconds"]),
    Case("kind", chat_with("auth", kind="INTERNAL"), [
        f"1: error kind {T} span=auth: kind 'INTERNAL' is not an integer 0..5 (or SPAN_KIND_*)"]),
    Case("enum-name", chat_with("auth", kind="SPAN_KIND_INTERNAL", status={"code": "STATUS_CODE_OK"}), [
        f"1: warning enum-name {T} span=auth: kind 'SPAN_KIND_INTERNAL' is an enum name: OTLP/JSON enums "
        "are integers (1)",
        f"1: warning enum-name {T} span=auth: status.code 'STATUS_CODE_OK' is an enum name: OTLP/JSON "
        "enums are integers (1)"]),
    Case("status", chat_with("auth", status={"code": "OK"}), [
        f"1: error status {T} span=auth: status.code 'OK' is not an integer 0..2 (or STATUS_CODE_*)"]),
    Case("attribute", chat_attrs("auth", {
        "tfgw.key.name": {"stringValue": "ci", "intValue": "1"},
        "tfgw.route.attempt": {"intValue": "one"},
        "tfgw.auth.outcome": {"string_value": "ok"}}, raw=True), [
        f"1: error attribute {T} span=auth: attribute 'tfgw.key.name': the AnyValue has 2 fields "
        "(intValue, stringValue): exactly one",
        f"1: error attribute {T} span=auth: attribute 'tfgw.route.attempt': intValue 'one' is not a valid "
        "intValue",
        f"1: error snake-case-key {T} span=auth: attribute 'tfgw.auth.outcome': 'string_value' is "
        "snake_case: OTLP/JSON uses 'stringValue'"]),
    Case("empty-value", chat_attrs("auth", {
        "tfgw.key.name": {},
        "metadata.extra": {"kvlistValue": {"values": [{"key": "a"}]}}}, raw=True), [
        f"1: warning empty-value {T} span=auth: attribute 'tfgw.key.name': the AnyValue is empty: no value "
        "is set",
        f"1: warning empty-value {T} span=auth: attribute 'metadata.extra': kvlistValue item 'a' has no "
        "value"]),
    Case("service-name", lambda: line(embeddings_trace(), {"attributes": []}), [
        "1: warning service-name: the resource has no service.name"], spans=4, traces=1),
    Case("duplicate-span-id", chat_with("stream", spanId=AUTH), [
        f"1: error duplicate-span-id {T} span=stream: spanId {AUTH} appears twice in the trace"]),
    Case("orphan", lambda: chat_line(edit_span(
        edit_span(chat_trace(), "auth", parentSpanId="e" * 16), "model.resolve", parentSpanId="f" * 16)), [
        f"1: error orphan {T} span=auth: parent {'e' * 16} {ORPHAN}",
        f"1: error orphan {T} span=model.resolve: parent {'f' * 16} {ORPHAN}"]),
    Case("child-time", chat_with("stream", endTimeUnixNano=str(T0 + 395 * MS)), [
        f"1: warning child-time {T} span=stream: ends 5.000 ms after its parent {CHAT_NAME}"]),
    Case("trace-too-large", lambda: line(many_spans(10_000)), [
        f"1: warning trace-too-large {T} span=s9999: the trace has more than 10000 spans: its duplicate, "
        "parent and orphan checks stop here"], spans=10_001, traces=1),
    Case("span-kind-value", chat_attrs("auth", {"openinference.span.kind": "llm"}), [
        f"1: error span-kind-value {T} span=auth: openinference.span.kind 'llm' is not one of {ONE_OF}"]),
    Case("span-kind-unknown", chat_attrs("auth", {"openinference.span.kind": "UNKNOWN"}), [
        f"1: warning span-kind-unknown {T} span=auth: openinference.span.kind is UNKNOWN"]),
    Case("kind-mismatch", chat_attrs(CHAT_NAME, {"openinference.span.kind": "CHAIN"}), [
        f"1: error kind-mismatch {LLM}: openinference.span.kind is 'CHAIN' but gen_ai.operation.name is "
        "'chat'"]),
    Case("llm-required", chat_attrs(CHAT_NAME, {
        "llm.system": DELETE, "llm.model_name": 4, "gen_ai.provider.name": DELETE}), [
        f"1: error llm-required {LLM}: llm.model_name is an int 4, not a non-empty string",
        f"1: error llm-required {LLM}: an LLM span needs llm.system",
        f"1: error llm-required {LLM}: an LLM span needs gen_ai.provider.name"]),
    Case("embedding-required", lambda: line(chat_trace()) + line(
        edit_attrs(embeddings_trace(), EMBED_NAME, {
            "embedding.model_name": DELETE, "gen_ai.request.model": DELETE})), [
        f"2: error embedding-required {E} span={EMBED_NAME}: an EMBEDDING span needs embedding.model_name",
        f"2: error embedding-required {E} span={EMBED_NAME}: an EMBEDDING span needs gen_ai.request.model"]),
    Case("other-convention", chat_attrs(CHAT_NAME, {
        "gen_ai.operation.name": DELETE, "gen_ai.provider.name": DELETE, "gen_ai.request.model": DELETE}), [
        f"1: warning other-convention {LLM}: an LLM span has no {key}: OTel GenAI readers will not see it"
        for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")]),
    Case("deprecated-name", chat_attrs(CHAT_NAME, {
        "gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 12, "gen_ai.prompt.0.content": "hi"}), [
        f"1: error deprecated-name {LLM}: gen_ai.system is deprecated in OTel GenAI v1.41.1: use "
        "gen_ai.provider.name",
        f"1: error deprecated-name {LLM}: gen_ai.usage.prompt_tokens is deprecated in OTel GenAI v1.41.1: "
        "use gen_ai.usage.input_tokens",
        f"1: error deprecated-name {LLM}: gen_ai.prompt.0.content is deprecated in OTel GenAI v1.41.1: "
        "obsoleted with gen_ai.prompt, no replacement"], args=("--conventions", "gen_ai@1.41")),
    Case("token-count", chat_attrs(CHAT_NAME, {
        "llm.token_count.prompt_details.cache_read": 1.0, "gen_ai.usage.input_tokens": -1}), [
        f"1: error token-count {LLM}: llm.token_count.prompt_details.cache_read is a double 1.0, not an "
        "integer >= 0",
        f"1: error token-count {LLM}: gen_ai.usage.input_tokens is an int -1, not an integer >= 0"]),
    Case("token-total", chat_attrs(CHAT_NAME, {"llm.token_count.total": 16}), [
        f"1: error token-total {LLM}: llm.token_count.total is 16, but prompt + completion is 12 + 3 = 15"]),
    Case("finish-reasons", chat_attrs(CHAT_NAME, {"gen_ai.response.finish_reasons": "stop"}), [
        f"1: error finish-reasons {LLM}: gen_ai.response.finish_reasons is a string, not an array of "
        "strings"]),
    Case("json-attribute", lambda: chat_line(edit_attrs(
        edit_attrs(chat_trace(), CHAT_NAME, {"llm.invocation_parameters": "[1]"}),
        ROOT_NAME, {"metadata": "{'a': 1}"})), [
        f"1: error json-attribute {T} span={ROOT_NAME}: metadata is not valid JSON (it must be a string "
        "holding a JSON object)",
        f"1: error json-attribute {LLM}: llm.invocation_parameters holds an array, not a JSON object"]),
    Case("messages", chat_attrs(CHAT_NAME, {
        "llm.input_messages.1.message.role": DELETE, "llm.output_messages.2.message.role": "assistant"}), [
        f"1: error messages {LLM}: llm.input_messages.1.message.role is missing (or not a string)",
        f"1: error messages {LLM}: llm.output_messages indices are 0, 2: not 0, 1, 2… without gaps"]),
    Case("time-to-first-chunk", chat_attrs(CHAT_NAME, {"gen_ai.response.time_to_first_chunk": 1}), [
        f"1: error time-to-first-chunk {LLM}: gen_ai.response.time_to_first_chunk is an int 1, not a "
        "non-negative double (seconds)"]),
    Case("error-type", chat_with(CHAT_NAME, status={"code": 2, "message": "boom"}), [
        f"1: error error-type {LLM}: status is ERROR but error.type is not set"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_one_broken_file_per_rule(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(case.content())
    done = cli(str(path), *case.args)
    errors = sum(" error " in f for f in case.findings)
    warnings = len(case.findings) - errors
    counts = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    traces = f"{case.traces} trace{'s' * (case.traces != 1)}"
    summary = f"checked {case.spans} spans in {traces} from 1 file: {counts}"
    assert (done.exit_code, done.stdout.splitlines()) == (
        1 if errors else 0,
        [f"{path}:{f}" for f in case.findings] + [summary],
    )


def test_every_rule_is_exercised_and_listed_in_help() -> None:
    exercised = {f.split()[2].rstrip(":") for c in CASES for f in c.findings}
    assert exercised == set(RULES)
    assert [c.rule for c in CASES] == list(RULES)
    help_text = cli("--help").stdout
    for rule_id, rule in RULES.items():
        assert f"{rule_id:<20} {rule.severity:<7}  {rule.description}" in help_text


# -- --conventions: each one named is required ---------------------------------------------------

NO_GENAI = {"gen_ai.operation.name": DELETE, "gen_ai.provider.name": DELETE, "gen_ai.request.model": DELETE}
GENAI_ONLY_FINDINGS = [
    f"error llm-required {LLM}: an LLM span needs {key} (--conventions gen_ai@1.41)"
    for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
]


@pytest.mark.parametrize(
    ("conventions", "findings", "summary"),
    [
        (None, [f"warning other-convention {LLM}: an LLM span has no {key}: OTel GenAI readers will not "
                "see it" for key in NO_GENAI], "0 errors, 3 warnings"),
        ("gen_ai@1.41", GENAI_ONLY_FINDINGS, "3 errors, 0 warnings"),
        ("openinference,gen_ai", GENAI_ONLY_FINDINGS, "3 errors, 0 warnings"),
        ("openinference", [], "0 errors, 0 warnings"),
    ],
)  # fmt: skip
def test_conventions_require_each_one_named_and_leave_the_others_alone(
    tmp_path: Path, conventions: str | None, findings: list[str], summary: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(chat_attrs(CHAT_NAME, NO_GENAI)())
    done = cli(str(path), *(("--conventions", conventions) if conventions else ()))
    assert (done.exit_code, done.stdout.splitlines()) == (
        0 if summary.startswith("0 errors") else 1,
        [f"{path}:1: {f}" for f in findings] + [f"checked 9 spans in 2 traces from 1 file: {summary}"],
    )


def test_an_embedding_span_needs_each_convention_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        line(chat_trace())
        + line(edit_attrs(embeddings_trace(), EMBED_NAME, {"embedding.model_name": DELETE}))
    )
    done = cli(str(path), "--conventions", "gen_ai@1.41.1,openinference")
    assert (done.exit_code, done.stdout.splitlines()) == (
        1,
        [
            f"{path}:2: error embedding-required {E} span={EMBED_NAME}: an EMBEDDING span needs "
            "embedding.model_name (--conventions openinference)",
            "checked 9 spans in 2 traces from 1 file: 1 error, 0 warnings",
        ],
    )


def test_tfgw_files_pass_with_both_conventions_pinned(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_bytes(valid_file())
    done = cli(str(path), "--conventions", "gen_ai@1.41,openinference")
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 9 spans in 2 traces from 1 file: 0 errors, 0 warnings\n",
    )


@pytest.mark.parametrize("conventions", [None, "openinference"])
def test_deprecated_names_are_errors_only_under_gen_ai(tmp_path: Path, conventions: str | None) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(chat_attrs(CHAT_NAME, {"gen_ai.system": "openai", "gen_ai.completion.0.content": "x"})())
    done = cli(str(path), *(("--conventions", conventions) if conventions else ()))
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 9 spans in 2 traces from 1 file: 0 errors, 0 warnings\n",
    )


def test_conventions_spellings() -> None:
    both = frozenset(("gen_ai@1.41", "openinference"))
    assert parse_conventions("gen_ai@1.41,openinference") == both
    assert parse_conventions(" openinference , gen_ai ") == both
    assert parse_conventions("gen_ai@1.41.1,gen_ai@1.41.0") == frozenset(("gen_ai@1.41",))
    assert parse_conventions("openinference@0.1.32") == frozenset(("openinference",))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "unknown convention 'x'"),
        ("openinference,", "unknown convention ''"),
        ("gen_ai@1.37", "unsupported version 'gen_ai@1.37'"),
        ("openinference@2", "unsupported version 'openinference@2'"),
    ],
)
def test_a_bad_conventions_value_exits_2_naming_the_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
    message: str,
) -> None:
    (tmp_path / "ok.jsonl").write_bytes(valid_file())
    monkeypatch.setattr(tfgw.cli, "app", APP)
    monkeypatch.setattr(sys, "argv", ["tfgw", str(tmp_path / "ok.jsonl"), "--conventions", value])
    with pytest.raises(SystemExit) as exit_:
        tfgw.cli.main()
    assert (exit_.value.code, capsys.readouterr()) == (
        2,
        ("", f"tfgw: --conventions: {message} (known: gen_ai@1.41, openinference)\n"),
    )


# -- inputs and outputs --------------------------------------------------------------------------


def test_a_directory_is_its_trace_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(line(chat_trace()))
    (tmp_path / "a.json").write_bytes(line(embeddings_trace()))
    (tmp_path / "a.jsonl.rows").write_text("{}\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wb") as f:
        f.write(line(chat_trace("1" * 32), {"attributes": []}))
    (tmp_path / "notes.txt").write_text("not checked\n")
    done = cli(str(tmp_path))
    assert (done.exit_code, done.stdout) == (
        0,
        f"{tmp_path / 'c.jsonl.gz'}:1: warning service-name: the resource has no service.name\n"
        "checked 14 spans in 3 traces from 3 files: 0 errors, 1 warning\n",
    )


def test_stdin_and_gzip(tmp_path: Path) -> None:
    gz = tmp_path / "t.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(line(chat_trace()))
    done = cli(str(gz), "-", stdin=line(embeddings_trace()) + b"[]\n")
    assert (done.exit_code, done.stdout) == (
        1,
        "<stdin>:2: error structure: a line must be an object with resourceSpans, not an array\n"
        "checked 9 spans in 2 traces from 2 files: 1 error, 0 warnings\n",
    )


def test_a_trace_over_several_lines_and_files_is_one_tree(tmp_path: Path) -> None:
    spans = chat_trace()
    (tmp_path / "1.jsonl").write_bytes(line(spans[3:]) + line(spans[1:2]))  # children before parents
    (tmp_path / "2.jsonl").write_bytes(line(spans[:1] + spans[2:3]))
    done = cli(str(tmp_path / "1.jsonl"), str(tmp_path / "2.jsonl"))
    assert (done.exit_code, done.stdout) == (
        0,
        "checked 5 spans in 1 trace from 2 files: 0 errors, 0 warnings\n",
    )


def test_a_missing_file_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ok.jsonl").write_bytes(valid_file())
    monkeypatch.setattr(tfgw.cli, "app", APP)
    monkeypatch.setattr(sys, "argv", ["tfgw", str(tmp_path / "ok.jsonl"), "nope.jsonl"])
    with pytest.raises(SystemExit) as exit_:
        tfgw.cli.main()
    assert (exit_.value.code, capsys.readouterr()) == (
        2,
        ("", "tfgw: cannot read nope.jsonl: No such file or directory\n"),
    )
    with pytest.raises(TraceFileError):
        check_files([tmp_path / "gone" / "x.jsonl"])


def test_json_output(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(chat_line(edit_span(chat_trace(), "auth", kind="INTERNAL")) + b"{")
    done = cli(str(path), "--json")
    assert (done.exit_code, orjson.loads(done.stdout)) == (
        1,
        {
            "files": [str(path)],
            "spans": 9,
            "traces": 2,
            "errors": 1,
            "warnings": 1,
            "findings": [
                {
                    "file": str(path),
                    "line": 1,
                    "severity": "error",
                    "rule": "kind",
                    "trace_id": TRACE,
                    "span_id": AUTH,
                    "span": "auth",
                    "message": "kind 'INTERNAL' is not an integer 0..5 (or SPAN_KIND_*)",
                },
                {
                    "file": str(path),
                    "line": 3,
                    "severity": "warning",
                    "rule": "torn-line",
                    "trace_id": None,
                    "span_id": None,
                    "span": None,
                    "message": "the last line is cut short (1 bytes, no newline)",
                },
            ],
        },
    )


def test_max_findings_caps_what_is_printed_not_what_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"[]\n" * 5)
    done = cli(str(path), "--max-findings", "2")
    message = "error structure: a line must be an object with resourceSpans, not an array"
    assert (done.exit_code, done.stdout) == (
        1,
        f"{path}:1: {message}\n{path}:2: {message}\n"
        "… 3 more findings not shown (--max-findings 2)\n"
        "checked 0 spans in 0 traces from 1 file: 5 errors, 0 warnings\n",
    )
