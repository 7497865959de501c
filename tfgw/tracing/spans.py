"""Span records as plain data, built while a request runs.

The request path only takes timestamps and keeps references (the request body, the provider's
answer, the folded stream); turning them into OTLP attributes happens later, after the answer
went out, when the trace log encodes pending traces on the event loop between requests
(`tfgw.tracing.encode`, scheduled by `tfgw.tracing.log`). That keeps tracing to a few
microseconds per request: the SDK's span objects and their encoders cost about 1 ms of CPU per
request (docs/architecture.md, "What a request costs").

A `RequestTrace` is owned by one request and touched by one task at a time; it is handed to the
trace log exactly once, by `finish()`, after which nothing on the request path changes it.
"""

from __future__ import annotations

import random
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfgw.tracing.fold import StreamFold
from tfgw.tracing.otlp import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, STATUS_ERROR, STATUS_UNSET

__all__ = [
    "Constant",
    "Event",
    "LlmCall",
    "RequestTrace",
    "Span",
    "error_type",
    "new_span_id",
    "parse_traceparent",
]

_rand = random.Random()
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def new_trace_id() -> str:
    return (_rand.getrandbits(128) or 1).to_bytes(16).hex()  # half of a format spec's cost


def new_span_id() -> str:
    return (_rand.getrandbits(64) or 1).to_bytes(8).hex()


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """`(trace id, parent span id)` from a W3C `traceparent` header, or None when it is absent or
    invalid (then the gateway starts a new trace, as the W3C spec says)."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None:
        return None
    version, trace_id, span_id, _, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


class Constant(dict[str, Any]):
    """A span's attributes that are the same on every request (a passed guardrail's): shared by
    the spans that carry them, never changed, and encoded once (`encoded`, kept by the encoder).
    A trace's row reads a span with them as a guardrail's verdict and nothing else
    (`tfgw.tracing.rows`)."""

    __slots__ = ("encoded", "json", "row", "span")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: kept by the encoder: the attributes as OTLP `KeyValue`s, and a span with them less its
        #: ids and times, as a dict and as the JSON around them; kept by the row: what its
        #: `guardrails` lists for them
        self.encoded: list[dict[str, Any]] | None = None
        self.span: dict[str, Any] | None = None
        self.json: tuple[str, ...] | None = None
        self.row: list[Any] | None = None


@dataclass(slots=True)
class Event:
    name: str
    time: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LlmCall:
    """What one provider attempt's span is made of, kept as references until it is encoded."""

    operation: str  # chat | embeddings
    provider: str  # the config's provider name
    provider_kind: str  # openai | azure | anthropic | mock
    base_url: str
    model: str  # the provider's model name, as sent
    alias: str | None
    attempt: int  # 1-based, over fallbacks and retries
    request: Mapping[str, Any]  # the client's OpenAI-shaped body, or its chat-completions view
    price: Any = None  # tfgw.config.Price | None
    stream: bool = False
    response: Mapping[str, Any] | StreamFold | None = None  # OpenAI-shaped answer, or the folded stream
    response_body: bytes | None = None  # the answer's bytes as sent to the client (non-streaming)
    first_chunk: int | None = None  # Unix ns of the first streamed chunk
    fallback_reason: str | None = None  # why the previous attempt was left
    client_request: Mapping[str, Any] | None = None  # the body as sent, when `request` is its view
    system: str | None = None  # `[providers.X] system`: the provider's well-known name, if given


@dataclass(slots=True)
class Span:
    name: str
    kind: int
    span_id: str
    parent_id: str | None
    start: int
    end: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    status: int = STATUS_UNSET
    message: str | None = None
    llm: LlmCall | None = None
    #: attributes already in OTLP form (`KeyValue`s), written after `attributes`: those made on
    #: every request from values that are constant for a while, such as `auth`'s limits
    encoded: list[dict[str, Any]] | None = None

    def close(self) -> None:
        if not self.end:
            self.end = time.time_ns()

    def fail(self, exc: BaseException, kind: str | None = None) -> None:
        """Status ERROR, `error.type` (`kind`, else derived from `exc`) and the `exception` event, as
        OTel records errors."""
        self.status = STATUS_ERROR
        self.message = str(exc) or type(exc).__name__
        self.attributes["error.type"] = kind or error_type(exc)
        self.events.append(
            Event(
                "exception",
                time.time_ns(),
                {
                    "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "exception.message": self.message,
                    "exception.stacktrace": "".join(traceback.format_exception(exc)),
                },
            )
        )


def error_type(exc: BaseException) -> str:
    """A low-cardinality `error.type`: the provider's HTTP status, a tfgw error code, a class name."""
    status = getattr(exc, "upstream_status", None)
    if status is not None:
        return str(status)
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__qualname__


class RequestTrace:
    """The spans of one request: a SERVER root and its children, finished once."""

    __slots__ = ("_done", "_sink", "at_finish", "provider_ns", "root", "spans", "trace_id")

    def __init__(
        self,
        name: str,
        sink: Callable[[RequestTrace], None],
        traceparent: str | None = None,
    ) -> None:
        parent = parse_traceparent(traceparent)
        self.trace_id, parent_id = parent if parent else (new_trace_id(), None)
        self.root = Span(name, KIND_SERVER, new_span_id(), parent_id, time.time_ns())
        self.spans: list[Span] = [self.root]
        self.provider_ns = 0  # time spent waiting on providers, for x-tfgw-overhead-ms
        self._sink = sink
        self._done = False
        #: called once when the request ends, however it ends (the gateway settles its accounting)
        self.at_finish: Callable[[], None] | None = None

    def child(self, name: str, kind: int = KIND_INTERNAL, parent: Span | None = None) -> Span:
        span = Span(name, kind, new_span_id(), (parent or self.root).span_id, time.time_ns())
        self.spans.append(span)
        return span

    def llm(self, call: LlmCall) -> Span:
        """One provider attempt: a CLIENT span named as GenAI says, `{operation} {model}`."""
        span = self.child(f"{call.operation} {call.model}", KIND_CLIENT)
        span.llm = call
        return span

    def overhead_ms(self, now: int | None = None) -> float:
        elapsed = (now or time.time_ns()) - self.root.start
        return max(0.0, (elapsed - self.provider_ns) / 1e6)

    def finish(self) -> None:
        """End every open span and hand the trace to the log; later calls do nothing."""
        if self._done:
            return
        self._done = True
        if self.at_finish is not None:
            self.at_finish()
        now = time.time_ns()
        for span in self.spans:
            if not span.end:
                span.end = now
        self._sink(self)
