"""`tfgw traces check FILE...`: validate stored spans against OTLP/JSON, OpenInference and OTel GenAI."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import typer

from tfgw.tracing.check import CONVENTIONS, check_files, parse_conventions, rules_help

__all__ = ["check"]


def check(
    files: list[Path] = typer.Argument(
        ...,
        metavar="FILE",
        help="Trace files (OTLP/JSON lines; .gz read through gzip), directories of them, or - for stdin.",
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    max_findings: int = typer.Option(
        1000, "--max-findings", min=0, help="Print at most N findings (all are counted)."
    ),
    conventions: str | None = typer.Option(
        None,
        "--conventions",
        metavar="LIST",
        help=f"Require each of these conventions on LLM spans, comma-separated ({', '.join(CONVENTIONS)}); "
        "gen_ai@1.41 also makes its deprecated names errors. Default: either convention suffices.",
    ),
) -> None:
    pinned = parse_conventions(conventions) if conventions is not None else None
    result = check_files(files, max_findings=max_findings, conventions=pinned)
    if json_:
        sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    else:
        lines = [f.text() for f in result.findings]
        if result.hidden:
            lines.append(f"… {result.hidden} more findings not shown (--max-findings {max_findings})")
        lines.append(result.summary())
        sys.stdout.write("\n".join(lines) + "\n")
    if result.errors:
        raise typer.Exit(1)


check.__doc__ = f"""Validate trace files: OTLP/JSON structure, span trees, OpenInference and GenAI attributes.

Prints one line per finding, FILE:LINE: error|warning RULE trace=<8 hex> span=<name>: message,
then a summary. An LLM span needs the required attributes of OpenInference or of OTel GenAI (what
the other lacks is a warning); --conventions gen_ai@1.41,openinference requires each one named.
Exit 0 when there is no error (warnings allowed), 1 when there is any, 2 when a file cannot be
read or --conventions names an unknown convention.

\b
Rules:
{rules_help()}
"""
