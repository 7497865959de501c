"""`tfgw traces check`: validate stored spans against OTLP/JSON, OpenInference and OTel GenAI.

Input: trace files, JSON Lines, each line one OTLP/JSON `ExportTraceServiceRequest`
(`{"resourceSpans": [...]}`), as tfgw writes them (one request's spans a line) or as the
OpenTelemetry Collector's file exporter and other OTLP/JSON tools do (several traces on a line, a
trace over several lines). `.gz` files are read through gzip; `-` is standard input. A directory
stands for its `*.jsonl` and `*.json` files (and their `.gz`), sorted by name, not recursing, so
the gateway's `X.rows` files are never read.

Every rule has an id, a severity and a description in `RULES`; `tfgw traces check --help` prints
the table. Errors break the conventions (OTLP/JSON spec, OpenInference, OTel GenAI v1.41.1 as
tfgw emits both on one span); warnings are what a reader survives: a torn last line (a writer
that crashed mid-write), a child outside its parent's time, a resource without `service.name`.
Which spans get which checks:

- every span: OTLP/JSON structure (ids, times, kind, status, attributes, events, links),
  `openinference.span.kind` values, the JSON-string attributes (`metadata`,
  `llm.invocation_parameters`, `embedding.invocation_parameters`),
  `gen_ai.response.finish_reasons`, `gen_ai.response.time_to_first_chunk`;
- LLM spans (`openinference.span.kind` = LLM, or `gen_ai.operation.name` in chat, text_completion,
  generate_content) and EMBEDDING spans (`openinference.span.kind` = EMBEDDING, or
  `gen_ai.operation.name` = embeddings): both conventions' required attributes, token counts,
  message indices (LLM), `error.type` on ERROR status. Spans of tools that emit neither
  vocabulary get the structure checks alone.

Streaming and memory: a file is read a line at a time (a line is held whole while it is checked:
one `ExportTraceServiceRequest`). What outlives a line is the state of open traces for the
cross-line checks (duplicate span ids, parent links, child timing): for each span of an open trace
its id, times and name (about 350 bytes with its share of the trace's state). Bounds:
`MAX_SPANS_PER_TRACE` spans a trace (past it that trace's duplicate and orphan checks stop, with a
`trace-too-large` warning), `MAX_OPEN_TRACES` open traces and `MAX_REMEMBERED_SPANS` spans over
all of them (the least recently seen trace is closed first; its orphan check runs then), and the
ids of the last `MAX_CLOSED_TRACE_IDS` closed traces: under 100 MB at the bounds, 24 MB for a
file of tfgw traces. A trace whose spans come back after it was closed is checked on as a new
piece with its orphan check off, and is not counted twice while its id is among those remembered.
Traces may run across the files of one run (the Collector rotates files mid-trace).

Speed (see `_Checker.attributes`, `_Shape`): each span's attributes are decoded once, on a fast
path for well-formed scalars; what depends only on an LLM span's key set is computed once per
distinct key set; a line's resource, and JSON parameters equal to the last valid ones, are not
re-checked.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import math
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, cast

import orjson

from tfgw.errors import InputError
from tfgw.tracing import semconv

__all__ = [
    "MAX_CLOSED_TRACE_IDS",
    "MAX_OPEN_TRACES",
    "MAX_REMEMBERED_SPANS",
    "MAX_SPANS_PER_TRACE",
    "RULES",
    "CheckResult",
    "Finding",
    "Rule",
    "TraceFileError",
    "check_files",
    "json_type",
    "open_trace_file",
    "read_lines",
    "rules_help",
    "trace_files",
]

ERROR: Final = "error"
WARNING: Final = "warning"


@dataclass(frozen=True, slots=True)
class Rule:
    severity: str
    description: str


RULES: Final[dict[str, Rule]] = {
    # -- the file and OTLP/JSON (opentelemetry-proto docs/specification.md) -------------------
    "json": Rule(ERROR, "a line is not valid JSON"),
    "torn-line": Rule(WARNING, "a last line without newline that is not JSON (a crash mid-write)"),
    "structure": Rule(ERROR, "not an ExportTraceServiceRequest: no resourceSpans, or a list/object mistyped"),
    "snake-case-key": Rule(ERROR, "a snake_case field name (trace_id): OTLP/JSON keys are lowerCamelCase"),
    "trace-id": Rule(ERROR, "traceId missing, not 32 hex digits, or all zero"),
    "span-id": Rule(ERROR, "spanId missing, not 16 hex digits, or all zero"),
    "parent-span-id": Rule(ERROR, "parentSpanId neither empty nor 16 hex digits"),
    "base64-id": Rule(ERROR, "an id in base64 (proto3 JSON's default): OTLP/JSON ids are hex"),
    "time": Rule(ERROR, "a time missing or not a uint64 (a decimal string or a JSON integer)"),
    "time-order": Rule(ERROR, "endTimeUnixNano before startTimeUnixNano"),
    "time-range": Rule(ERROR, "a time before the year 2000: not Unix nanoseconds"),
    "kind": Rule(ERROR, "kind not an integer 0..5 (enum names are not allowed)"),
    "status": Rule(ERROR, "status not an object with an integer code 0..2 and a string message"),
    "attribute": Rule(ERROR, "attributes not [{key, value}] with exactly one AnyValue field; a key twice"),
    "duplicate-span-id": Rule(ERROR, "two spans of one trace with the same spanId"),
    # -- trees and resources ------------------------------------------------------------------
    "orphan": Rule(ERROR, "more than one span of a trace with a parent outside it (only the root may)"),
    "child-time": Rule(WARNING, "a span starts before its parent or ends after it, by more than 1 ms"),
    "trace-too-large": Rule(WARNING, "a trace has too many spans to remember: its orphan checks stop"),
    "service-name": Rule(WARNING, "a resource without service.name"),
    # -- OpenInference and OTel GenAI ---------------------------------------------------------
    "span-kind-value": Rule(ERROR, "openinference.span.kind not an OpenInference span kind"),
    "span-kind-unknown": Rule(WARNING, "openinference.span.kind is UNKNOWN"),
    "kind-mismatch": Rule(ERROR, "openinference.span.kind and gen_ai.operation.name disagree"),
    "llm-required": Rule(ERROR, "an LLM span without a required attribute of either convention"),
    "embedding-required": Rule(ERROR, "an EMBEDDING span without a required attribute of either convention"),
    "token-count": Rule(ERROR, "a token count (llm.token_count.*, gen_ai.usage.*) not an integer >= 0"),
    "token-total": Rule(ERROR, "llm.token_count.total is not prompt + completion"),
    "finish-reasons": Rule(ERROR, "gen_ai.response.finish_reasons not an array of strings"),
    "json-attribute": Rule(ERROR, "metadata or *.invocation_parameters not a string holding a JSON object"),
    "messages": Rule(ERROR, "llm.input/output_messages: an index without message.role, or gaps in 0, 1, 2…"),
    "time-to-first-chunk": Rule(ERROR, "gen_ai.response.time_to_first_chunk not a non-negative double"),
    "error-type": Rule(ERROR, "an LLM or EMBEDDING span with status ERROR and no error.type"),
}

MAX_SPANS_PER_TRACE: Final = 10_000
MAX_OPEN_TRACES: Final = 10_000
MAX_REMEMBERED_SPANS: Final = 200_000
MAX_CLOSED_TRACE_IDS: Final = 100_000
CHILD_TOLERANCE_NS: Final = 1_000_000  # 1 ms
YEAR_2000_NS: Final = 946_684_800 * 10**9
U64_MAX: Final = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_VALUE_DEPTH: Final = 32
MAX_SHAPES: Final = 1024  # distinct attribute key sets of LLM spans remembered (see _Shape)

OI_KINDS: Final = frozenset(
    (
        "LLM",
        "EMBEDDING",
        "CHAIN",
        "RETRIEVER",
        "RERANKER",
        "TOOL",
        "AGENT",
        "GUARDRAIL",
        "EVALUATOR",
        "PROMPT",
    )
)
LLM_OPERATIONS: Final = frozenset(("chat", "text_completion", "generate_content"))
EMBEDDINGS_OPERATION: Final = "embeddings"
LLM_REQUIRED: Final = (
    semconv.OI_SPAN_KIND,
    semconv.LLM_SYSTEM,
    semconv.LLM_MODEL,
    semconv.GEN_OPERATION,
    semconv.GEN_PROVIDER,
    semconv.GEN_REQUEST_MODEL,
)
EMBEDDING_REQUIRED: Final = (
    semconv.OI_SPAN_KIND,
    semconv.EMBEDDING_MODEL,
    semconv.GEN_OPERATION,
    semconv.GEN_PROVIDER,
    semconv.GEN_REQUEST_MODEL,
)
TOKEN_PREFIXES: Final = ("llm.token_count.", "gen_ai.usage.")
MESSAGE_PREFIXES: Final = (semconv.LLM_INPUT + ".", semconv.LLM_OUTPUT + ".")
COUNT_AND_MESSAGE_PREFIXES: Final = TOKEN_PREFIXES + MESSAGE_PREFIXES
JSON_OBJECT_KEYS: Final = (semconv.METADATA, semconv.LLM_PARAMS, semconv.EMBEDDING_PARAMS)

# a span with none of these gets no convention check (most non-LLM spans)
SEMANTIC_KEYS: Final = frozenset(
    (
        semconv.OI_SPAN_KIND,
        semconv.GEN_OPERATION,
        semconv.GEN_FINISH_REASONS,
        semconv.GEN_TTFC,
        *JSON_OBJECT_KEYS,
    )
)

KIND_NAMES: Final = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES: Final = ("UNSET", "OK", "ERROR")
STATUS_ERROR: Final = 2

# The fields of each OTLP/JSON object a trace file holds: the snake_case spelling of any of them
# is the proto field name, which OTLP/JSON forbids.
LINE_KEYS: Final = frozenset(("resourceSpans",))
RESOURCE_SPANS_KEYS: Final = frozenset(("resource", "scopeSpans", "schemaUrl"))
RESOURCE_KEYS: Final = frozenset(("attributes", "droppedAttributesCount", "entityRefs"))
SCOPE_SPANS_KEYS: Final = frozenset(("scope", "spans", "schemaUrl"))
SCOPE_KEYS: Final = frozenset(("name", "version", "attributes", "droppedAttributesCount"))
SPAN_KEYS: Final = frozenset(
    (
        "traceId",
        "spanId",
        "traceState",
        "parentSpanId",
        "flags",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "droppedAttributesCount",
        "events",
        "droppedEventsCount",
        "links",
        "droppedLinksCount",
        "status",
    )
)
EVENT_KEYS: Final = frozenset(("timeUnixNano", "name", "attributes", "droppedAttributesCount"))
LINK_KEYS: Final = frozenset(
    ("traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags")
)
STATUS_KEYS: Final = frozenset(("message", "code"))
VALUE_KEYS: Final = frozenset(
    ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue")
)


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


_ALL_KEYS = (
    LINE_KEYS | RESOURCE_SPANS_KEYS | RESOURCE_KEYS | SCOPE_SPANS_KEYS | SCOPE_KEYS | SPAN_KEYS | EVENT_KEYS
)
SNAKE_TO_CAMEL: Final = {_snake(k): k for k in _ALL_KEYS | LINK_KEYS | VALUE_KEYS if _snake(k) != k}

_HEX32 = re.compile(r"[0-9a-fA-F]{32}").fullmatch
_HEX16 = re.compile(r"[0-9a-fA-F]{16}").fullmatch
_INT64 = re.compile(r"-?[0-9]+").fullmatch
_ZERO32 = "0" * 32
_ZERO16 = "0" * 16
_NO_ID: Final = object()


class TraceFileError(InputError):
    """A trace file that cannot be read (missing, unreadable, a broken gzip stream): bad input."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"cannot read {file}: {reason}")
        self.file = file


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int
    severity: str
    rule: str
    trace_id: str | None
    span_id: str | None
    span: str | None  # the span's name, else its id
    message: str

    def text(self) -> str:
        """`FILE:LINE: error RULE trace=<8 hex> span=<name>: message` (trace/span left out if unknown)."""
        where = f"{self.file}:{self.line}: {self.severity} {self.rule}"
        if self.trace_id is not None:
            where += f" trace={self.trace_id[:8]}"
        if self.span is not None:
            where += f" span={self.span}"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "severity": self.severity,
            "rule": self.rule,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "span": self.span,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    files: list[str]
    spans: int
    traces: int
    errors: int
    warnings: int
    findings: list[Finding]  # the first `max_findings`, in file and line order

    @property
    def hidden(self) -> int:
        """Findings counted but not kept (past `max_findings`)."""
        return self.errors + self.warnings - len(self.findings)

    def summary(self) -> str:
        return (
            f"checked {_count(self.spans, 'span')} in {_count(self.traces, 'trace')} "
            f"from {_count(len(self.files), 'file')}: "
            f"{_count(self.errors, 'error')}, {_count(self.warnings, 'warning')}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "spans": self.spans,
            "traces": self.traces,
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [f.as_dict() for f in self.findings],
        }


def rules_help() -> str:
    """The rule table as plain text lines: `id  severity  description`."""
    width = max(map(len, RULES))
    return "\n".join(f"{rid:<{width}}  {r.severity:<7}  {r.description}" for rid, r in RULES.items())


STDIN_NAME: Final = "<stdin>"
TRACE_FILE_SUFFIXES: Final = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


def trace_files(args: Iterable[str | Path]) -> list[str]:
    """The files the arguments name: a directory's trace files sorted, `-` as `<stdin>`.

    Raises TraceFileError for a path that does not exist or a directory that cannot be listed.
    """
    files: list[str] = []
    for arg in args:
        name = str(arg)
        if name == "-":
            files.append(STDIN_NAME)
            continue
        path = Path(name)
        try:
            if path.is_dir():
                entries = sorted(p.name for p in path.iterdir() if p.name.endswith(TRACE_FILE_SUFFIXES))
                files.extend(str(path / e) for e in entries if not (path / e).is_dir())
            else:
                path.stat()
                files.append(name)
        except OSError as exc:
            raise TraceFileError(name, exc.strerror or str(exc)) from exc
    return files


@contextmanager
def open_trace_file(name: str, path: str | Path | None = None) -> Iterator[Iterator[bytes]]:
    """The lines of the trace file `name` (read from `path` instead when given: standard input
    spooled to disk), through gzip for `.gz`. A file that cannot be opened or read (a broken gzip
    stream, a disk error) is a TraceFileError naming `name`."""
    source = Path(name if path is None else path)
    try:
        raw = gzip.open(source, "rb") if name.endswith(".gz") else open(source, "rb")  # noqa: SIM115
        stream = cast("IO[bytes]", raw)
    except OSError as exc:
        raise TraceFileError(name, exc.strerror or str(exc)) from exc
    with stream:
        yield read_lines(name, stream)


def read_lines(name: str, stream: Iterable[bytes]) -> Iterator[bytes]:
    """`stream`'s lines, its read errors raised as a TraceFileError naming `name`."""
    try:
        yield from stream
    except (OSError, EOFError) as exc:
        raise TraceFileError(name, getattr(exc, "strerror", None) or str(exc)) from exc


def check_files(
    args: Sequence[str | Path], *, max_findings: int = 1000, stdin: BinaryIO | None = None
) -> CheckResult:
    """Check every line of the files the arguments name (see `trace_files`)."""
    files = trace_files(args)
    checker = _Checker(max_findings)
    for index, name in enumerate(files):
        checker.file_index = index
        if name == STDIN_NAME:
            checker.check_stream(name, read_lines(name, stdin if stdin is not None else sys.stdin.buffer))
        else:
            with open_trace_file(name) as lines:
                checker.check_stream(name, lines)
    checker.close_all()
    findings = [f for _, f in sorted(checker.findings, key=lambda item: (item[0], item[1].line))]
    return CheckResult(files, checker.spans, checker.traces, checker.errors, checker.warnings, findings)


# -- the checker ---------------------------------------------------------------------------------

# Where a finding is: (file, line, trace id, span id, span label).
_Where = tuple[str, int, "str | None", "str | None", "str | None"]
# A span whose parent was not seen yet: (where, start, end).
_Waiting = tuple[_Where, "int | None", "int | None"]


class _Trace:
    """What the cross-line checks keep of one open trace."""

    __slots__ = ("closed_before", "remembered", "spans", "too_large", "waiting")

    def __init__(self, closed_before: bool) -> None:
        # span id -> (start, end, label) of the spans seen (start/end None when invalid)
        self.spans: dict[str, tuple[int | None, int | None, str | None]] = {}
        # parent span id -> the spans that named it before it was seen
        self.waiting: dict[str, list[_Waiting]] = {}
        self.remembered = 0
        self.too_large = False
        self.closed_before = closed_before


class _Checker:
    def __init__(self, max_findings: int) -> None:
        self.max_findings = max_findings
        self.findings: list[tuple[int, Finding]] = []
        self.errors = self.warnings = self.spans = self.traces = 0
        self.file_index = 0
        self.open: OrderedDict[str, _Trace] = OrderedDict()
        self.closed: OrderedDict[str, None] = OrderedDict()
        self.remembered = 0
        self.shapes: dict[tuple[str, ...], _Shape] = {}
        self._last_resource: tuple[Any, dict[str, Any]] = (None, {})  # raw attributes, decoded
        self._last_json_objects: dict[str, str] = {}  # key -> its last value that held a JSON object
        self._cur_key: str | None = None  # the last span's trace id as written, and its state
        self._cur: _Trace | None = None
        self._last_trace_id: object = _NO_ID  # the last valid traceId (ids repeat within a line)
        self._last_trace_key: str | None = None  # and its lower-case form

    # -- findings ------------------------------------------------------------------------------

    def add(self, rule: str, where: _Where, message: str) -> None:
        severity = RULES[rule].severity
        if severity == ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.findings) < self.max_findings:
            file, line, trace_id, span_id, span = where
            finding = Finding(file, line, severity, rule, trace_id, span_id, span, message)
            self.findings.append((self.file_index, finding))

    # -- lines ---------------------------------------------------------------------------------

    def check_stream(self, name: str, stream: Iterable[bytes]) -> None:
        lineno = 0
        for raw in stream:
            lineno += 1
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if not raw.strip():
                    continue  # a blank line holds nothing to check
                where: _Where = (name, lineno, None, None, None)
                if raw.endswith(b"\n"):
                    self.add("json", where, f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
                else:
                    self.add("torn-line", where, f"the last line is cut short ({len(raw)} bytes, no newline)")
                continue
            self.check_line(data, name, lineno)
            if len(self.open) > MAX_OPEN_TRACES or self.remembered > MAX_REMEMBERED_SPANS:
                self.close_oldest()

    def check_line(self, data: Any, file: str, lineno: int) -> None:
        where: _Where = (file, lineno, None, None, None)
        if type(data) is not dict:
            self.add(
                "structure", where, f"a line must be an object with resourceSpans, not {json_type(data)}"
            )
            return
        data = self.camel_keys(data, LINE_KEYS, where)
        resource_spans = data.get("resourceSpans")
        if type(resource_spans) is not list:
            if resource_spans is None:
                self.add("structure", where, "no resourceSpans: not an ExportTraceServiceRequest")
            else:
                self.add("structure", where, f"resourceSpans is {json_type(resource_spans)}, not a list")
            return
        for rs in resource_spans:
            if type(rs) is not dict:
                self.add("structure", where, f"a resourceSpans item is {json_type(rs)}, not an object")
                continue
            rs = self.camel_keys(rs, RESOURCE_SPANS_KEYS, where)
            res = rs.get("resource")
            res_attrs: dict[str, Any] = {}
            if type(res) is dict:
                res = self.camel_keys(res, RESOURCE_KEYS, where)
                raw = res.get("attributes")
                if raw is not None and raw == self._last_resource[0]:
                    res_attrs = self._last_resource[1]  # a writer repeats its resource on every line
                else:
                    before = self.errors
                    res_attrs = self.attributes(raw, where, "resource attribute")
                    if self.errors == before:
                        self._last_resource = (raw, res_attrs)
            elif res is not None:
                self.add("structure", where, f"resource is {json_type(res)}, not an object")
            service = res_attrs.get(semconv.SERVICE_NAME)
            if type(service) is not str or not service:
                self.add("service-name", where, "the resource has no service.name")
            scope_spans = rs.get("scopeSpans")
            if scope_spans is None:
                continue
            if type(scope_spans) is not list:
                self.add("structure", where, f"scopeSpans is {json_type(scope_spans)}, not a list")
                continue
            for ss in scope_spans:
                if type(ss) is not dict:
                    self.add("structure", where, f"a scopeSpans item is {json_type(ss)}, not an object")
                    continue
                ss = self.camel_keys(ss, SCOPE_SPANS_KEYS, where)
                scope = ss.get("scope")
                if type(scope) is dict:
                    scope = self.camel_keys(scope, SCOPE_KEYS, where)
                    self.attributes(scope.get("attributes"), where, "scope attribute")
                elif scope is not None:
                    self.add("structure", where, f"scope is {json_type(scope)}, not an object")
                spans = ss.get("spans")
                if spans is None:
                    continue
                if type(spans) is not list:
                    self.add("structure", where, f"spans is {json_type(spans)}, not a list")
                    continue
                for span in spans:
                    if type(span) is dict:
                        self.check_span(span, file, lineno)
                    else:
                        self.add("structure", where, f"a span is {json_type(span)}, not an object")

    def camel_keys(self, obj: dict[str, Any], known: frozenset[str], where: _Where) -> dict[str, Any]:
        """obj, with any snake_case OTLP field reported and renamed so the other checks still run."""
        if known.issuperset(obj):
            return obj
        obj, snake = _camel(obj)
        self.snake_keys(snake, where)
        return obj

    def snake_keys(self, keys: list[str], where: _Where) -> None:
        for key in keys:
            self.add(
                "snake-case-key", where, f"{key!r} is snake_case: OTLP/JSON uses {SNAKE_TO_CAMEL[key]!r}"
            )

    # -- spans ---------------------------------------------------------------------------------

    def check_span(self, span: dict[str, Any], file: str, lineno: int) -> None:
        self.spans += 1
        snake: list[str] = []
        if not SPAN_KEYS.issuperset(span):
            span, snake = _camel(span)
        trace_id: Any = span.get("traceId")
        span_id: Any = span.get("spanId")
        name = span.get("name")
        tid = trace_id if type(trace_id) is str else None
        sid = span_id if type(span_id) is str else None
        label = name if type(name) is str and name else sid
        where: _Where = (file, lineno, tid, sid, label)
        if snake:
            self.snake_keys(snake, where)
        if name is not None and type(name) is not str:
            self.add("structure", where, f"name is {json_type(name)}, not a string")

        # ids: the fast path for valid ones, _id_problem to say what is wrong with the others
        tkey: str | None
        skey: str | None
        if trace_id == self._last_trace_id:
            tkey = self._last_trace_key
        elif (problem := _id_problem(trace_id, "traceId", 32, "trace-id")) is None:
            tkey = self._last_trace_key = trace_id.lower()
            self._last_trace_id = trace_id
        else:
            self.add(problem[0], where, problem[1])
            tkey = tid or None
        if type(span_id) is str and _HEX16(span_id) and span_id != _ZERO16:
            skey = span_id.lower()
        else:
            problem = _id_problem(span_id, "spanId", 16, "span-id")
            if problem is not None:
                self.add(problem[0], where, problem[1])
            skey = sid or None
        parent = span.get("parentSpanId")
        parent_key: str | None = None
        if parent is None or parent == "" or parent == _ZERO16:
            pass
        elif type(parent) is str and _HEX16(parent):
            parent_key = parent.lower()
        else:
            problem = _id_problem(parent, "parentSpanId", 16, "parent-span-id", zero_ok=True)
            if problem is not None:
                self.add(problem[0], where, problem[1])
            parent_key = parent if type(parent) is str else None

        # times (19 digits: Unix nanoseconds from 2001 to 2286), kind, status
        start = span.get("startTimeUnixNano")
        if type(start) is str and len(start) == 19 and start.isascii() and start.isdigit():
            start = int(start)
        else:
            start = self.nanos(span, "startTimeUnixNano", where)
        end = span.get("endTimeUnixNano")
        if type(end) is str and len(end) == 19 and end.isascii() and end.isdigit():
            end = int(end)
        else:
            end = self.nanos(span, "endTimeUnixNano", where)
        if start is not None and end is not None and end < start:
            self.add("time-order", where, f"endTimeUnixNano is {_ms(start - end)} before startTimeUnixNano")
            end = None
        kind = span.get("kind")
        if kind is not None and not (type(kind) is int and 0 <= kind <= 5):
            self.add("kind", where, _enum_problem("kind", kind, KIND_NAMES, "SPAN_KIND_"))
        status_code = 0
        status = span.get("status")
        if status is not None and (status or type(status) is not dict):
            status_code = self.status(status, where)

        attrs = self.attributes(span.get("attributes"), where, "attribute")
        events = span.get("events")
        if events is not None:
            self.events(events, where)
        links = span.get("links")
        if links is not None:
            self.links(links, where)
        if not SEMANTIC_KEYS.isdisjoint(attrs):
            self.semantics(attrs, status_code, where)

        if tkey is not None and skey is not None:
            self.link(tkey, skey, parent_key, start, end, where)

    def nanos(self, obj: dict[str, Any], field: str, where: _Where) -> int | None:
        value = obj.get(field)
        n = _uint64(value)
        if n is None:
            what = "missing" if value is None else f"{value!r}, not a uint64 (decimal string or integer)"
            self.add("time", where, f"{field} is {what}")
        elif n < YEAR_2000_NS:
            self.add("time-range", where, f"{field} {value!r} is before 2000-01-01: not Unix nanoseconds")
        return n

    def status(self, status: Any, where: _Where) -> int:
        if type(status) is not dict:
            self.add("status", where, f"status is {json_type(status)}, not an object")
            return 0
        status = self.camel_keys(status, STATUS_KEYS, where)
        code = status.get("code", 0)
        message = status.get("message")
        if message is not None and type(message) is not str:
            self.add("status", where, f"status.message is {json_type(message)}, not a string")
        if type(code) is int and 0 <= code <= 2:
            return code
        self.add("status", where, _enum_problem("status.code", code, STATUS_NAMES, "STATUS_CODE_"))
        return 0

    def events(self, events: Any, where: _Where) -> None:
        if type(events) is not list:
            self.add("structure", where, f"events is {json_type(events)}, not a list")
            return
        for event in events:
            if type(event) is not dict:
                self.add("structure", where, f"an event is {json_type(event)}, not an object")
                continue
            event = self.camel_keys(event, EVENT_KEYS, where)
            time = event.get("timeUnixNano")
            if not (type(time) is str and len(time) == 19 and time.isascii() and time.isdigit()):
                self.nanos(event, "timeUnixNano", where)
            if event.get("attributes"):
                self.attributes(event["attributes"], where, "event attribute")

    def links(self, links: Any, where: _Where) -> None:
        if type(links) is not list:
            self.add("structure", where, f"links is {json_type(links)}, not a list")
            return
        for link in links:
            if type(link) is not dict:
                self.add("structure", where, f"a link is {json_type(link)}, not an object")
                continue
            link = self.camel_keys(link, LINK_KEYS, where)
            for field, digits, rule in (("traceId", 32, "trace-id"), ("spanId", 16, "span-id")):
                problem = _id_problem(link.get(field), f"link {field}", digits, rule)
                if problem is not None:
                    self.add(problem[0], where, problem[1])
            self.attributes(link.get("attributes"), where, "link attribute")

    # -- attributes ----------------------------------------------------------------------------

    def attributes(self, kvs: Any, where: _Where, what: str) -> dict[str, Any]:
        """The attributes as a dict, decoded once; every malformed one reported and left out."""
        if kvs is None:
            return {}
        if type(kvs) is not list:
            self.add("attribute", where, f"{what}s are {json_type(kvs)}, not a list")
            return {}
        out: dict[str, Any] = {}
        bad = 0
        for kv in kvs:
            # the fast path: a well-formed scalar attribute, what tfgw writes; _any_value for the rest
            if type(kv) is dict and len(kv) == 2:
                key = kv.get("key")
                value = kv.get("value")
                if type(key) is str and type(value) is dict and len(value) == 1:
                    v = value.get("stringValue")
                    if type(v) is str:
                        out[key] = v
                        continue
                    v = value.get("intValue")
                    if v is not None:
                        if type(v) is str and len(v) < 19 and v.isascii() and v.isdigit():
                            out[key] = int(v)
                            continue
                    elif (
                        type(v := value.get("doubleValue")) is float
                        or type(v := value.get("boolValue")) is bool
                    ):
                        out[key] = v
                        continue
            if not self.attribute(kv, out, where, what):
                bad += 1
        if len(out) != len(kvs) - bad:
            seen: set[str] = set()
            for kv in kvs:
                key = kv.get("key") if type(kv) is dict else None
                if type(key) is str and key in seen:
                    self.add("attribute", where, f"{what} {key!r} appears more than once")
                seen.add(key)  # type: ignore[arg-type]
        return out

    def attribute(self, kv: Any, out: dict[str, Any], where: _Where, what: str) -> bool:
        if type(kv) is not dict:
            self.add("attribute", where, f"an {what} is {json_type(kv)}, not a {{key, value}} object")
            return False
        key = kv.get("key")
        if type(key) is not str:
            self.add("attribute", where, f"an {what} has no string key")
            return False
        if "value" not in kv:
            self.add("attribute", where, f"{what} {key!r} has no value")
            return False
        problems: list[tuple[str, str]] = []
        value = _any_value(kv["value"], problems, 0)
        for rule, message in problems:
            self.add(rule, where, f"{what} {key!r}: {message}")
        if value is _BAD:
            return False
        out[key] = value
        return True

    # -- conventions ---------------------------------------------------------------------------

    def semantics(self, attrs: dict[str, Any], status_code: int, where: _Where) -> None:
        oi_kind = attrs.get(semconv.OI_SPAN_KIND)
        operation = attrs.get(semconv.GEN_OPERATION)
        if oi_kind is not None:
            if type(oi_kind) is not str:
                self.add("span-kind-value", where, f"openinference.span.kind is {_value_type(oi_kind)}")
                oi_kind = None
            elif oi_kind == "UNKNOWN":
                self.add("span-kind-unknown", where, "openinference.span.kind is UNKNOWN")
            elif oi_kind not in OI_KINDS:
                kinds = ", ".join(sorted(OI_KINDS))
                self.add(
                    "span-kind-value", where, f"openinference.span.kind {oi_kind!r} is not one of {kinds}"
                )
        if type(operation) is not str:
            operation = None
        is_llm = oi_kind == "LLM" or operation in LLM_OPERATIONS
        is_embedding = oi_kind == "EMBEDDING" or operation == EMBEDDINGS_OPERATION
        if oi_kind is not None and operation is not None:
            expected = "LLM" if operation in LLM_OPERATIONS else "EMBEDDING" if is_embedding else None
            if (expected is not None and oi_kind != expected) or (
                expected is None and oi_kind in ("LLM", "EMBEDDING")
            ):
                self.add(
                    "kind-mismatch",
                    where,
                    f"openinference.span.kind is {oi_kind!r} but gen_ai.operation.name is {operation!r}",
                )
        if is_llm:
            self.required(attrs, LLM_REQUIRED, "llm-required", "an LLM span", where)
        if is_embedding:
            self.required(attrs, EMBEDDING_REQUIRED, "embedding-required", "an EMBEDDING span", where)
        if is_llm or is_embedding:
            self.counts_and_messages(attrs, where, messages=is_llm)
            if status_code == STATUS_ERROR and not attrs.get(semconv.ERROR_TYPE):
                self.add("error-type", where, "status is ERROR but error.type is not set")

        reasons = attrs.get(semconv.GEN_FINISH_REASONS)
        if reasons is not None and not (type(reasons) is list and all(type(r) is str for r in reasons)):
            self.add(
                "finish-reasons",
                where,
                f"gen_ai.response.finish_reasons is {_value_type(reasons)}, not an array of strings",
            )
        for key in JSON_OBJECT_KEYS:
            value = attrs.get(key)
            if value is not None and value != self._last_json_objects.get(key):
                problem = _json_object_problem(value)
                if problem is None:
                    self._last_json_objects[key] = value  # parameters repeat from request to request
                else:
                    self.add("json-attribute", where, f"{key} {problem}")
        ttfc = attrs.get(semconv.GEN_TTFC)
        if ttfc is not None and not (type(ttfc) is float and 0.0 <= ttfc < math.inf):
            self.add(
                "time-to-first-chunk",
                where,
                f"gen_ai.response.time_to_first_chunk is {_value_type(ttfc)} {ttfc!r}, "
                "not a non-negative double (seconds)",
            )

    def required(
        self, attrs: dict[str, Any], keys: tuple[str, ...], rule: str, what: str, where: _Where
    ) -> None:
        for key in keys:
            value = attrs.get(key)
            if value is None:
                self.add(rule, where, f"{what} needs {key}")
            elif type(value) is not str or not value:
                self.add(rule, where, f"{key} is {_value_type(value)} {value!r}, not a non-empty string")

    def counts_and_messages(self, attrs: dict[str, Any], where: _Where, *, messages: bool) -> None:
        keys = tuple(attrs)
        shape = self.shapes.get(keys)
        if shape is None:
            if len(self.shapes) >= MAX_SHAPES:
                self.shapes.clear()
            shape = self.shapes[keys] = _Shape.of(keys)
        for key in shape.token_keys:
            value = attrs[key]
            if type(value) is not int or value < 0:
                self.add(
                    "token-count", where, f"{key} is {_value_type(value)} {value!r}, not an integer >= 0"
                )
        prompt = attrs.get(semconv.TOKENS_PROMPT)
        completion = attrs.get(semconv.TOKENS_COMPLETION)
        total = attrs.get(semconv.TOKENS_TOTAL)
        if (
            type(prompt) is int
            and type(completion) is int
            and type(total) is int
            and prompt + completion != total
        ):
            self.add(
                "token-total",
                where,
                f"llm.token_count.total is {total}, but prompt + completion is {prompt} + {completion} = "
                f"{prompt + completion}",
            )
        if not messages:
            return
        for problem in shape.bad_indices:
            self.add("messages", where, problem)
        for prefix, roles, gap in zip(MESSAGE_PREFIXES, shape.roles, shape.gaps, strict=True):
            for i, role_key in roles:
                if role_key is None or type(role := attrs[role_key]) is not str or not role:
                    self.add("messages", where, f"{prefix}{i}.message.role is missing (or not a string)")
            if gap is not None:
                self.add("messages", where, gap)

    # -- trees ---------------------------------------------------------------------------------

    def link(
        self, tkey: str, skey: str, parent: str | None, start: int | None, end: int | None, where: _Where
    ) -> None:
        if tkey == self._cur_key and self._cur is not None:
            trace = self._cur
        else:
            found = self.open.get(tkey)
            if found is None:
                closed_before = tkey in self.closed
                if not closed_before:
                    self.traces += 1
                found = self.open[tkey] = _Trace(closed_before)
            else:
                self.open.move_to_end(tkey)
            trace = self._cur = found
            self._cur_key = tkey

        spans = trace.spans
        if skey in spans:
            self.add("duplicate-span-id", where, f"spanId {where[3]} appears twice in the trace")
        elif trace.remembered < MAX_SPANS_PER_TRACE:
            spans[skey] = (start, end, where[4])
            trace.remembered += 1
            self.remembered += 1
        elif not trace.too_large:
            trace.too_large = True
            self.add(
                "trace-too-large",
                where,
                f"the trace has more than {MAX_SPANS_PER_TRACE} spans: "
                "its duplicate, parent and orphan checks stop here",
            )
        if parent is not None and parent != skey:
            found_parent = spans.get(parent)
            if found_parent is not None:
                parent_start, parent_end, _ = found_parent
                if (
                    start is not None
                    and parent_start is not None
                    and start < parent_start - CHILD_TOLERANCE_NS
                ) or (end is not None and parent_end is not None and end > parent_end + CHILD_TOLERANCE_NS):
                    self.child_time(where, start, end, found_parent)
            elif not trace.too_large:
                trace.waiting.setdefault(parent, []).append((where, start, end))
                trace.remembered += 1
                self.remembered += 1
        children = trace.waiting.pop(skey, None) if trace.waiting else None
        if children is not None:
            trace.remembered -= len(children)
            self.remembered -= len(children)
            me = (start, end, where[4])
            for child_where, child_start, child_end in children:
                self.child_time(child_where, child_start, child_end, me)

    def child_time(
        self,
        where: _Where,
        start: int | None,
        end: int | None,
        parent: tuple[int | None, int | None, str | None],
    ) -> None:
        parent_start, parent_end, parent_label = parent
        if start is not None and parent_start is not None and start < parent_start - CHILD_TOLERANCE_NS:
            self.add(
                "child-time", where, f"starts {_ms(parent_start - start)} before its parent {parent_label}"
            )
        if end is not None and parent_end is not None and end > parent_end + CHILD_TOLERANCE_NS:
            self.add("child-time", where, f"ends {_ms(end - parent_end)} after its parent {parent_label}")

    def close_oldest(self) -> None:
        while self.open and (len(self.open) > MAX_OPEN_TRACES or self.remembered > MAX_REMEMBERED_SPANS):
            key, trace = self.open.popitem(last=False)
            self.close(key, trace)

    def close_all(self) -> None:
        while self.open:
            key, trace = self.open.popitem(last=False)
            self.close(key, trace)

    def close(self, key: str, trace: _Trace) -> None:
        """The orphan check of a trace whose spans are all seen (or that is closed to save memory)."""
        self.remembered -= trace.remembered
        if key == self._cur_key:
            self._cur_key = self._cur = None
        self.closed[key] = None
        if len(self.closed) > MAX_CLOSED_TRACE_IDS:
            self.closed.popitem(last=False)
        if trace.too_large or trace.closed_before:
            return
        outside = [(parent, w) for parent, waiting in trace.waiting.items() for w in waiting]
        if len(outside) <= 1:
            return
        for parent, (where, _, _) in outside:
            self.add(
                "orphan",
                where,
                f"parent {parent} is not in the trace, and {len(outside) - 1} other span(s) of the trace "
                "have an outside parent too (only the root may)",
            )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the attribute keys of an LLM span alone say about its counts and messages.

    Computed once per distinct key tuple (spans of one code path share it), so a span costs a
    tuple hash and a look at its count and role values instead of a scan of every key.
    """

    token_keys: tuple[str, ...]
    roles: tuple[tuple[tuple[int, str | None], ...], ...]  # per side: (index, its role key or None)
    gaps: tuple[str | None, ...]  # per side: the message for indices with gaps
    bad_indices: tuple[str, ...]

    @classmethod
    def of(cls, keys: tuple[str, ...]) -> _Shape:
        token_keys: list[str] = []
        bad: list[str] = []
        sides: tuple[dict[int, str | None], dict[int, str | None]] = ({}, {})
        for key in keys:
            if key.startswith(TOKEN_PREFIXES):
                token_keys.append(key)
            elif key.startswith(MESSAGE_PREFIXES):
                side = 0 if key.startswith(MESSAGE_PREFIXES[0]) else 1
                index, _, rest = key[len(MESSAGE_PREFIXES[side]) :].partition(".")
                if not (index.isascii() and index.isdigit()):
                    bad.append(f"{key}: {index!r} is not a message index")
                elif rest == "message.role":
                    sides[side][int(index)] = key
                else:
                    sides[side].setdefault(int(index), None)
        gaps: list[str | None] = []
        for prefix, seen in zip(MESSAGE_PREFIXES, sides, strict=True):
            gap = None
            if seen and len(seen) != max(seen) + 1:
                shown = ", ".join(map(str, sorted(seen)[:10])) + (", …" if len(seen) > 10 else "")
                gap = f"{prefix[:-1]} indices are {shown}: not 0, 1, 2… without gaps"
            gaps.append(gap)
        roles = tuple(tuple(sorted(seen.items())) for seen in sides)
        return cls(tuple(token_keys), roles, tuple(gaps), tuple(bad))


# -- values --------------------------------------------------------------------------------------

_BAD: Final[Any] = object()


def _any_value(value: Any, problems: list[tuple[str, str]], depth: int) -> Any:
    """An OTLP/JSON AnyValue as a Python value (int64 as int, double as float), or _BAD."""
    if type(value) is not dict:
        problems.append(("attribute", f"value is {json_type(value)}, not an AnyValue object"))
        return _BAD
    if len(value) != 1:
        if not value:
            problems.append(("attribute", "the AnyValue is empty: exactly one field must be set"))
        else:
            fields = ", ".join(sorted(value))
            problems.append(("attribute", f"the AnyValue has {len(value)} fields ({fields}): exactly one"))
        return _BAD
    ((field, v),) = value.items()
    if field not in VALUE_KEYS:
        camel = SNAKE_TO_CAMEL.get(field)
        if camel is None:
            problems.append(("attribute", f"{field!r} is not an AnyValue field"))
            return _BAD
        problems.append(("snake-case-key", f"{field!r} is snake_case: OTLP/JSON uses {camel!r}"))
        field = camel
    if field == "stringValue":
        if type(v) is str:
            return v
    elif field == "boolValue":
        if type(v) is bool:
            return v
    elif field == "intValue":
        if type(v) is int and I64_MIN <= v <= I64_MAX:
            return v
        if type(v) is str and _INT64(v) and I64_MIN <= (n := int(v)) <= I64_MAX:
            return n
    elif field == "doubleValue":
        if type(v) is float or type(v) is int:
            return float(v)
        if type(v) is str:
            try:
                return float(v)  # "NaN", "Infinity", "-Infinity", as proto3 JSON writes them
            except ValueError:
                pass
    elif field == "bytesValue":
        if type(v) is str:
            try:
                base64.b64decode(v, validate=True)
                return v
            except (binascii.Error, ValueError):
                pass
    elif depth >= MAX_VALUE_DEPTH:
        problems.append(("attribute", f"values nested deeper than {MAX_VALUE_DEPTH}"))
        return _BAD
    elif type(v) is dict and (type(v.get("values", [])) is list):
        items = v.get("values", [])
        if field == "arrayValue":
            out = [_any_value(x, problems, depth + 1) for x in items]
            return _BAD if any(x is _BAD for x in out) else out
        kv: dict[str, Any] = {}
        for item in items:
            key = item.get("key") if type(item) is dict else None
            if type(key) is not str or "value" not in item:
                problems.append(("attribute", "a kvlistValue item is not a {key, value} object"))
                return _BAD
            x = _any_value(item["value"], problems, depth + 1)
            if x is _BAD:
                return _BAD
            kv[key] = x
        return kv
    shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
    problems.append(("attribute", f"{field} {shown} is not a valid {field}"))
    return _BAD


def _camel(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """obj with its snake_case OTLP field names in lowerCamelCase, and the names it renamed."""
    snake = [k for k in obj if k in SNAKE_TO_CAMEL]
    if not snake:
        return obj, snake
    return {SNAKE_TO_CAMEL.get(k, k): v for k, v in obj.items()}, snake


def _id_problem(
    value: Any, field: str, digits: int, rule: str, *, zero_ok: bool = False
) -> tuple[str, str] | None:
    """None for a valid hex id, else (rule, message)."""
    if value is None:
        return rule, f"{field} is missing"
    if type(value) is not str:
        return rule, f"{field} is {json_type(value)}, not a hex string"
    if (_HEX32 if digits == 32 else _HEX16)(value):
        if not zero_ok and value == (_ZERO32 if digits == 32 else _ZERO16):
            return rule, f"{field} is all zero: an invalid id"
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == digits // 2:
        return "base64-id", f"{field} {value!r} is base64: OTLP/JSON ids are hex ({raw.hex()})"
    return rule, f"{field} {value!r} is not {digits} hex digits"


def _uint64(value: Any) -> int | None:
    if type(value) is str:
        if value.isascii() and value.isdigit():
            n = int(value)
            return n if n <= U64_MAX else None
        return None
    if type(value) is int and 0 <= value <= U64_MAX:
        return value
    return None


def _enum_problem(field: str, value: Any, names: tuple[str, ...], prefix: str) -> str:
    if type(value) is str:
        short = value.removeprefix(prefix)
        if short in names:
            return f"{field} {value!r} is an enum name: OTLP/JSON enums are integers ({names.index(short)})"
    return f"{field} {value!r} is not an integer 0..{len(names) - 1}"


def _json_object_problem(value: Any) -> str | None:
    if type(value) is not str:
        return f"is {_value_type(value)}, not a string holding a JSON object"
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "is not valid JSON (it must be a string holding a JSON object)"
    if type(parsed) is not dict:
        return f"holds {json_type(parsed)}, not a JSON object"
    return None


def json_type(value: Any) -> str:
    """How a JSON value reads in a message: "null", "a boolean", "a number", "a string", ...."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int or type(value) is float:
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "an object"


def _value_type(value: Any) -> str:
    """The AnyValue type a decoded attribute value had."""
    if type(value) is bool:
        return "a bool"
    if type(value) is int:
        return "an int"
    if type(value) is float:
        return "a double"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "a kvlist"


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
