"""`tfgw replay`: trace files → a target, through the exporters' encoders, senders and retry rules,
with a verdict for CI.

Input: OTLP/JSON lines (one `ExportTraceServiceRequest` a line), tfgw's trace log and the
OpenTelemetry Collector's file exporter output alike; files, directories of them, `.gz`, and `-`
for stdin (`tfgw.tracing.otlp.files`). Read per the OTLP/JSON rules at the validator's lenient
strictness (`tfgw.tracing.otlp.validate`): hex ids (any case), 64-bit integers as strings or
numbers, enums as integers or their proto names (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`), unknown
fields ignored.

Two streaming passes, so a file of any size replays in bounded memory:
1. `reading`: validate every line, counting spans, projects and the time range (the newest end
   is what `--rebase-time` moves to now). A bad line is an `InputError` naming `file:line`:
   nothing has been sent. Standard input is spooled to a temporary file first, since it cannot be
   read twice.
2. read the same lines again (no more than pass 1 saw, should a file be growing), transform them
   (`rewrite`: rebase, new ids, enum names as integers), `encode.prepare` them for the target
   (redaction, project) and send them with `encode.batches`, one file's lines per batch, so every
   count of the verdict (`verdict`) belongs to one file.

Delivery is the exporter's own loop (`tfgw.export.send.deliver`): a retryable failure is retried
with backoff until `timeout` seconds after the batch's first attempt; then the backend counts as
unreachable and the rest is not sent. A permanent rejection or a partial success is counted and
the replay goes on with the next batch.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tfgw.errors import InputError
from tfgw.export import encode, send
from tfgw.export.targets import ResolvedTarget, describe
from tfgw.replay.reading import Plan, plan, source
from tfgw.replay.rewrite import Rewriter
from tfgw.replay.verdict import MAX_FAILURES, FileVerdict, ReplayResult
from tfgw.retry import Backoff
from tfgw.tracing.otlp.files import STDIN_NAME, TraceFileError, open_trace_file, spool, trace_files

__all__ = ["DEFAULT_TIMEOUT_S", "FileVerdict", "Plan", "ReplayOptions", "ReplayResult", "plan", "replay"]

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    rebase_time: bool = False
    new_ids: bool = False
    project: str | None = None
    exclude_request_data: bool = False
    dry_run: bool = False
    timeout: float = DEFAULT_TIMEOUT_S


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
            stdin_path = spool(stdin if stdin is not None else sys.stdin.buffer, stack)
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
            warnings=found.warnings,  # pass 2 adds to what pass 1 found
        )
        if options.dry_run or not found.spans:
            return result
        _send_all(found, result, target, options, Rewriter(offset, options.new_ids), stdin_path, progress)
        return result


def _send_all(
    found: Plan,
    result: ReplayResult,
    target: ResolvedTarget,
    options: ReplayOptions,
    rewriter: Rewriter,
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
            with open_trace_file(stats.name, source(stats.name, stdin_path)) as stream:
                lines = _lines(stats.name, stream, stats.lines, rewriter, target)
                for batch in encode.batches(lines, target.protocol):
                    for dropped in batch.dropped:
                        verdict.dropped += dropped.spans
                        result.warnings.add(f"{stats.name}: {dropped.reason}")
                    if not batch.spans:
                        continue
                    delivery = send.deliver(
                        sender, batch, Backoff(cap=5.0), deadline=time.monotonic() + options.timeout
                    )
                    outcome = delivery.result
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
    name: str, stream: Iterator[bytes], count: int, rewriter: Rewriter, target: ResolvedTarget
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


def _failed(
    failures: dict[tuple[str, str | None, str | None], int], file: str, result: send.SendResult, spans: int
) -> None:
    key = (file, result.status, result.message)
    if key in failures or len(failures) < MAX_FAILURES:
        failures[key] = failures.get(key, 0) + spans
