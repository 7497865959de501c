"""`tfgw replay FILE...`: send trace files to a target through the exporters' own encoders and
senders, and print the verdict (exit 0 only if every span was accepted)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tfgw.cli.options import CONFIG, read_settings
from tfgw.config import Settings, find_config
from tfgw.errors import InputError
from tfgw.views.terminal import console

if TYPE_CHECKING:  # tfgw.replay brings grpc and protobuf: imported when replay runs, not for --help
    from tfgw.replay import ReplayResult

DEFAULT_TIMEOUT_S = 30.0

__all__ = ["replay_command"]


class Protocol(StrEnum):
    grpc = "grpc"
    http_protobuf = "http/protobuf"
    http_json = "http/json"


def replay_command(
    files: list[str] = typer.Argument(
        ...,
        metavar="FILE",
        help="Trace files (OTLP/JSON lines; .gz read through gzip), directories of them, or - for stdin.",
    ),
    to: str | None = typer.Option(None, "--to", metavar="NAME", help="A configured export target."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", metavar="URL", help="An OTLP endpoint instead of a configured target."
    ),
    protocol: Protocol | None = typer.Option(
        None, "--protocol", help="With --endpoint: grpc, http/protobuf (the default) or http/json."
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        metavar="K=V",
        help="With --endpoint: a header to send (repeatable; V may be env:VAR).",
    ),
    rebase_time: bool = typer.Option(
        False, "--rebase-time", help="Shift every timestamp by one offset so the newest span ends now."
    ),
    new_ids: bool = typer.Option(
        False, "--new-ids", help="Fresh trace and span ids (parents, links and traces kept together)."
    ),
    project: str | None = typer.Option(
        None,
        "--project",
        metavar="NAME",
        help="Set openinference.project.name on every resource (model_id too for arize).",
    ),
    exclude_request_data: bool = typer.Option(
        False, "--exclude-request-data", help="Strip prompts, completions and other content, as targets do."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print what would be sent; send nothing."
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=0.1,
        help="Give up on a batch the backend keeps failing after S seconds.",
    ),
    json_: bool = typer.Option(False, "--json", help="Print the verdict as one JSON object."),
    config: Path | None = CONFIG,
) -> None:
    """Replay trace files to an export target, with a verdict for CI.

    Every line is validated before anything is sent (a bad line: exit 2 naming FILE:LINE). Exit 0
    only if every span was accepted; 1 if any was rejected or dropped, or the backend stayed
    unreachable past --timeout; 2 for bad usage or input.
    """
    from tfgw.export.targets import configured_target, endpoint_target
    from tfgw.replay import ReplayOptions, replay

    if (to is None) == (endpoint is None):
        raise InputError("give one of --to NAME or --endpoint URL")
    if to is not None and (protocol is not None or header):
        raise InputError("--protocol and --header go with --endpoint; a --to target has its own")
    settings = _settings(config, needed=to is not None)
    if to is not None:
        target = configured_target(settings, to)
    else:
        assert endpoint is not None
        target = endpoint_target(settings, endpoint, protocol.value if protocol else None, header)
    options = ReplayOptions(rebase_time, new_ids, project, exclude_request_data, dry_run, timeout)
    with _progress() as progress:
        result = replay(files, target, options, progress=progress)
    if json_:
        sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    else:
        sys.stdout.write(render(result))
    raise typer.Exit(0 if result.ok else 1)


def _settings(config: Path | None, *, needed: bool) -> Settings:
    """The config as written (required for --to; defaults when --endpoint is used and there is
    none). Only the chosen target's `env:VAR` secrets are resolved, so the CI job need not set
    the variables of every other target."""
    if not needed and config is None and find_config(None) is None:
        return Settings()
    return read_settings(config, resolve_secrets=False)


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; the callback takes (spans done, of total)."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("spans", total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def render(result: ReplayResult) -> str:
    where = f"{result.target} ({result.protocol}, {result.endpoint})"
    files = f"{result.spans} spans from {len(result.files)} file{'s' if len(result.files) != 1 else ''}"
    out = []
    if result.dry_run:
        out.append(f"dry run: would send {files} to {where}")
        out += [f"  {f.file}: {f.spans} spans" for f in result.files]
    else:
        out.append(f"replayed {files} to {where}")
        out += [
            f"  {f.file}: {f.spans} read, {f.sent} sent, {f.accepted} accepted, {f.rejected} rejected"
            + (f", {f.dropped} dropped" if f.dropped else "")
            for f in result.files
        ]
    projects = ", ".join(f"{name} ({n})" for name, n in result.projects.items()) or "-"
    out.append(f"  projects: {projects}")
    data = result.as_dict()["time_range"]
    out.append(f"  time range: {data['start'] or '-'} .. {data['end'] or '-'}")
    out += [
        f"rejected: {f['file']}: {f['status']}: {f['message']} ({f['spans']} spans)" for f in result.failures
    ]
    out += [f"warning: {w}" for w in result.warnings.shown]
    if result.warnings.hidden:
        out.append(f"warning: … {result.warnings.hidden} more")
    if result.unreachable:
        out.append(f"unreachable: {result.unreachable}")
    if not result.dry_run:
        verdict = "ok" if result.ok else "FAILED"
        out.append(f"{verdict}: {result.total('accepted')} of {result.spans} spans accepted")
    return "\n".join(out) + "\n"
