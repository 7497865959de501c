"""`tfgw replay`: trace files → a target, through the exporters' encoders, senders and retry rules,
with a verdict for CI.

Input: OTLP/JSON lines (one `ExportTraceServiceRequest` a line), tfgw's trace log and the
OpenTelemetry Collector's file exporter output alike; files, directories of them, `.gz`, and `-`
for stdin (`tfgw.tracing.check.trace_files`). Read exactly per the OTLP/JSON rules: hex ids (any
case), 64-bit integers as strings or numbers, enums as integers or their proto names
(`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`), unknown fields ignored.

Two streaming passes, so a file of any size replays in bounded memory:
1. validate every line, counting spans, projects and the time range (the newest end is what
   `--rebase-time` moves to now). A bad line is an `InputError` naming `file:line`: nothing has
   been sent. A torn last line (no newline, not JSON: a writer that crashed mid-write) is skipped
   with a warning, as every reader of the trace log does. Standard input is spooled to a temporary
   file first, since it cannot be read twice.
2. read the same lines again (no more than pass 1 saw, should a file be growing), transform them
   (rebase, new ids, enum names as integers), `encode.prepare` them for the target (redaction,
   project) and send them with `encode.batches`, one file's lines per batch, so every count of the
   verdict belongs to one file.

Delivery: a retryable failure is retried with `send.Backoff` until `timeout` seconds after the
batch's first attempt; then the backend counts as unreachable and the rest is not sent. A
permanent rejection or a partial success is counted and the replay goes on with the next batch.

`--new-ids` maps every id through a keyed hash (BLAKE2b, a random key per run): the same id maps
to the same new id in every file of a run, parents and links still resolve, two runs differ, and
nothing is remembered per span.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tfgw.errors import InputError
from tfgw.export import encode, send
from tfgw.export.targets import ResolvedTarget, describe
from tfgw.tracing import semconv
from tfgw.tracing.check import STDIN_NAME, TraceFileError, json_type, open_trace_file, trace_files

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FileVerdict",
    "Plan",
    "ReplayOptions",
    "ReplayResult",
    "plan",
    "replay",
]

DEFAULT_TIMEOUT_S = 30.0
#: distinct projects remembered for the summary; past it the rest count under `OTHER_PROJECTS`
MAX_PROJECTS = 100
OTHER_PROJECTS = "(others)"
NO_PROJECT = "(none)"
#: distinct failure messages kept in the verdict (all are counted)
MAX_FAILURES = 20
MAX_WARNINGS = 50


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    rebase_time: bool = False
    new_ids: bool = False
    project: str | None = None
    exclude_request_data: bool = False
    dry_run: bool = False
    timeout: float = DEFAULT_TIMEOUT_S


# -- pass 1: what the files hold -------------------------------------------------------------------


@dataclass(slots=True)
class _FileStats:
    name: str  # as given (`-` is `<stdin>`)
    lines: int = 0  # lines to read in pass 2 (a torn last line excluded)
    spans: int = 0
    torn: bool = False


@dataclass(slots=True)
class Plan:
    """What pass 1 found: every line valid, and what they hold."""

    files: list[_FileStats]
    spans: int = 0
    projects: dict[str, int] = field(default_factory=dict)  # project -> spans
    start_ns: int | None = None  # the oldest start
    end_ns: int | None = None  # the newest end
    warnings: list[str] = field(default_factory=list)

    def project_counts(self, override: str | None) -> dict[str, int]:
        if override:
            return {override: self.spans} if self.spans else {}
        return dict(sorted(self.projects.items()))


class _Invalid(Exception):
    """What is wrong with a line (raised while validating it)."""


def plan(files: list[str], stdin_path: Path | None = None) -> Plan:
    """Pass 1: validate every line of `files` (see `trace_files`); InputError on the first bad one."""
    result = Plan([_FileStats(name) for name in files])
    validator = _Validator(result)
    for stats in result.files:
        with open_trace_file(stats.name, _source(stats.name, stdin_path)) as stream:
            lineno = 0
            for raw in stream:
                lineno += 1
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    if not raw.strip():
                        continue
                    if not raw.endswith(b"\n"):
                        stats.torn = True
                        result.warnings.append(
                            f"{stats.name}:{lineno}: the last line is cut short ({len(raw)} bytes, "
                            "no newline): skipped"
                        )
                        lineno -= 1
                        break
                    raise InputError(
                        f"{stats.name}:{lineno}: not valid JSON: {exc.msg} at column {exc.pos + 1}"
                    ) from None
                try:
                    spans = validator.line(data)
                except _Invalid as exc:
                    raise InputError(f"{stats.name}:{lineno}: {exc}") from None
                stats.spans += spans
            stats.lines = lineno
        result.spans += stats.spans
    return result


_HEX32 = re.compile(r"[0-9a-fA-F]{32}").fullmatch
_HEX16 = re.compile(r"[0-9a-fA-F]{16}").fullmatch
_INT64 = re.compile(r"-?[0-9]+").fullmatch
_ZERO32, _ZERO16 = "0" * 32, "0" * 16
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_VALUE_DEPTH = 32
SPAN_KINDS = {f"SPAN_KIND_{n}": i for i, n in enumerate(("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT"))}
SPAN_KINDS |= {"SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_VALUE_KINDS = frozenset(
    ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue")
)
_NON_FINITE = frozenset(("NaN", "Infinity", "-Infinity"))


class _Validator:
    """The OTLP/JSON rules a line must keep for every part of it to reach the wire as written."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._last_resource: Any = None  # a writer repeats its resource on every line
        self._last_project: str = NO_PROJECT

    def line(self, data: Any) -> int:
        if type(data) is not dict:
            raise _Invalid(f"a line must be an object with resourceSpans, not {json_type(data)}")
        resource_spans = data.get("resourceSpans")
        if resource_spans is None:
            if "resource_spans" in data:
                raise _Invalid("resource_spans is snake_case: OTLP/JSON uses resourceSpans")
            raise _Invalid("no resourceSpans: not an ExportTraceServiceRequest")
        _expect(resource_spans, list, "resourceSpans")
        count = 0
        plan = self.plan
        for rs in resource_spans:
            _expect(rs, dict, "a resourceSpans item")
            _optional(rs.get("schemaUrl"), str, "schemaUrl")
            project = self.resource(rs.get("resource"))
            spans_here = 0
            for ss in _optional(rs.get("scopeSpans"), list, "scopeSpans") or ():
                _expect(ss, dict, "a scopeSpans item")
                _optional(ss.get("schemaUrl"), str, "schemaUrl")
                scope = _optional(ss.get("scope"), dict, "scope")
                if scope:
                    _optional(scope.get("name"), str, "scope name")
                    _optional(scope.get("version"), str, "scope version")
                    _attributes(scope.get("attributes"), "scope attribute")
                    _count(scope.get("droppedAttributesCount"), "scope droppedAttributesCount")
                for span in _optional(ss.get("spans"), list, "spans") or ():
                    self.span(span)
                    spans_here += 1
            if spans_here:
                count += spans_here
                projects = plan.projects
                if project in projects:
                    projects[project] += spans_here
                elif len(projects) < MAX_PROJECTS:
                    projects[project] = spans_here
                else:
                    projects[OTHER_PROJECTS] = projects.get(OTHER_PROJECTS, 0) + spans_here
        return count

    def resource(self, resource: Any) -> str:
        """Validate a resource; its project (`NO_PROJECT` if it has none)."""
        if resource is None:
            return NO_PROJECT
        if resource is self._last_resource or resource == self._last_resource:
            return self._last_project
        _expect(resource, dict, "resource")
        attributes = resource.get("attributes")
        _attributes(attributes, "resource attribute")
        _count(resource.get("droppedAttributesCount"), "resource droppedAttributesCount")
        project = NO_PROJECT
        for kv in attributes or ():
            if kv["key"] == semconv.PROJECT_NAME:
                value = (kv.get("value") or {}).get("stringValue")
                project = value if isinstance(value, str) and value else NO_PROJECT
        self._last_resource, self._last_project = resource, project
        return project

    def span(self, span: Any) -> None:
        if type(span) is not dict:
            raise _Invalid(f"a span is {json_type(span)}, not an object")
        try:
            trace_id = span.get("traceId")
            _id(trace_id, "traceId", 32, span)
            _id(span.get("spanId"), "spanId", 16, span)
            parent = span.get("parentSpanId")
            if parent is not None and parent != "":
                _id(parent, "parentSpanId", 16, span)
            name = span.get("name")
            if name is not None and type(name) is not str:
                raise _Invalid(f"name is {json_type(name)}, not a string")
            _optional(span.get("traceState"), str, "traceState")
            start = _time(span.get("startTimeUnixNano"), "startTimeUnixNano", span)
            end = _time(span.get("endTimeUnixNano"), "endTimeUnixNano", span)
            if end < start:
                raise _Invalid(f"endTimeUnixNano {end} is before startTimeUnixNano {start}")
            kind = span.get("kind")
            if kind is not None and not (
                (type(kind) is int and 0 <= kind <= 5) or (type(kind) is str and kind in SPAN_KINDS)
            ):
                raise _Invalid(f"kind {kind!r} is not a SpanKind (0..5 or SPAN_KIND_*)")
            _attributes(span.get("attributes"), "attribute")
            for key in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount", "flags"):
                _count(span.get(key), key)
            for event in _optional(span.get("events"), list, "events") or ():
                _expect(event, dict, "an event")
                _time(event.get("timeUnixNano"), "event timeUnixNano", event)
                _optional(event.get("name"), str, "event name")
                _attributes(event.get("attributes"), "event attribute")
                _count(event.get("droppedAttributesCount"), "event droppedAttributesCount")
            for link in _optional(span.get("links"), list, "links") or ():
                _expect(link, dict, "a link")
                _id(link.get("traceId"), "link traceId", 32, link)
                _id(link.get("spanId"), "link spanId", 16, link)
                _optional(link.get("traceState"), str, "link traceState")
                _attributes(link.get("attributes"), "link attribute")
                _count(link.get("droppedAttributesCount"), "link droppedAttributesCount")
                _count(link.get("flags"), "link flags")
            status = _optional(span.get("status"), dict, "status")
            if status:
                _optional(status.get("message"), str, "status message")
                code = status.get("code")
                if code is not None and not (
                    (type(code) is int and 0 <= code <= 2) or (type(code) is str and code in STATUS_CODES)
                ):
                    raise _Invalid(f"status code {code!r} is not a StatusCode (0..2 or STATUS_CODE_*)")
        except _Invalid as exc:
            label = name if type(name := span.get("name")) is str and name else None
            tid = span.get("traceId") if type(span.get("traceId")) is str else None
            where = f"span {label!r}" if label else "a span"
            if tid:
                where += f" (trace {tid})"
            raise _Invalid(f"{where}: {exc}") from None
        plan = self.plan
        if plan.start_ns is None or start < plan.start_ns:
            plan.start_ns = start
        if plan.end_ns is None or end > plan.end_ns:
            plan.end_ns = end


def _expect(value: Any, kind: type, what: str) -> Any:
    if type(value) is not kind:
        raise _Invalid(f"{what} is {json_type(value)}, not {json_type(kind())}")
    return value


def _optional(value: Any, kind: type, what: str) -> Any:
    return None if value is None else _expect(value, kind, what)


def _id(value: Any, what: str, digits: int, obj: Mapping[str, Any]) -> None:
    if type(value) is str and (_HEX32 if digits == 32 else _HEX16)(value):
        if value == (_ZERO32 if digits == 32 else _ZERO16):
            raise _Invalid(f"{what} is all zero: an invalid id")
        return
    if value is None:
        snake = re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), what.split()[-1])
        if snake in obj:
            raise _Invalid(f"{what} is missing ({snake} is snake_case: OTLP/JSON uses lowerCamelCase)")
        raise _Invalid(f"{what} is missing")
    if type(value) is not str:
        raise _Invalid(f"{what} is {json_type(value)}, not a hex string")
    raise _Invalid(f"{what} {value!r} is not {digits} hex digits (OTLP/JSON ids are hex, not base64)")


def _time(value: Any, what: str, obj: Mapping[str, Any]) -> int:
    if type(value) is str and value.isascii() and value.isdigit():
        n = int(value)
        if n <= U64_MAX:
            return n
    elif type(value) is int and 0 <= value <= U64_MAX:
        return value
    if value is None:
        raise _Invalid(f"{what} is missing")
    raise _Invalid(f"{what} {value!r} is not a uint64 (a decimal string or a JSON integer)")


def _count(value: Any, what: str) -> None:
    if value is not None and not (type(value) is int and 0 <= value <= U32_MAX):
        raise _Invalid(f"{what} {value!r} is not an integer 0..{U32_MAX}")


def _attributes(attributes: Any, what: str, depth: int = 0) -> None:
    if attributes is None:
        return
    if type(attributes) is not list:
        raise _Invalid(f"{what}s are {json_type(attributes)}, not a list")
    for kv in attributes:
        if type(kv) is not dict or type(key := kv.get("key")) is not str:
            raise _Invalid(f"{what} {kv!r:.60} is not a {{key, value}} object")
        value = kv.get("value")
        if value is None:
            continue
        if type(value) is dict and len(value) == 1 and type(value.get("stringValue")) is str:
            continue  # most attributes
        try:
            _any_value(value, depth)
        except _Invalid as exc:
            raise _Invalid(f"{what} {key!r}: {exc}") from None


def _any_value(value: Any, depth: int) -> None:
    if type(value) is not dict:
        raise _Invalid(f"the value is {json_type(value)}, not an AnyValue object")
    kinds = [k for k in value if k in _VALUE_KINDS]
    if not kinds:
        snake = [k for k in value if k.endswith("_value")]
        if snake:
            raise _Invalid(f"{snake[0]} is snake_case: OTLP/JSON uses lowerCamelCase")
        return  # an empty AnyValue (no field set) is valid proto3 JSON
    if len(kinds) > 1:
        raise _Invalid(f"the AnyValue has {len(kinds)} fields ({', '.join(kinds)}): at most one")
    kind = kinds[0]
    v = value[kind]
    ok = False
    if kind == "stringValue":
        ok = type(v) is str
    elif kind == "boolValue":
        ok = type(v) is bool
    elif kind == "intValue":
        if type(v) is int:
            ok = I64_MIN <= v <= I64_MAX
        elif type(v) is str and _INT64(v):
            ok = I64_MIN <= int(v) <= I64_MAX
    elif kind == "doubleValue":
        ok = type(v) in (int, float) or (type(v) is str and (v in _NON_FINITE or _is_float(v)))
    elif kind == "bytesValue":
        ok = type(v) is str and _is_base64(v)
    elif depth >= MAX_VALUE_DEPTH:
        raise _Invalid(f"values nested deeper than {MAX_VALUE_DEPTH}")
    elif type(v) is dict:
        items = v.get("values")
        if items is not None and type(items) is not list:
            raise _Invalid(f"{kind}.values is {json_type(items)}, not a list")
        if kind == "arrayValue":
            for item in items or ():
                _any_value(item, depth + 1)
        else:
            _attributes(items, "kvlistValue item", depth + 1)
        ok = True
    if not ok:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
        raise _Invalid(f"{kind} {shown} is not a valid {kind}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# -- reading --------------------------------------------------------------------------------------


def _source(name: str, stdin_path: Path | None) -> Path | None:
    """Where to read `name` from: standard input was spooled to `stdin_path` first."""
    if name != STDIN_NAME:
        return None
    if stdin_path is None:
        raise TraceFileError(name, "standard input was not spooled")
    return stdin_path


def _spool(stdin: BinaryIO, stack: ExitStack) -> Path:
    """Standard input copied to a temporary file (deleted when `stack` closes)."""
    spool = stack.enter_context(tempfile.NamedTemporaryFile(prefix="tfgw-replay-", suffix=".jsonl"))  # noqa: SIM115
    shutil.copyfileobj(stdin, spool, 1024 * 1024)
    spool.flush()
    return Path(spool.name)


# -- pass 2: transforming and sending ---------------------------------------------------------------


class _Rewriter:
    """What pass 2 does to each line before `encode.prepare`: in place, on a freshly parsed line."""

    def __init__(self, offset_ns: int, new_ids: bool) -> None:
        self.offset = offset_ns
        self.key = secrets.token_bytes(32) if new_ids else None
        self._last_trace: tuple[str, str] = ("", "")

    def line(self, data: dict[str, Any]) -> dict[str, Any]:
        offset, key = self.offset, self.key
        for rs in data.get("resourceSpans") or ():
            for ss in rs.get("scopeSpans") or ():
                for span in ss.get("spans") or ():
                    kind = span.get("kind")
                    if type(kind) is str:
                        span["kind"] = SPAN_KINDS[kind]
                    status = span.get("status")
                    if status and type(status.get("code")) is str:
                        status["code"] = STATUS_CODES[status["code"]]
                    if offset:
                        span["startTimeUnixNano"] = str(int(span["startTimeUnixNano"]) + offset)
                        span["endTimeUnixNano"] = str(int(span["endTimeUnixNano"]) + offset)
                        for event in span.get("events") or ():
                            event["timeUnixNano"] = str(int(event["timeUnixNano"]) + offset)
                    if key is not None:
                        trace_id = span["traceId"].lower()
                        span["traceId"] = self.trace_id(trace_id)
                        span["spanId"] = self.span_id(trace_id, span["spanId"])
                        if span.get("parentSpanId"):
                            span["parentSpanId"] = self.span_id(trace_id, span["parentSpanId"])
                        for link in span.get("links") or ():
                            link_trace = link["traceId"].lower()
                            link["traceId"] = self.trace_id(link_trace)
                            link["spanId"] = self.span_id(link_trace, link["spanId"])
        return data

    def trace_id(self, trace_id: str) -> str:
        last = self._last_trace
        if last[0] == trace_id:
            return last[1]
        new = self._hash(trace_id, 16)
        self._last_trace = (trace_id, new)
        return new

    def span_id(self, trace_id: str, span_id: str) -> str:
        return self._hash(trace_id + span_id.lower(), 8)

    def _hash(self, data: str, size: int) -> str:
        digest = hashlib.blake2b(data.encode(), key=self.key or b"", digest_size=size).hexdigest()
        return digest if digest.strip("0") else "0" * (size * 2 - 1) + "1"


@dataclass(slots=True)
class FileVerdict:
    file: str
    spans: int  # read
    sent: int = 0
    accepted: int = 0
    rejected: int = 0  # refused by the backend: a permanent error, or partial success
    dropped: int = 0  # not sendable at all (too big even without its text, not encodable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "spans": self.spans,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "dropped": self.dropped,
        }


@dataclass(slots=True)
class ReplayResult:
    target: str
    protocol: str
    endpoint: str
    dry_run: bool
    files: list[FileVerdict]
    projects: dict[str, int]  # as sent: --project, else the files' own
    start_ns: int | None  # the time range as sent (rebased if asked)
    end_ns: int | None
    #: failures as the backend gave them: {file, status, message, spans}
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreachable: str | None = None  # why the replay stopped, if the backend stayed unreachable
    hidden_warnings: int = 0

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)
        else:
            self.hidden_warnings += 1

    @property
    def spans(self) -> int:
        return sum(f.spans for f in self.files)

    def total(self, what: str) -> int:
        return sum(getattr(f, what) for f in self.files)

    @property
    def ok(self) -> bool:
        """Every span accepted (a dry run: every line valid)."""
        if self.dry_run:
            return True
        return self.unreachable is None and self.total("accepted") == self.spans

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "target": self.target,
            "protocol": self.protocol,
            "endpoint": self.endpoint,
            "spans": self.spans,
        }
        if not self.dry_run:
            out |= {k: self.total(k) for k in ("sent", "accepted", "rejected", "dropped")}
        out |= {
            "projects": self.projects,
            "time_range": {"start": _iso(self.start_ns), "end": _iso(self.end_ns)},
            "files": [
                f.as_dict() if not self.dry_run else {"file": f.file, "spans": f.spans} for f in self.files
            ],
        }
        if not self.dry_run:
            out |= {"failures": self.failures, "unreachable": self.unreachable}
        out["warnings"] = self.warnings
        if self.hidden_warnings:
            out["warnings"] = [*self.warnings, f"… {self.hidden_warnings} more warnings"]
        return out


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def replay(
    args: list[str],
    target: ResolvedTarget,
    options: ReplayOptions,
    *,
    stdin: BinaryIO | None = None,
    progress: Callable[[int, int], None] | None = None,
    now_ns: Callable[[], int] = time.time_ns,
) -> ReplayResult:
    """Validate every line of the files `args` name, then (unless a dry run) send them all to
    `target`. InputError for a missing file or a bad line, before anything is sent."""
    files = trace_files(args)
    if not files:
        raise InputError(f"no trace files (*.jsonl, *.json, .gz) in {', '.join(map(str, args))}")
    with ExitStack() as stack:
        stdin_path = None
        if STDIN_NAME in files:
            stdin_path = _spool(stdin if stdin is not None else sys.stdin.buffer, stack)
        found = plan(files, stdin_path)
        offset = 0
        if options.rebase_time and found.end_ns is not None:
            offset = now_ns() - found.end_ns
        result = ReplayResult(
            target=target.name,
            protocol=target.protocol,
            endpoint=describe(target)["endpoint"],
            dry_run=options.dry_run,
            files=[FileVerdict(f.name, f.spans) for f in found.files],
            projects=found.project_counts(options.project or target.project),
            start_ns=None if found.start_ns is None else found.start_ns + offset,
            end_ns=None if found.end_ns is None else found.end_ns + offset,
            warnings=list(found.warnings),
        )
        if options.dry_run or not found.spans:
            return result
        _send_all(found, result, target, options, _Rewriter(offset, options.new_ids), stdin_path, progress)
        return result


def _send_all(
    found: Plan,
    result: ReplayResult,
    target: ResolvedTarget,
    options: ReplayOptions,
    rewriter: _Rewriter,
    stdin_path: Path | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    target = dataclasses.replace(
        target,
        timeout=min(target.timeout, options.timeout),
        project=options.project or target.project,  # neither: the files' own projects stay
        exclude_request_data=options.exclude_request_data or target.exclude_request_data,
    )
    sender = send.sender_for(target)
    failures: dict[tuple[str, str | None, str | None], int] = {}
    done = 0
    try:
        for stats, verdict in zip(found.files, result.files, strict=True):
            if not stats.spans:
                continue
            with open_trace_file(stats.name, _source(stats.name, stdin_path)) as stream:
                lines = _lines(stats.name, stream, stats.lines, rewriter, target)
                for batch in encode.batches(lines, target.protocol):
                    for dropped in batch.dropped:
                        verdict.dropped += dropped.spans
                        result.warn(f"{stats.name}: {dropped.reason}")
                    if not batch.spans:
                        continue
                    outcome = _deliver(sender, batch, options.timeout)
                    if outcome.outcome == "retry":
                        result.unreachable = (
                            f"{stats.name}: still failing after {options.timeout:g} s: "
                            f"{outcome.status}: {outcome.message}"
                        )
                        return
                    verdict.sent += batch.spans
                    if outcome.outcome == "accepted":
                        rejected = min(outcome.rejected_spans, batch.spans)
                        verdict.accepted += batch.spans - rejected
                        verdict.rejected += rejected
                        if rejected or outcome.message:
                            _failed(failures, stats.name, outcome, rejected)
                    else:
                        verdict.rejected += batch.spans
                        _failed(failures, stats.name, outcome, batch.spans)
                    done += batch.spans + batch.dropped_spans
                    if progress is not None:
                        progress(done, found.spans)
    finally:
        sender.close()
        result.failures = [
            {"file": file, "status": status, "message": message, "spans": spans}
            for (file, status, message), spans in failures.items()
        ]


def _lines(
    name: str, stream: Iterator[bytes], count: int, rewriter: _Rewriter, target: ResolvedTarget
) -> Iterator[Mapping[str, Any]]:
    """The first `count` lines of a file validated by pass 1, ready for `encode.batches`."""
    for lineno, raw in enumerate(stream, start=1):
        if lineno > count:
            return
        if not raw.strip():
            continue
        try:
            line = rewriter.line(orjson.loads(raw))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # only a file rewritten between the two passes gets here (an appended one does not)
            raise TraceFileError(name, f"line {lineno} changed after it was validated ({exc})") from None
        yield encode.prepare(line, target)


def _deliver(
    sender: send.HttpSender | send.GrpcSender, batch: encode.EncodedBatch, timeout: float
) -> send.SendResult:
    """Send `batch` until it is accepted or rejected, or retryable failures last `timeout` seconds."""
    backoff = send.Backoff(cap=5.0)
    deadline = time.monotonic() + timeout
    while True:
        result = sender.send(batch)
        left = deadline - time.monotonic()
        if result.outcome != "retry" or left <= 0:
            return result
        time.sleep(min(backoff.next_delay(result.retry_after), left))


def _failed(
    failures: dict[tuple[str, str | None, str | None], int], file: str, result: send.SendResult, spans: int
) -> None:
    key = (file, result.status, result.message)
    if key in failures or len(failures) < MAX_FAILURES:
        failures[key] = failures.get(key, 0) + spans
