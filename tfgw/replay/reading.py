"""Pass 1 of a replay: every line of every file validated, and what the files hold.

Lines are checked by the trace-file validator (`tfgw.tracing.otlp.validate`) at
`Strictness.LENIENT`: the first finding that is an error at that strictness stops the replay before
anything is sent, as an `InputError` naming `file:line`; warnings are kept for the verdict. A torn
last line (no newline, not JSON: a writer that crashed mid-write) is skipped with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfgw.errors import InputError
from tfgw.replay.verdict import Warnings
from tfgw.tracing import semconv
from tfgw.tracing.otlp.files import STDIN_NAME, TraceFileError, open_trace_file
from tfgw.tracing.otlp.validate import ERROR, IGNORE, RULES, SpanFacts, Strictness, Validator, Where

__all__ = ["MAX_PROJECTS", "NO_PROJECT", "OTHER_PROJECTS", "FileStats", "Plan", "plan", "source"]

#: distinct projects remembered for the summary; past it the rest count under `OTHER_PROJECTS`
MAX_PROJECTS = 100
OTHER_PROJECTS = "(others)"
NO_PROJECT = "(none)"


@dataclass(slots=True)
class FileStats:
    name: str  # as given (`-` is `<stdin>`)
    lines: int = 0  # lines to read in pass 2 (a torn last line excluded)
    spans: int = 0


@dataclass(slots=True)
class Plan:
    """What pass 1 found: every line valid, and what they hold."""

    files: list[FileStats]
    spans: int = 0
    projects: dict[str, int] = field(default_factory=dict)  # project -> spans
    start_ns: int | None = None  # the oldest start
    end_ns: int | None = None  # the newest end
    warnings: Warnings = field(default_factory=Warnings)

    def project_counts(self, override: str | None) -> dict[str, int]:
        if override:
            return {override: self.spans} if self.spans else {}
        return dict(sorted(self.projects.items()))

    def count(self, span: SpanFacts) -> None:
        project = span.resource.get(semconv.PROJECT_NAME)
        if not isinstance(project, str) or not project:
            project = NO_PROJECT
        projects = self.projects
        if project in projects:
            projects[project] += 1
        elif len(projects) < MAX_PROJECTS:
            projects[project] = 1
        else:
            projects[OTHER_PROJECTS] = projects.get(OTHER_PROJECTS, 0) + 1
        if span.start is not None and (self.start_ns is None or span.start < self.start_ns):
            self.start_ns = span.start
        if span.end is not None and (self.end_ns is None or span.end > self.end_ns):
            self.end_ns = span.end


def plan(files: list[str], stdin_path: Path | None = None) -> Plan:
    """Validate every line of `files` (see `trace_files`); InputError on the first bad one."""
    result = Plan([FileStats(name) for name in files])

    def report(rule: str, where: Where, message: str) -> None:
        severity = RULES[rule].severity_for(Strictness.LENIENT)
        if severity == IGNORE:
            return
        text = f"{where[0]}:{where[1]}: {_span_label(where)}{message}"
        if severity == ERROR:
            raise InputError(text)
        if rule == "torn-line":
            text += ": skipped"
        result.warnings.add(text)

    validator = Validator(report)
    for stats in result.files:
        with open_trace_file(stats.name, source(stats.name, stdin_path)) as stream:
            for lineno, spans in validator.stream(stats.name, stream):
                stats.lines = lineno
                stats.spans += len(spans)
                for span in spans:
                    result.count(span)
        result.spans += stats.spans
    return result


def _span_label(where: Where) -> str:
    _, _, trace_id, span_id, label = where
    if label is None or label == span_id:
        return "" if trace_id is None else f"a span (trace {trace_id}): "
    return f"span {label!r}: " if trace_id is None else f"span {label!r} (trace {trace_id}): "


def source(name: str, stdin_path: Path | None) -> Path | None:
    """Where to read `name` from: standard input was spooled to `stdin_path` first."""
    if name != STDIN_NAME:
        return None
    if stdin_path is None:
        raise TraceFileError(name, "standard input was not spooled")
    return stdin_path
