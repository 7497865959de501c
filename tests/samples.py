"""Realistic tfgw trace log lines for tests, and logs laid out on disk exactly as the gateway does.

    lines = [trace_line(Request(1)), trace_line(Request(2, stream=True, ttft_ms=95.0))]
    write_log(tmp_path, lines)                    # tfgw-...-4242-0001.jsonl + .rows
    write_segment(tmp_path, lines, rows=1)        # a rows file lagging one line behind

A `Request` describes one gateway request; `trace_line()` turns it into the one OTLP/JSON
`ExportTraceServiceRequest` the gateway writes for it (docs/spans.md, keys
from `tfgw.tracing.semconv`): the SERVER root `POST /v1/chat/completions`, `auth`,
`model.resolve`, one CLIENT span per provider attempt (failed ones first, with status ERROR,
`error.type` and an `exception` event) and, for a stream, an INTERNAL `stream` span under the
attempt that answered. Ids and times derive from `Request.n` and `Request.start`, so every line
is the same from run to run.

A segment's rows file holds `rows.summarize()` of each line plus `end`, the byte offset just past
that line in the segment, as `tfgw.tracing.log` writes it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tfgw.tracing import otlp
from tfgw.tracing import semconv as sc
from tfgw.tracing.rows import summarize

__all__ = [
    "MS",
    "PID",
    "T0",
    "Failure",
    "Request",
    "row_of",
    "segment_name",
    "span_id",
    "trace_id",
    "trace_line",
    "write_log",
    "write_segment",
]

#: 2024-01-01T00:00:00Z in Unix nanoseconds
T0 = 1_704_067_200_000_000_000
MS = 1_000_000
PID = 4242
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "claude-sonnet": (3.0, 15.0)}
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "azure": "tfgw.openai.azure.com"}


def trace_id(n: int) -> str:
    """A fixed 32-hex-digit trace id for request `n` (n < 65,536), which is its first 4 digits."""
    return f"{n:04x}" + hashlib.sha256(b"trace-%d" % n).hexdigest()[:28]


def span_id(n: int, i: int) -> str:
    return hashlib.sha256(b"span-%d-%d" % (n, i)).hexdigest()[:16]


@dataclass(frozen=True)
class Failure:
    """A provider attempt that failed before the one that answered (or before the error)."""

    provider: str = "openai"
    model: str | None = None  # the provider's model name; default: the request's model
    error_type: str = "provider_timeout"
    message: str = "no answer within 30.0 s"
    duration_ms: float = 50.0


@dataclass(frozen=True)
class Request:
    """One gateway request. Without failures and with status < 400 one attempt answers; with
    status >= 400 no attempt does (the failures, if any, are all there is)."""

    n: int
    start: int = T0  # Unix ns of the root span's start
    model: str = "gpt-4o"  # what the client asked for
    provider: str = "openai"  # the provider that answered
    route_model: str | None = None  # the provider's model name; default: model
    response_model: str | None = None  # what the provider says answered; default: route_model
    key: str | None = "ci"
    duration_ms: float = 800.0
    tokens: tuple[int, int] | None = (12, 48)
    price: tuple[float, float] | None = None  # USD per million tokens in, out; default PRICES
    stream: bool = False
    ttft_ms: float | None = None  # streams: time to first token; default 100 ms
    chunks: int = 20
    status: int = 200
    error_type: str | None = None  # root error.type; default for status >= 400: provider_error
    failures: tuple[Failure, ...] = ()
    embeddings: bool = False
    parent_span_id: str | None = None  # the caller's span (traceparent): outside the trace
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None
    project: str = "default"
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)  # more root attributes


def trace_line(req: Request) -> dict[str, Any]:
    """The gateway's trace file line for `req`: one `ExportTraceServiceRequest` dict.

    Timeline: root [start, start + duration]; auth 0.05-0.10 ms; model.resolve 0.125-0.2 ms;
    attempts one after the other from 0.3 ms, the answering one ending 0.5 ms before the root."""
    tid, ids = trace_id(req.n), iter(span_id(req.n, i) for i in range(100))
    root_id = next(ids)
    end = req.start + round(req.duration_ms * MS)
    first = req.failures[0] if req.failures else None
    auth = {sc.KEY_NAME: req.key, sc.AUTH_OUTCOME: "ok"}
    resolve = {
        sc.MODEL_REQUESTED: req.model,
        sc.ROUTE_PROVIDER: first.provider if first else req.provider,
        sc.ROUTE_MODEL: _route_model(req, first),
    }
    t = req.start
    spans = [
        _span(tid, next(ids), root_id, "auth", otlp.KIND_INTERNAL, t + MS // 20, t + MS // 10, auth),
        _span(
            tid, next(ids), root_id, "model.resolve", otlp.KIND_INTERNAL, t + MS // 8, t + MS // 5, resolve
        ),
    ]
    at = req.start + 3 * MS // 10
    for attempt, failure in enumerate(req.failures, 1):
        stop = at + round(failure.duration_ms * MS)
        spans.append(_failed_attempt(req, failure, attempt, tid, next(ids), root_id, at, stop))
        at = stop
    if req.status < 400:
        client_id, stop = next(ids), end - MS // 2
        spans.append(_attempt(req, len(req.failures) + 1, tid, client_id, root_id, at, stop))
        if req.stream:
            ttft = req.ttft_ms if req.ttft_ms is not None else 100.0
            stream = {sc.STREAM_CHUNKS: req.chunks, sc.STREAM_TTFT: ttft, sc.STREAM_CANCELLED: False}
            spans.append(_span(tid, next(ids), client_id, "stream", otlp.KIND_INTERNAL, at, stop, stream))
    root_name, root_attrs = _root_name(req), _root_attributes(req)
    root = _span(tid, root_id, req.parent_span_id, root_name, otlp.KIND_SERVER, req.start, end, root_attrs)
    if req.status >= 500:
        root["status"] = {"code": otlp.STATUS_ERROR, "message": f"HTTP {req.status}"}
    return otlp.export_request(otlp.resource(req.project), [root, *spans])


def row_of(line: dict[str, Any]) -> dict[str, Any]:
    """The row `traces list --json` prints for a line: `rows.summarize()` of its spans."""
    return summarize(otlp.spans_of(line))


def segment_name(start_ns: int, pid: int = PID, seq: int = 1) -> str:
    """`tfgw-YYYYMMDD-HHMMSS-<pid>-<seq>.jsonl`, UTC, as the gateway names its segments."""
    return (
        time.strftime("tfgw-%Y%m%d-%H%M%S", time.gmtime(start_ns // 1_000_000_000))
        + f"-{pid}-{seq:04d}.jsonl"
    )


def write_segment(
    directory: Path, lines: Sequence[dict[str, Any]], *, name: str | None = None, rows: int | None = None
) -> Path:
    """Write one segment and its rows file; `rows=k` writes the rows of the first k lines only (a
    rows file lagging behind). The name defaults to one made from the first line's start time."""
    directory.mkdir(parents=True, exist_ok=True)
    if name is None:
        first = next(otlp.spans_of(lines[0]))[1] if lines else {"startTimeUnixNano": T0}
        name = segment_name(int(first["startTimeUnixNano"]))
    path = directory / name
    data, rows_data, end = [], [], 0
    for i, line in enumerate(lines):
        raw = orjson.dumps(line) + b"\n"
        data.append(raw)
        end += len(raw)
        if rows is None or i < rows:
            rows_data.append(orjson.dumps({**row_of(line), "end": end}) + b"\n")
    path.write_bytes(b"".join(data))
    path.with_suffix(".rows").write_bytes(b"".join(rows_data))
    return path


def write_log(
    directory: Path, lines: Sequence[dict[str, Any]], *, per_segment: int = 0, pid: int = PID
) -> list[Path]:
    """Write `lines` as one gateway process would: segments of `per_segment` lines each (all in
    one if 0), numbered from 1, each with its complete rows file. Returns the segments."""
    size = per_segment or max(1, len(lines))
    paths = []
    for seq, i in enumerate(range(0, len(lines), size), 1):
        chunk = lines[i : i + size]
        first = next(otlp.spans_of(chunk[0]))[1]
        paths.append(
            write_segment(directory, chunk, name=segment_name(int(first["startTimeUnixNano"]), pid, seq))
        )
    return paths


# -- spans -----------------------------------------------------------------------------------------


def _span(
    tid: str, sid: str, parent: str | None, name: str, kind: int, start: int, end: int, attrs: dict[str, Any]
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": tid,
        "spanId": sid,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": otlp.attributes(attrs),
        "status": {},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def _root_name(req: Request) -> str:
    return "POST /v1/embeddings" if req.embeddings else "POST /v1/chat/completions"


def _root_attributes(req: Request) -> dict[str, Any]:
    error_type = req.error_type or ("provider_error" if req.status >= 400 else None)
    return {
        sc.HTTP_METHOD: "POST",
        sc.URL_PATH: _root_name(req).split(" ", 1)[1],
        sc.HTTP_STATUS: req.status,
        sc.ERROR_TYPE: error_type,
        sc.OI_SPAN_KIND: "CHAIN",
        sc.MODEL_REQUESTED: req.model,
        sc.KEY_NAME: req.key,
        sc.SESSION_ID: req.session_id,
        sc.USER_ID: req.user_id,
        sc.METADATA: None if req.metadata is None else orjson.dumps(req.metadata).decode(),
        sc.INPUT_VALUE: "hello",
        sc.INPUT_MIME: "text/plain",
        sc.OVERHEAD_MS: 0.4,
        **req.extra,
    }


def _route_model(req: Request, failure: Failure | None = None) -> str:
    if failure is not None:
        return failure.model or req.model
    return req.route_model or req.model


def _llm_common(req: Request, provider: str, model: str, attempt: int) -> dict[str, Any]:
    operation = "embeddings" if req.embeddings else "chat"
    return {
        sc.OI_SPAN_KIND: "EMBEDDING" if req.embeddings else "LLM",
        sc.GEN_OPERATION: operation,
        sc.GEN_PROVIDER: provider,
        sc.GEN_REQUEST_MODEL: model,
        sc.SERVER_ADDRESS: HOSTS.get(provider, f"{provider}.example"),
        sc.SERVER_PORT: 443,
        sc.LLM_PROVIDER: None if req.embeddings else provider,
        sc.LLM_SYSTEM: None if req.embeddings else ("anthropic" if provider == "anthropic" else "openai"),
        sc.INPUT_VALUE: orjson.dumps(
            {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        ).decode(),
        sc.INPUT_MIME: "application/json",
        f"{sc.LLM_INPUT}.0.message.role": None if req.embeddings else "user",
        f"{sc.LLM_INPUT}.0.message.content": None if req.embeddings else "hello",
        sc.ROUTE_PROVIDER: provider,
        sc.ROUTE_MODEL: model,
        sc.ROUTE_ATTEMPT: attempt,
    }


def _attempt(
    req: Request, attempt: int, tid: str, sid: str, parent: str, start: int, end: int
) -> dict[str, Any]:
    model = _route_model(req)
    answered = req.response_model or model
    attrs = _llm_common(req, req.provider, model, attempt)
    attrs[sc.GEN_RESPONSE_MODEL] = answered
    attrs[sc.GEN_RESPONSE_ID] = f"chatcmpl-{trace_id(req.n)[:12]}"
    if req.embeddings:
        attrs[sc.EMBEDDING_MODEL] = answered
    else:
        attrs[sc.LLM_MODEL] = answered
        attrs[f"{sc.LLM_OUTPUT}.0.message.role"] = "assistant"
        attrs[f"{sc.LLM_OUTPUT}.0.message.content"] = "Hi! How can I help?"
        attrs[sc.LLM_FINISH] = req.finish_reason
        attrs[sc.GEN_FINISH_REASONS] = [req.finish_reason]
        attrs[sc.OUTPUT_VALUE] = '{"choices":[{"message":{"content":"Hi! How can I help?"}}]}'
        attrs[sc.OUTPUT_MIME] = "application/json"
    if req.stream:
        attrs[sc.GEN_STREAM] = True
        attrs[sc.GEN_TTFC] = (req.ttft_ms if req.ttft_ms is not None else 100.0) / 1000
    if req.tokens is not None:
        tokens_in, tokens_out = req.tokens
        attrs.update({sc.TOKENS_PROMPT: tokens_in, sc.GEN_INPUT_TOKENS: tokens_in})
        if not req.embeddings:
            attrs.update({sc.TOKENS_COMPLETION: tokens_out, sc.GEN_OUTPUT_TOKENS: tokens_out})
        attrs[sc.TOKENS_TOTAL] = tokens_in + (0 if req.embeddings else tokens_out)
        price = req.price or PRICES.get(req.model)
        if price is not None:
            cost_in = tokens_in * price[0] / 1e6
            cost_out = 0 if req.embeddings else tokens_out * price[1] / 1e6
            attrs.update(
                {sc.COST_PROMPT: cost_in, sc.COST_COMPLETION: cost_out, sc.COST_TOTAL: cost_in + cost_out}
            )
    span = _span(
        tid,
        sid,
        parent,
        f"{'embeddings' if req.embeddings else 'chat'} {model}",
        otlp.KIND_CLIENT,
        start,
        end,
        attrs,
    )
    if req.stream:
        span["events"] = [
            {
                "timeUnixNano": str(start + round(attrs[sc.GEN_TTFC] * 1e9)),
                "name": sc.FIRST_TOKEN_EVENT,
                "attributes": [],
            }
        ]
    return span


def _failed_attempt(
    req: Request, failure: Failure, attempt: int, tid: str, sid: str, parent: str, start: int, end: int
) -> dict[str, Any]:
    model = _route_model(req, failure)
    attrs = {**_llm_common(req, failure.provider, model, attempt), sc.ERROR_TYPE: failure.error_type}
    span = _span(
        tid,
        sid,
        parent,
        f"{'embeddings' if req.embeddings else 'chat'} {model}",
        otlp.KIND_CLIENT,
        start,
        end,
        attrs,
    )
    span["status"] = {"code": otlp.STATUS_ERROR, "message": failure.message}
    span["events"] = [
        {
            "timeUnixNano": str(end),
            "name": "exception",
            "attributes": otlp.attributes(
                {
                    "exception.type": "tfgw.errors.ProviderTimeoutError",
                    "exception.message": failure.message,
                    "exception.stacktrace": "Traceback (most recent call last):\n  ...\n",
                }
            ),
        }
    ]
    return span
