"""`tfgw traces check`: validate stored spans against OTLP/JSON, OpenInference and OTel GenAI.

Input: trace files (`tfgw.tracing.otlp.files`): JSON Lines, each line one OTLP/JSON
`ExportTraceServiceRequest`, as tfgw writes them (one request's spans a line) or as the
OpenTelemetry Collector's file exporter and other OTLP/JSON tools do (several traces on a line, a
trace over several lines); `.gz`, directories and `-` for standard input.

The structure of each line is checked by the one validator of the trace-file format,
`tfgw.tracing.otlp.validate`, at `Strictness.STRICT`; this module adds the rules that need more
than one field: the span trees across lines and the semantic conventions. Every rule has an id, a
severity and a description in `RULES`; `tfgw traces check --help` prints the table, and
docs/trace-files.md explains it. Errors break the conventions (OTLP/JSON, OpenInference, OTel GenAI
v1.41.1); warnings are what a reader survives: a torn last line (a writer that crashed mid-write),
a child outside its parent's time, a resource without `service.name`, an enum name where OTLP/JSON
wants an integer, an LLM span that satisfies one convention but not the other.
Which spans get which checks:

- every span: the structure (ids, times, kind, status, attributes, events, links),
  `openinference.span.kind` values, the JSON-string attributes (`metadata`,
  `llm.invocation_parameters`, `embedding.invocation_parameters`),
  `gen_ai.response.finish_reasons`, `gen_ai.response.time_to_first_chunk`;
- LLM spans (`openinference.span.kind` = LLM, or `gen_ai.operation.name` in chat, text_completion,
  generate_content) and EMBEDDING spans (`openinference.span.kind` = EMBEDDING, or
  `gen_ai.operation.name` = embeddings): the required attributes of either convention (one
  satisfied is enough; what the other lacks is an `other-convention` warning), token counts,
  message indices (LLM), `error.type` on ERROR status. Spans of tools that emit neither
  vocabulary get the structure checks alone.

`--conventions gen_ai@1.41,openinference` (`parse_conventions`) pins what is required instead:
each convention it names must be satisfied on its own (what one lacks is an `llm-required` or
`embedding-required` error), the others are not looked at, and under `gen_ai@1.41` every span's
attributes that OTel GenAI v1.41.1 deprecated (`gen_ai.system`, `gen_ai.usage.prompt_tokens`, …)
are `deprecated-name` errors.

Streaming and memory: a file is read a line at a time (a line is held whole while it is checked:
one `ExportTraceServiceRequest`). What outlives a line is the state of the open traces for the
cross-line rules (`tfgw.tracing.trees`, which says its bounds): under 100 MB at the bounds, 24 MB
for a file of tfgw traces. Traces may run across the files of one run (the Collector rotates files
mid-trace).

Speed (see `Validator.attributes`, `_Shape`): each span's attributes are decoded once, on a fast
path for well-formed scalars; what depends only on an LLM span's key set is computed once per
distinct key set; a line's resource, and JSON parameters equal to the last valid ones, are not
re-checked.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from tfgw.errors import InputError
from tfgw.tracing import semconv
from tfgw.tracing.otlp.files import STDIN_NAME, open_trace_file, read_lines, trace_files
from tfgw.tracing.otlp.validate import ERROR, WARNING, Rule, SpanFacts, Validator, Where
from tfgw.tracing.otlp.validate import RULES as STRUCTURE_RULES
from tfgw.tracing.otlp.values import json_type, value_type
from tfgw.tracing.trees import TREE_RULES, Trees

__all__ = [
    "CONVENTIONS",
    "RULES",
    "CheckResult",
    "Finding",
    "check_files",
    "parse_conventions",
    "rules_help",
]

RULES: Final[dict[str, Rule]] = {
    # -- the file and OTLP/JSON: tfgw.tracing.otlp.validate ------------------------------------
    **STRUCTURE_RULES,
    # -- trees: tfgw.tracing.trees --------------------------------------------------------------
    **TREE_RULES,
    # -- OpenInference and OTel GenAI ---------------------------------------------------------
    "span-kind-value": Rule(ERROR, "openinference.span.kind not an OpenInference span kind"),
    "span-kind-unknown": Rule(WARNING, "openinference.span.kind is UNKNOWN"),
    "kind-mismatch": Rule(ERROR, "openinference.span.kind and gen_ai.operation.name disagree"),
    "llm-required": Rule(
        ERROR, "an LLM span without the required attributes of either convention (--conventions: of each)"
    ),
    "embedding-required": Rule(
        ERROR,
        "an EMBEDDING span without the required attributes of either convention (--conventions: of each)",
    ),
    "other-convention": Rule(
        WARNING, "an LLM or EMBEDDING span that satisfies one convention, not the other"
    ),
    "deprecated-name": Rule(
        ERROR, "with --conventions gen_ai@1.41: an attribute OTel GenAI v1.41.1 deprecated (gen_ai.system, …)"
    ),
    "token-count": Rule(ERROR, "a token count (llm.token_count.*, gen_ai.usage.*) not an integer >= 0"),
    "token-total": Rule(ERROR, "llm.token_count.total is not prompt + completion"),
    "finish-reasons": Rule(ERROR, "gen_ai.response.finish_reasons not an array of strings"),
    "json-attribute": Rule(ERROR, "metadata or *.invocation_parameters not a string holding a JSON object"),
    "messages": Rule(ERROR, "llm.input/output_messages: an index without message.role, or gaps in 0, 1, 2…"),
    "time-to-first-chunk": Rule(ERROR, "gen_ai.response.time_to_first_chunk not a non-negative double"),
    "error-type": Rule(ERROR, "an LLM or EMBEDDING span with status ERROR and no error.type"),
}

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
#: what `--conventions` may name: the pinned versions tfgw checks against
OPENINFERENCE: Final = "openinference"
GEN_AI: Final = "gen_ai@1.41"
CONVENTIONS: Final = (GEN_AI, OPENINFERENCE)
#: each convention's name, and every spelling of it `--conventions` takes
CONVENTION_SPELLINGS: Final = {
    "gen_ai": {"": GEN_AI, "1.41": GEN_AI, "1.41.0": GEN_AI, "1.41.1": GEN_AI},
    "openinference": {"": OPENINFERENCE, "0.1.32": OPENINFERENCE},
}
#: (convention, its readers' name, its required attributes) per span type: without
#: `--conventions` one convention satisfied is enough
GENAI_REQUIRED: Final = (semconv.GEN_OPERATION, semconv.GEN_PROVIDER, semconv.GEN_REQUEST_MODEL)
LLM_REQUIRED: Final = (
    (OPENINFERENCE, "OpenInference", (semconv.OI_SPAN_KIND, semconv.LLM_SYSTEM, semconv.LLM_MODEL)),
    (GEN_AI, "OTel GenAI", GENAI_REQUIRED),
)
EMBEDDING_REQUIRED: Final = (
    (OPENINFERENCE, "OpenInference", (semconv.OI_SPAN_KIND, semconv.EMBEDDING_MODEL)),
    (GEN_AI, "OTel GenAI", GENAI_REQUIRED),
)
#: OTel GenAI v1.41.1's deprecated attributes (model/gen-ai/deprecated/registry-deprecated.yaml)
#: -> what replaces each (None: obsoleted, no replacement)
GENAI_DEPRECATED: Final[dict[str, str | None]] = {
    "gen_ai.system": semconv.GEN_PROVIDER,
    "gen_ai.usage.prompt_tokens": semconv.GEN_INPUT_TOKENS,
    "gen_ai.usage.completion_tokens": semconv.GEN_OUTPUT_TOKENS,
    "gen_ai.prompt": None,
    "gen_ai.completion": None,
    "gen_ai.openai.request.seed": semconv.GEN_REQUEST_PARAMS["seed"],
    "gen_ai.openai.request.response_format": "gen_ai.output.type",
    "gen_ai.openai.request.service_tier": "openai.request.service_tier",
    "gen_ai.openai.response.service_tier": "openai.response.service_tier",
    "gen_ai.openai.response.system_fingerprint": "openai.response.system_fingerprint",
}
#: the flattened pre-1.37 message keys (`gen_ai.prompt.0.content`): obsoleted with their parents
GENAI_OBSOLETE_PREFIXES: Final = ("gen_ai.prompt.", "gen_ai.completion.")
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

STATUS_ERROR: Final = 2


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


def parse_conventions(text: str) -> frozenset[str]:
    """`--conventions gen_ai@1.41,openinference` as the set of `CONVENTIONS` it names.

    Raises InputError (exit 2) naming the flag for an unknown convention or an unsupported version.
    """
    named = set()
    known = ", ".join(CONVENTIONS)
    for item in text.split(","):
        item = item.strip()
        name, _, version = item.partition("@")
        spellings = CONVENTION_SPELLINGS.get(name)
        if spellings is None:
            raise InputError(f"--conventions: unknown convention {item!r} (known: {known})")
        if version not in spellings:
            raise InputError(f"--conventions: unsupported version {item!r} (known: {known})")
        named.add(spellings[version])
    return frozenset(named)


def check_files(
    args: Sequence[str | Path],
    *,
    max_findings: int = 1000,
    stdin: BinaryIO | None = None,
    conventions: frozenset[str] | None = None,
) -> CheckResult:
    """Check every line of the files the arguments name (see `trace_files`); `conventions` (from
    `parse_conventions`) requires each one it names, instead of either."""
    files = trace_files(args)
    checker = _Checker(max_findings, conventions)
    for index, name in enumerate(files):
        checker.file_index = index
        if name == STDIN_NAME:
            checker.check_stream(name, read_lines(name, stdin if stdin is not None else sys.stdin.buffer))
        else:
            with open_trace_file(name) as lines:
                checker.check_stream(name, lines)
    checker.trees.close_all()
    findings = [f for _, f in sorted(checker.findings, key=lambda item: (item[0], item[1].line))]
    traces = checker.trees.traces
    return CheckResult(files, checker.spans, traces, checker.errors, checker.warnings, findings)


# -- the checker ---------------------------------------------------------------------------------


class _Checker:
    def __init__(self, max_findings: int, conventions: frozenset[str] | None = None) -> None:
        self.max_findings = max_findings
        self.conventions = conventions
        self.deprecated = conventions is not None and GEN_AI in conventions
        self.findings: list[tuple[int, Finding]] = []
        self.errors = self.warnings = self.spans = 0
        self.file_index = 0
        self.trees = Trees(self.add)
        self.shapes: dict[tuple[str, ...], _Shape] = {}
        self.validator = Validator(self.add)
        self._last_json_objects: dict[str, str] = {}  # key -> its last value that held a JSON object

    def add(self, rule: str, where: Where, message: str) -> None:
        severity = RULES[rule].severity
        if severity == ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.findings) < self.max_findings:
            file, line, trace_id, span_id, span = where
            finding = Finding(file, line, severity, rule, trace_id, span_id, span, message)
            self.findings.append((self.file_index, finding))

    def check_stream(self, name: str, stream: Iterable[bytes]) -> None:
        for _, spans in self.validator.stream(name, stream):
            for span in spans:
                self.check_span(span)
            self.trees.bound()

    def check_span(self, span: SpanFacts) -> None:
        self.spans += 1
        if not SEMANTIC_KEYS.isdisjoint(span.attributes):
            self.semantics(span.attributes, span.status_code, span.where)
        if self.deprecated:
            self.deprecated_names(span.attributes, span.where)
        if span.trace_key is not None and span.span_key is not None:
            self.trees.add(span.trace_key, span.span_key, span.parent_key, span.start, span.end, span.where)

    # -- conventions ---------------------------------------------------------------------------

    def semantics(self, attrs: dict[str, Any], status_code: int, where: Where) -> None:
        oi_kind = attrs.get(semconv.OI_SPAN_KIND)
        operation = attrs.get(semconv.GEN_OPERATION)
        if oi_kind is not None:
            if type(oi_kind) is not str:
                self.add("span-kind-value", where, f"openinference.span.kind is {value_type(oi_kind)}")
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
                f"gen_ai.response.finish_reasons is {value_type(reasons)}, not an array of strings",
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
                f"gen_ai.response.time_to_first_chunk is {value_type(ttfc)} {ttfc!r}, "
                "not a non-negative double (seconds)",
            )

    def required(
        self,
        attrs: dict[str, Any],
        conventions: tuple[tuple[str, str, tuple[str, ...]], ...],
        rule: str,
        what: str,
        where: Where,
    ) -> None:
        """One convention's required attributes are enough: with neither satisfied every missing
        one is a `rule` error; with one, the other's are `other-convention` warnings. With
        `--conventions`, each convention named is required and the others are not looked at. A
        value of the wrong type is an error either way."""
        if self.conventions is not None:
            conventions = tuple(c for c in conventions if c[0] in self.conventions)
        missing: list[list[str]] = []
        for _, _, keys in conventions:
            absent = []
            for key in keys:
                value = attrs.get(key)
                if value is None:
                    absent.append(key)
                elif type(value) is not str or not value:
                    self.add(rule, where, f"{key} is {value_type(value)} {value!r}, not a non-empty string")
                    absent.append("")
            missing.append(absent)
        if self.conventions is not None:
            for (convention, _, _), absent in zip(conventions, missing, strict=True):
                for key in (k for k in absent if k):
                    self.add(rule, where, f"{what} needs {key} (--conventions {convention})")
            return
        if all(missing):
            for key in (k for absent in missing for k in absent if k):
                self.add(rule, where, f"{what} needs {key}")
            return
        for (_, name, _), absent in zip(conventions, missing, strict=True):
            for key in (k for k in absent if k):
                self.add("other-convention", where, f"{what} has no {key}: {name} readers will not see it")

    def deprecated_names(self, attrs: dict[str, Any], where: Where) -> None:
        """Under `--conventions gen_ai@1.41`: every attribute OTel GenAI v1.41.1 deprecated."""
        for key in attrs:
            if not key.startswith("gen_ai."):
                continue
            if key in GENAI_DEPRECATED:
                new = GENAI_DEPRECATED[key]
                instead = f"use {new}" if new else "obsoleted, no replacement"
            elif parent := next((p[:-1] for p in GENAI_OBSOLETE_PREFIXES if key.startswith(p)), None):
                instead = f"obsoleted with {parent}, no replacement"
            else:
                continue
            self.add("deprecated-name", where, f"{key} is deprecated in OTel GenAI v1.41.1: {instead}")

    def counts_and_messages(self, attrs: dict[str, Any], where: Where, *, messages: bool) -> None:
        keys = tuple(attrs)
        shape = self.shapes.get(keys)
        if shape is None:
            if len(self.shapes) >= MAX_SHAPES:
                self.shapes.clear()
            shape = self.shapes[keys] = _Shape.of(keys)
        for key in shape.token_keys:
            value = attrs[key]
            if type(value) is not int or value < 0:
                self.add("token-count", where, f"{key} is {value_type(value)} {value!r}, not an integer >= 0")
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


def _json_object_problem(value: Any) -> str | None:
    if type(value) is not str:
        return f"is {value_type(value)}, not a string holding a JSON object"
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "is not valid JSON (it must be a string holding a JSON object)"
    if type(parsed) is not dict:
        return f"holds {json_type(parsed)}, not a JSON object"
    return None


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
