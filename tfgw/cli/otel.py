"""`tfgw otel set | list | show | remove`: the export targets of `[otel.targets.*]`, and the implicit
`env` target that the standard OTEL_EXPORTER_OTLP_* variables make.

`set` and `remove` edit the config in place (comments and other tables kept), validate the result
as the gateway would read it, and write it atomically; on any error the file is left untouched
(exit 2). `list` and `show` read the config without resolving secrets: an `env:VAR` that is set is
shown resolved and masked, one that is not is shown as written. No secret is printed in clear.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.table import Table

from tfgw.cli.options import CONFIG, LOOKUP, config_path, read_settings
from tfgw.config import (
    CONVENTIONS,
    OTEL_REQUIRED,
    OTEL_TARGET_NAME,
    OtelTargetSettings,
    Settings,
    find_config,
    load,
)
from tfgw.config_bus import with_bus_secrets
from tfgw.config_file import delete_table, update_table
from tfgw.config_otel import RESERVED_TARGET_NAMES
from tfgw.errors import ConfigError, InputError, NotFoundError
from tfgw.export.targets import (
    ENV_TARGET,
    SENSITIVE_HEADER,
    ResolvedTarget,
    describe,
    resolve_target,
    resolve_targets,
)
from tfgw.tracing.segments import cursor_dir
from tfgw.views.terminal import console, print_wide

__all__ = ["app"]

app = typer.Typer(
    help="Export targets: where the exporters send traces (Arize, Middleware, any OTLP endpoint).",
    no_args_is_help=True,
)

LIST_COLUMNS = ("name", "kind", "protocol", "endpoint", "project", "exclude_request_data", "enabled")


class Kind(StrEnum):
    arize = "arize"
    middleware = "middleware"
    otlp = "otlp"


class Protocol(StrEnum):
    grpc = "grpc"
    http_protobuf = "http/protobuf"
    http_json = "http/json"


def _settings(config: Path | None) -> Settings:
    """The config as written (secrets unresolved); defaults when there is no config at all, so the
    `env` target can still be listed."""
    if config is None and find_config(None) is None:
        return Settings()
    return read_settings(config, resolve_secrets=False)


def _merge_headers(current: Mapping[str, str], given: list[str]) -> dict[str, str] | None:
    """`--header K=V` sets K (any spelling of it), `--header K=` removes it; None when none is left."""
    headers = dict(current)
    for item in given:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--header: expected K=V, got {item!r}")
        for existing in [k for k in headers if k.lower() == key.lower()]:
            del headers[existing]
        if value:
            headers[key] = value
    return headers or None


ENDPOINT_HELP = (
    "Base URL (/v1/traces is appended for HTTP), or host:port for grpc. "
    "Default for arize: https://otlp.arize.com."
)
HEADER_HELP = "A header to send, K=V (V may be env:VAR); repeatable. K= removes K."
API_KEY_HELP = "env:VAR to read the key from $VAR at start (recommended), or the key."
PROJECT_HELP = "openinference.project.name (default: [tracing] project)."
CONVENTIONS_HELP = (
    "The span conventions this target receives, a comma list of openinference, gen_ai (default: both). "
    "With one, what only the other says is left out (see `tfgw otel show NAME`)."
)


def _conventions(text: str) -> list[str]:
    """`--conventions a,b`: known names only, at least one, in their listed order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in CONVENTIONS:
            raise InputError(f"--conventions: must be a comma list of {', '.join(CONVENTIONS)}, got {name!r}")
    if not names:
        raise InputError(f"--conventions: needs at least one of {', '.join(CONVENTIONS)}")
    return [name for name in CONVENTIONS if name in names]


@app.command("set")
def set_(
    kind: Kind = typer.Argument(..., metavar="KIND", help="arize, middleware or otlp."),
    name: str | None = typer.Option(
        None, "--name", metavar="NAME", help="The target's name (default: KIND)."
    ),
    endpoint: str | None = typer.Option(None, "--endpoint", metavar="URL", help=ENDPOINT_HELP),
    protocol: Protocol | None = typer.Option(
        None, "--protocol", help="Default: grpc for arize, http/protobuf otherwise."
    ),
    header: list[str] | None = typer.Option(None, "--header", metavar="K=V", help=HEADER_HELP),
    space_id: str | None = typer.Option(
        None, "--space-id", metavar="ID", help="Arize space id (or env:VAR)."
    ),
    api_key: str | None = typer.Option(None, "--api-key", metavar="KEY|env:VAR", help=API_KEY_HELP),
    project: str | None = typer.Option(None, "--project", metavar="NAME", help=PROJECT_HELP),
    exclude_request_data: bool | None = typer.Option(
        None,
        "--exclude-request-data/--include-request-data",
        help="Keep prompts and completions out of what this target gets.",
    ),
    conventions: str | None = typer.Option(
        None, "--conventions", metavar="openinference,gen_ai", help=CONVENTIONS_HELP
    ),
    metrics: bool | None = typer.Option(
        None, "--metrics/--no-metrics", help="Push OTLP metrics to this target too (/v1/metrics)."
    ),
    disable: bool | None = typer.Option(None, "--disable/--enable", help="Keep the target but send nothing."),
    config: Path | None = CONFIG,
) -> None:
    """Add an export target, or update one: only the options given change."""
    name = name or kind.value
    if not OTEL_TARGET_NAME.fullmatch(name):
        raise InputError(f"--name: only letters, digits, '-' and '_' (64 at most), got {name!r}")
    if name in RESERVED_TARGET_NAMES:
        raise InputError(f"--name: {name!r} is reserved (the NATS publisher's cursor); choose another")
    path = _config_to_edit(config)
    current = load(path, resolve_secrets=False).otel_targets.get(name) if path.exists() else None
    given = {
        "endpoint": endpoint,
        "protocol": protocol.value if protocol else None,
        "space_id": space_id,
        "api_key": api_key,
        "project": project,
        "exclude_request_data": exclude_request_data,
        "conventions": None if conventions is None else _conventions(conventions),
        "metrics": metrics,
        "enabled": None if disable is None else not disable,
    }
    values: dict[str, Any] = {"kind": kind.value, **{k: v for k, v in given.items() if v is not None}}
    _require(path, name, kind.value, values, current)
    if header:
        values["headers"] = _merge_headers(current.headers if current else {}, header)
    checked: list[ResolvedTarget] = []
    update_table(
        path,
        ("otel", "targets", name),
        values,
        check=lambda settings: checked.append(resolve_target(settings, name)),
    )
    view = describe(checked[0])
    print(f"target {name} ({kind.value}, {view['protocol']} {view['endpoint']}) written to {path}")
    _warn_secrets_in_clear(path, api_key, header or [])


def _config_to_edit(explicit: Path | None) -> Path:
    """The config file `set` edits (`--config F` names one to create). With none anywhere: on a
    terminal, offer to create ./tfgw.toml with the demo provider; off one, never wait for an
    answer: exit 2 naming the fix."""
    path = find_config(explicit)
    if path is not None:
        return path
    local = Path("tfgw.toml")
    if sys.stdin.isatty() and _yes_to(f"create ./{local} with the demo provider?"):
        from tfgw.cli.serve import write_starter

        write_starter(local, demo=True)
        return local
    raise ConfigError(
        str(local),
        f"no config file found (looked at {LOOKUP}); run `tfgw init --demo` to start one, "
        "or give --config F to write the target to F",
    )


def _yes_to(question: str) -> bool:
    """Ask on the terminal (stderr: stdout stays the command's output); only y or yes is yes."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _require(
    path: Path, name: str, kind: str, values: Mapping[str, Any], current: OtelTargetSettings | None
) -> None:
    """Every key the kind needs, given now or already in the file; all the missing ones at once."""
    missing = [
        key
        for key in OTEL_REQUIRED[kind]
        if values.get(key) in (None, "") and (current is None or getattr(current, key) in (None, ""))
    ]
    if missing:
        flags = ", ".join(f"--{key.replace('_', '-')} ({key})" for key in missing)
        raise ConfigError(str(path), f"missing {flags}", key=f"otel.targets.{name}")


def _warn_secrets_in_clear(path: Path, api_key: str | None, headers: list[str]) -> None:
    if api_key and not api_key.startswith("env:"):
        _warn_clear(path, "the API key", "--api-key env:VAR")
    for item in headers:
        key, _, value = item.partition("=")
        if value and not value.startswith("env:") and SENSITIVE_HEADER.search(key):
            _warn_clear(path, f"header {key.strip()}", f"--header {key.strip()}=env:VAR")


def _warn_clear(path: Path, what: str, instead: str) -> None:
    print(
        f"tfgw: warning: {what} is stored in clear in {path}; prefer {instead}, "
        "which reads it from $VAR when tfgw starts",
        file=sys.stderr,
    )


def _print_table(table: Table) -> None:
    """A rich table on a terminal; off one (a pipe, a file), the same columns as plain text lines
    without the cells' trailing blanks, for grep and awk."""
    out = console()
    if out.is_terminal:
        print_wide(out, table)
        return
    with out.capture() as captured:
        print_wide(out, table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _yes(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


@app.command("list")
def list_(
    json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per target."),
    config: Path | None = CONFIG,
) -> None:
    """Every export target, the implicit `env` one (OTEL_EXPORTER_OTLP_*) included."""
    views = [describe(t) for t in resolve_targets(_settings(config)).values()]
    rows = [{key: view[key] for key in LIST_COLUMNS} for view in views]
    if json:
        print(orjson.dumps(rows).decode())
        return
    if not rows:
        print("no export targets: add one with `tfgw otel set KIND`, or set OTEL_EXPORTER_OTLP_ENDPOINT")
        return
    table = Table(*LIST_COLUMNS, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(_yes(row[key]) for key in LIST_COLUMNS))
    _print_table(table)


@app.command("show")
def show(
    name: str = typer.Argument(
        ..., metavar="NAME", help="The target's name (`env` for OTEL_EXPORTER_OTLP_*)."
    ),
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = CONFIG,
) -> None:
    """One target with every default applied: where, how, and every header it sends (masked)."""
    view = describe(resolve_target(_settings(config), name))
    for var in view["unset_env"]:
        print(f"tfgw: warning: {var} is not set: target {name} cannot send until it is", file=sys.stderr)
    if json:
        print(orjson.dumps(view).decode())
        return
    table = Table(box=None, pad_edge=False, show_header=False)
    for key, value in view.items():
        if key == "headers":
            for header, text in value.items():
                table.add_row(f"header {header}", text)
        elif key == "conventions":
            table.add_row(key, ", ".join(value))
        elif key == "left_out":
            if value:
                table.add_row("left out", f"where {view['conventions'][0]} carries the same value:")
                for name in value:
                    table.add_row("", name)
        elif key == "metrics":
            table.add_row(key, "on" if value else "off")
        elif key == "timeout":
            table.add_row(key, f"{value:g} s")
        elif key == "compression":
            table.add_row(key, value or "none")
        elif key == "unset_env":
            if value:
                table.add_row(key, ", ".join(value))
        else:
            table.add_row(key, _yes(value))
    _print_table(table)


@app.command("remove")
def remove(
    name: str = typer.Argument(..., metavar="NAME", help="The target's name."), config: Path | None = CONFIG
) -> None:
    """Delete a target's table from the config (its comments and the rest of the file are kept)."""
    path = config_path(config)
    targets = load(path, resolve_secrets=False).otel_targets
    if name not in targets:
        hint = "; the env target comes from OTEL_EXPORTER_OTLP_* variables" if name == ENV_TARGET else ""
        raise NotFoundError(f"no export target {name} in {path} (have: {', '.join(targets) or 'none'}{hint})")
    settings = load(path, resolve_secrets=False)
    delete_table(path, ("otel", "targets", name))
    # its place in the trace log goes too: retention must not wait for a target that is gone
    (cursor_dir(settings.tracing.path) / f"{name}.json").unlink(missing_ok=True)
    print(f"target {name} removed from {path}")


@app.command("test")
def test(
    name: str = typer.Argument(..., metavar="NAME", help="The target's name."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Give up after this many seconds."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = CONFIG,
) -> None:
    """Send one synthetic LLM trace to a target; exit 0 only if the backend accepted all of it."""
    from tfgw.export.probe import probe

    settings = _settings(config)
    target = resolve_target(settings, name)
    result = probe(target, timeout)
    if json_:
        print(orjson.dumps({"target": name, **result.as_dict()}).decode())
    else:
        verdict = "accepted" if result.accepted else "rejected"
        reason = f": {result.message}" if result.message and not result.accepted else ""
        warning = f"; warning: {result.warning}" if result.warning else ""
        print(
            f"{name}: {verdict} ({result.status}, {result.latency_ms:.0f} ms, {result.spans} spans, "
            f"trace {result.trace_id}){reason}{warning}"
        )
    raise typer.Exit(0 if result.accepted else 1)


@app.command("status")
def status(
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = CONFIG,
) -> None:
    """What each target's exporter has done: delivered, export requests sent (attempts) and
    retried, pending, retrying, rejected, dropped, lag, the last error, a warning (a 200 whose
    body is not OTLP's), and why it is not running when it is not. With [bus] kind = "nats": each
    target's consumer on the stream (pending, ack pending, redelivered, delivered)."""
    from tfgw.export.status import target_status

    settings = _settings(config)
    if settings.bus.kind == "nats":
        if settings.path is not None:  # the config was read with its secrets left as env:VAR
            settings = replace(settings, bus=with_bus_secrets(settings.bus, Path(settings.path)))
        _consumer_status(settings, json_)
        return
    report = target_status(settings)
    if json_:
        print(orjson.dumps(report).decode())
        return
    columns = (
        "target", "state", "delivered", "attempts", "retries", "pending", "rejected", "dropped", "lag",
        "last error", "warning", "reason",
    )  # fmt: skip
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for target, s in report.items():
        pending = s["pending_bytes"]
        table.add_row(
            target,
            s["state"],
            *(str(s[k] or 0) for k in ("delivered", "attempts", "retries")),
            "-" if pending is None else f"{pending / 1024:.0f} KiB",
            str((s["rejected"] or 0) + (s["partial_rejected"] or 0)),
            str((s["dropped"] or 0) + (s["unsendable"] or 0)),
            "-" if s["lag_s"] is None else f"{s['lag_s']:.1f} s",
            s["last_error"] or "",
            s["warning"] or "",
            s["reason"] or "",
        )
    _print_table(table)


def _consumer_status(settings: Settings, json_: bool) -> None:
    """`otel status` in NATS mode: one line per target's consumer, then this machine's publisher
    when a gateway publishes from its trace log; NATS unreachable: one line, exit 1."""
    from tfgw.bus.connect import BusError
    from tfgw.export.status import consumer_status, publisher_status

    try:
        consumers = consumer_status(settings)
    except BusError as exc:
        print(f"tfgw: {exc.message}", file=sys.stderr)
        raise typer.Exit(1) from None
    publisher = publisher_status(settings)
    if json_:
        print(orjson.dumps({"consumers": consumers, "publisher": publisher}).decode())
        return
    columns = (
        "target", "consumer", "pending", "ack pending", "redelivered", "delivered", "waiting", "reason",
    )  # fmt: skip
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for target, s in consumers.items():
        counts = (s["num_pending"], s["num_ack_pending"], s["num_redelivered"], s["delivered"], s["waiting"])
        table.add_row(
            target, s["consumer"], *("-" if n is None else str(n) for n in counts), s["reason"] or ""
        )
    _print_table(table)
    if publisher is not None:
        pending = publisher["pending_bytes"]
        said = [
            f"publisher: {publisher['state']}",
            f"{publisher['delivered'] or 0} lines on the stream",
            "pending -" if pending is None else f"pending {pending / 1024:.0f} KiB",
        ]
        print(", ".join(said + [m for m in (publisher["last_error"], publisher["reason"]) if m]))
