"""Trace log lines → what goes on the wire to one target: redacted, stamped with the target's
project, merged and encoded as OTLP protobuf or OTLP/JSON, cut into payloads under 4 MiB.

The input is always trace file lines: OTLP/JSON `ExportTraceServiceRequest` dicts
(`tfgw.tracing.otlp`). Nothing here mutates a line; results share every part they did not change
with their input, so a span without content costs nothing to redact.

    lines = [prepare(line, target) for line in lines]   # redact, project, stamp the project
    for batch in batches(lines, target.protocol):        # ≤ 4 MiB, ≤ 2,000 spans each
        ...                                              # send batch.body

Merging: the lines of one gateway share a resource and tfgw's scope, so their spans go into one
`ResourceSpans` and one `ScopeSpans` (grouped by the exact resource and scope, in order of first
appearance): a batch of 1,000 requests carries its resource once, not 1,000 times.

Each span is encoded on its own, so its exact size is known before it joins a batch: protobuf by
`tfgw.export.protobuf`, OTLP/JSON here (a line's spans already are OTLP/JSON).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tfgw.export.protobuf import ProtobufFormat
from tfgw.tracing import otlp
from tfgw.tracing import semconv as sc
from tfgw.tracing.conventions import CARRIED, CONVENTIONS, KEPT_BY_KIND, Get, carried, leavable

if TYPE_CHECKING:  # the exporter sends bytes: protobuf's classes are imported only by to_protobuf
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
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

#: gRPC's default maximum message size; also well under OTLP/HTTP's recommended 64 MiB
MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SPANS = 2000
#: Arize's legacy alias of `openinference.project.name`
#: (arize.com/docs/ax/concepts/otel-openinference/resource)
MODEL_ID = "model_id"

JSON = "application/json"
PROTOBUF = "application/x-protobuf"


class EncodeTarget(Protocol):
    """What encoding reads of a target (`tfgw.export.targets.ResolvedTarget` has it all)."""

    @property
    def kind(self) -> str: ...  # arize | middleware | otlp
    @property
    def protocol(self) -> str: ...  # grpc | http/protobuf | http/json
    @property
    def project(self) -> str: ...
    @property
    def exclude_request_data(self) -> bool: ...
    @property
    def conventions(self) -> tuple[str, ...]: ...  # openinference and/or gen_ai


@dataclass(frozen=True, slots=True)
class Dropped:
    """Spans left out of every batch, and why (too big to send, or not encodable)."""

    spans: int
    reason: str


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One payload for one request to a target.

    `end_line`: input lines `[0, end_line)` are wholly in this batch or an earlier one (or
    dropped), so once this batch and the ones before it are delivered a cursor may move past them.
    A line is split across batches only when it alone is over the limits. A batch may have
    `spans == 0` (and an empty body) when all it reports is `dropped` spans: nothing to send.
    """

    spans: int
    body: bytes  # uncompressed; the sender compresses when the target asks for it
    content_type: str
    end_line: int
    dropped: tuple[Dropped, ...] = ()

    @property
    def dropped_spans(self) -> int:
        return sum(d.spans for d in self.dropped)


# -- redaction ---------------------------------------------------------------------------------

#: attribute keys that carry the conversation's text (OpenInference, OTel GenAI, and the legacy
#: Traceloop-style gen_ai.prompt/completion ones a replayed file may hold); `*` is an index
_CONTENT = re.compile(
    r"""
    (?:input|output)\.(?:value|mime_type)
    | llm\.(?:input|output)_messages\.\d+\.message\.(?:
        content
        | function_call_arguments_json
        | contents\.\d+\.message_content\.(?:text|image\.image\.url|data|encrypted_content)
      )
    | llm\.(?:tools|prompts|choices)(?:\..*)?
    | llm\.prompt_template\.(?:template|variables)
    | llm\.function_call
    | embedding\.embeddings\.\d+\.embedding\.text
    | retrieval\.documents\.\d+\.document\.content
    | reranker\.(?:query|(?:input|output)_documents\.\d+\.document\.content)
    | gen_ai\.(?:input\.messages|output\.messages|system_instructions|tool\.definitions)
    | gen_ai\.tool\.call\.(?:arguments|result)
    | gen_ai\.(?:prompt|completion)(?:\.\d+\.(?:content|tool_calls\.\d+\.arguments))?
    | .*\.tool_call\.function\.arguments
    """,
    re.VERBOSE,
)


@lru_cache(maxsize=16384)
def is_content_key(key: str) -> bool:
    """Whether an attribute with this key carries request or response content (text, images,
    tool arguments or schemas). Roles, names, ids, types, token counts and parameters do not."""
    return _CONTENT.fullmatch(key) is not None


def redact(line: Mapping[str, Any], exclude_request_data: bool) -> Mapping[str, Any]:
    """`line` without the attributes that carry conversation content (`is_content_key`), on
    spans, events and links, when `exclude_request_data`; else `line` itself.

    `exception` events stay whole: in tfgw's spans `exception.message` is tfgw's own error text
    ("provider 'x' returned HTTP 400", "no answer within 30.0 s"; `tfgw.errors`), never a
    provider body or a prompt, and the stack trace is the gateway's code. The span status
    message is the same text. Dropping them would hide why a request failed, which is what an
    excluding user still wants to see. Only unchanged parts are shared, never copied."""
    return _map_spans(line, _redact_span) if exclude_request_data else line


def _map_spans(
    line: Mapping[str, Any], change: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> Mapping[str, Any]:
    """`line` with `change(span)` for every span; every part that no span change touched is
    shared, and `line` itself comes back when `change` returned every span as it was."""
    changed = False
    resource_spans = []
    for rs in line.get("resourceSpans") or ():
        scope_spans = []
        rs_changed = False
        for ss in rs.get("scopeSpans") or ():
            spans = ss.get("spans") or ()
            kept = [change(span) for span in spans]
            if any(a is not b for a, b in zip(kept, spans, strict=True)):
                rs_changed = True
                ss = {**ss, "spans": kept}
            scope_spans.append(ss)
        if rs_changed:
            changed = True
            rs = {**rs, "scopeSpans": scope_spans}
        resource_spans.append(rs)
    return {**line, "resourceSpans": resource_spans} if changed else line


def _without_content(attributes: Sequence[Mapping[str, Any]] | None) -> Sequence[Mapping[str, Any]] | None:
    """`attributes` itself if none carries content, else a new list without those."""
    if not attributes:
        return attributes
    for kv in attributes:
        if is_content_key(kv.get("key") or ""):
            return [kv for kv in attributes if not is_content_key(kv.get("key") or "")]
    return attributes


def _redact_span(span: Mapping[str, Any]) -> Mapping[str, Any]:
    out: dict[str, Any] | None = None
    attributes = span.get("attributes")
    kept = _without_content(attributes)
    if kept is not attributes:
        out = {**span, "attributes": kept}
    for field in ("events", "links"):
        items = span.get(field)
        if not items:
            continue
        new = [_redact_item(item) for item in items]
        if any(a is not b for a, b in zip(new, items, strict=True)):
            out = out if out is not None else dict(span)
            out[field] = new
    return span if out is None else out


def _redact_item(item: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = item.get("attributes")
    kept = _without_content(attributes)
    return item if kept is attributes else {**item, "attributes": kept}


# -- project -----------------------------------------------------------------------------------


def with_project(line: Mapping[str, Any], project: str, model_id: bool = False) -> Mapping[str, Any]:
    """`line` with `openinference.project.name` = `project` on every resource (replaced if
    present), and Arize's legacy alias `model_id` too when `model_id`. An empty `project`
    leaves the line as it is."""
    if not project:
        return line
    resource_spans = []
    for rs in line.get("resourceSpans") or ():
        resource = _project_resource(rs.get("resource") or {}, project, model_id)
        resource_spans.append({**rs, "resource": resource})
    return {**line, "resourceSpans": resource_spans}


def _project_resource(resource: Mapping[str, Any], project: str, model_id: bool) -> dict[str, Any]:
    keys = (sc.PROJECT_NAME, MODEL_ID) if model_id else (sc.PROJECT_NAME,)
    attributes = [kv for kv in resource.get("attributes") or () if kv.get("key") not in keys]
    attributes += [{"key": key, "value": {"stringValue": project}} for key in keys]
    return {**resource, "attributes": attributes}


# -- conventions -----------------------------------------------------------------------------------


def project(
    line: Mapping[str, Any], conventions: Sequence[str], keep: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """`line` for a target that receives `conventions`: on each span, without the attributes
    and span events of the other convention whose value the received one carries
    (`tfgw.tracing.conventions`), except those in `keep`. `line` itself for a target that
    receives both; a span with nothing to leave out is shared, not copied."""
    received = tuple(c for c in CONVENTIONS if c in conventions)
    if received == CONVENTIONS:
        return line
    candidates = leavable(received, keep)
    return _map_spans(line, lambda span: _project_span(span, candidates))


def _project_span(span: Mapping[str, Any], candidates: frozenset[str]) -> Mapping[str, Any]:
    attributes = span.get("attributes") or ()
    raw = {kv.get("key"): kv.get("value") for kv in attributes}
    keys = candidates.intersection(raw)
    events = span.get("events") or ()
    names = [name for e in events if (name := e.get("name")) in candidates]
    if not keys and not names:
        return span
    get = _values(span, raw)
    gone = {key for key in (*keys, *names) if _carried(key, raw, get)}
    if not gone:
        return span
    out = dict(span)
    if keys:
        out["attributes"] = [kv for kv in attributes if kv.get("key") not in gone]
    if names:
        out["events"] = [e for e in events if e.get("name") not in gone]
    return out


def _carried(key: str, raw: Mapping[Any, Any], get: Get) -> bool:
    rule = CARRIED[key]
    if isinstance(rule, tuple):  # the same value elsewhere: compared as written, without decoding
        value = raw.get(key)
        return value is not None and any(raw.get(other) == value for other in rule)
    return carried(key, get(key), get)


def _values(span: Mapping[str, Any], raw: Mapping[Any, Any]) -> Get:
    """The span's plain value of a key (None when absent); of a span event's name, its time
    after the span's start in seconds."""
    seen: dict[str, Any] = {}

    def get(key: str) -> Any:
        if key in seen:
            return seen[key]
        if key in raw:
            written = raw[key] or {}
            value = written["stringValue"] if "stringValue" in written else otlp.decode_value(written)
        else:
            events = span.get("events") or ()
            value = next((_offset(span, e) for e in events if e.get("name") == key), None)
        seen[key] = value
        return value

    return get


def _offset(span: Mapping[str, Any], event: Mapping[str, Any]) -> float | None:
    try:
        return (int(event["timeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e9
    except (KeyError, TypeError, ValueError):
        return None


def prepare(line: Mapping[str, Any], target: EncodeTarget) -> Mapping[str, Any]:
    """What of `line` leaves for `target`: redacted as it asks, projected to the conventions it
    receives, stamped with its project."""
    redacted = redact(line, target.exclude_request_data)
    projected = project(redacted, target.conventions, KEPT_BY_KIND.get(target.kind, ()))
    return with_project(projected, target.project, model_id=target.kind == "arize")


# -- encoding ----------------------------------------------------------------------------------


def to_protobuf(lines: Iterable[Mapping[str, Any]]) -> ExportTraceServiceRequest:
    """All spans of `lines` in one request, spans of equal resource and scope merged. Raises
    ValueError (or TypeError) on a line that breaks the OTLP/JSON rules (a bad id, say)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return ExportTraceServiceRequest.FromString(_merge(_PROTOBUF, lines))


def to_json(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """All spans of `lines` as one OTLP/JSON `ExportTraceServiceRequest` body, merged the same
    way. The spans are written as the lines hold them (already OTLP/JSON)."""
    return _merge(_JSON, lines)


def _merge(wire: _Wire, lines: Iterable[Mapping[str, Any]]) -> bytes:
    batch = _Batch(wire.fmt)
    for line in lines:
        for run in wire.runs(line):
            batch.add(run)
    return batch.body()


def batches(
    lines: Iterable[Mapping[str, Any]],
    protocol: str = "http/protobuf",
    *,
    max_bytes: int = MAX_BATCH_BYTES,
    max_spans: int = DEFAULT_MAX_SPANS,
) -> Iterator[EncodedBatch]:
    """`lines` as payloads for a target speaking `protocol` (OTLP/JSON for http/json, protobuf
    for grpc and http/protobuf) of at most `max_bytes` (uncompressed) and `max_spans` spans each.

    Lines are kept whole: a line that does not fit closes the batch and opens the next. A line
    over the limits on its own is split span by span; a span that cannot fit even alone, or
    cannot be encoded, is dropped and reported in the `dropped` of the next batch yielded (one
    with no spans at the end if need be), never retried."""
    wire = _JSON if protocol == "http/json" else _PROTOBUF
    content_type = JSON if protocol == "http/json" else PROTOBUF
    batch = _Batch(wire.fmt)
    dropped: list[Dropped] = []
    index = -1

    def emit(end_line: int) -> EncodedBatch:
        nonlocal batch, dropped
        body = batch.body() if batch.spans else b""
        out = EncodedBatch(batch.spans, body, content_type, end_line, tuple(dropped))
        batch, dropped = _Batch(wire.fmt), []
        return out

    for index, line in enumerate(lines):
        line_dropped: list[Dropped] = []
        runs = wire.runs(line, line_dropped, max_bytes)
        spans, size = batch.cost(runs)
        if batch.spans and (batch.spans + spans > max_spans or batch.size + size > max_bytes):
            yield emit(index)
            spans, size = batch.cost(runs)
        dropped += line_dropped
        if spans <= max_spans and batch.size + size <= max_bytes:
            for run in runs:
                batch.add(run)
            continue
        for run in runs:  # this line alone is over the limits: span by span
            for data in run.spans:
                one = _Run(run.group, [data], len(data))
                if batch.spans and (
                    batch.spans >= max_spans or batch.size + batch.cost([one])[1] > max_bytes
                ):
                    yield emit(index)
                batch.add(one)
    if batch.spans or dropped:
        yield emit(index + 1)


def _too_big(data: bytes, max_bytes: int) -> str:
    return f"{len(data):,} bytes encoded: over the {max_bytes:,}-byte limit of a payload"


# -- the two wire formats ------------------------------------------------------------------------

#: (resource, scope): each as its encoded field(s) in this wire format, schemaUrl included
Group = tuple[bytes, bytes]


@dataclass(slots=True)
class _Run:
    """Encoded spans of one line under one resource and scope."""

    group: Group
    spans: list[bytes]
    size: int  # of the spans, summed


class WireFormat(Protocol):
    """One wire format: encodes resources, scopes and spans on their own, and frames a batch of
    them as one request."""

    #: an upper bound of what framing a span costs in a batch
    per_span: int

    def overhead(self, group: Group) -> int:
        """An upper bound of what a group costs a batch beyond its spans."""
        ...

    def resource(self, resource: Mapping[str, Any], schema_url: str) -> bytes: ...
    def scope(self, scope: Mapping[str, Any], schema_url: str) -> bytes: ...
    def span(self, span: Mapping[str, Any]) -> bytes: ...

    def frame(self, resources: Mapping[bytes, Mapping[bytes, list[bytes]]]) -> bytes:
        """The body: encoded resource -> encoded scope -> encoded spans, in order of appearance."""
        ...


class _Wire:
    """A wire format and the memo of the resources and scopes it has encoded: lines to runs."""

    def __init__(self, fmt: WireFormat) -> None:
        self.fmt = fmt
        #: a resource's or scope's OTLP/JSON (and schemaUrl) -> its encoded field(s); a memo
        #: shared by every call and thread, so a clear() at any time is harmless
        self._parts: dict[bytes, bytes] = {}

    def runs(
        self, line: Mapping[str, Any], dropped: list[Dropped] | None = None, max_bytes: int = 0
    ) -> list[_Run]:
        """The spans of `line`, encoded, by resource and scope. With `dropped`, a span that
        cannot be encoded, or that cannot fit in a batch of `max_bytes` even alone, is reported
        there and left out; without, an encoding error is raised."""
        out = []
        for rs in line.get("resourceSpans") or ():
            resource = rs.get("resource") or {}
            rkey = orjson.dumps(resource) + b"|" + orjson.dumps(rs.get("schemaUrl") or "")
            rpart = self._parts.get(rkey)
            if rpart is None:
                rpart = self._remember(rkey, self.fmt.resource(resource, rs.get("schemaUrl") or ""))
            for ss in rs.get("scopeSpans") or ():
                scope = ss.get("scope") or {}
                skey = orjson.dumps(scope) + b"|" + orjson.dumps(ss.get("schemaUrl") or "")
                spart = self._parts.get(skey)
                if spart is None:
                    spart = self._remember(skey, self.fmt.scope(scope, ss.get("schemaUrl") or ""))
                group = (rpart, spart)
                room = max_bytes - _Batch.BASE - self.fmt.per_span - self.fmt.overhead(group)
                encoded, size = [], 0
                for span in ss.get("spans") or ():
                    if dropped is None:
                        data = self.fmt.span(span)
                    else:
                        try:
                            data = self.fmt.span(span)
                        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                            dropped.append(Dropped(1, f"span {_describe(span)} cannot be encoded: {exc}"))
                            continue
                        if len(data) > room:  # a huge prompt: send the span without its text
                            trimmed = self.fmt.span(_redact_span(span))
                            if len(trimmed) > room:
                                dropped.append(
                                    Dropped(1, f"span {_describe(span)} is {_too_big(data, max_bytes)}")
                                )
                                continue
                            reason = (
                                f"span {_describe(span)} sent without its text: {_too_big(data, max_bytes)}"
                            )
                            dropped.append(Dropped(0, reason))
                            data = trimmed
                    encoded.append(data)
                    size += len(data)
                if encoded:
                    out.append(_Run(group, encoded, size))
        return out

    def _remember(self, key: bytes, data: bytes) -> bytes:
        if len(self._parts) > 4096:  # resources and scopes are few; this is a bound, not a policy
            self._parts.clear()
        self._parts[key] = data
        return data


class _Batch:
    """Encoded spans gathered for one payload, by resource and scope in order of first
    appearance; `size` is an upper bound of the body's length."""

    __slots__ = ("fmt", "groups", "size", "spans")
    BASE = 32  # the request's own framing, generously

    def __init__(self, fmt: WireFormat) -> None:
        self.fmt = fmt
        self.groups: dict[Group, list[bytes]] = {}
        self.size = self.BASE
        self.spans = 0

    def cost(self, runs: list[_Run]) -> tuple[int, int]:
        """(spans, bytes) that adding `runs` would add."""
        spans = size = 0
        for run in runs:
            spans += len(run.spans)
            size += run.size
            if run.group not in self.groups:
                size += self.fmt.overhead(run.group)
        return spans, size + spans * self.fmt.per_span

    def add(self, run: _Run) -> None:
        spans = self.groups.get(run.group)
        if spans is None:
            spans = self.groups[run.group] = []
            self.size += self.fmt.overhead(run.group)
        spans += run.spans
        self.size += run.size + len(run.spans) * self.fmt.per_span
        self.spans += len(run.spans)

    def body(self) -> bytes:
        return self.fmt.frame(_by_resource(self.groups))


class _JsonFormat:
    """OTLP/JSON (http/json): the spans as the lines hold them."""

    per_span = 1  # a comma

    def overhead(self, group: Group) -> int:
        return 64 + len(group[0]) + len(group[1])

    def resource(self, resource: Mapping[str, Any], schema_url: str) -> bytes:
        head = b'"resource":' + orjson.dumps(resource)
        return head + (b',"schemaUrl":' + orjson.dumps(schema_url) if schema_url else b"")

    def scope(self, scope: Mapping[str, Any], schema_url: str) -> bytes:
        head = b'"scope":' + orjson.dumps(scope)
        return head + (b',"schemaUrl":' + orjson.dumps(schema_url) if schema_url else b"")

    def span(self, span: Mapping[str, Any]) -> bytes:
        return orjson.dumps(span)

    def frame(self, resources: Mapping[bytes, Mapping[bytes, list[bytes]]]) -> bytes:
        resource_spans = []
        for rkey, scopes in resources.items():
            scope_spans = b",".join(
                b"{" + skey + b',"spans":[' + b",".join(spans) + b"]}" for skey, spans in scopes.items()
            )
            resource_spans.append(b"{" + rkey + b',"scopeSpans":[' + scope_spans + b"]}")
        return b'{"resourceSpans":[' + b",".join(resource_spans) + b"]}"


#: one of each, for every call and thread: their memos (encoded resources, scopes and short
#: attributes) are worth keeping from batch to batch, and only ever read or replaced whole
_PROTOBUF = _Wire(ProtobufFormat())
_JSON = _Wire(_JsonFormat())


def _by_resource(groups: dict[Group, list[bytes]]) -> dict[bytes, dict[bytes, list[bytes]]]:
    out: dict[bytes, dict[bytes, list[bytes]]] = {}
    for (rkey, skey), spans in groups.items():
        out.setdefault(rkey, {})[skey] = spans
    return out


def _describe(span: Mapping[str, Any]) -> str:
    return f"{span.get('name')!r} (trace {span.get('traceId')}, span {span.get('spanId')})"
