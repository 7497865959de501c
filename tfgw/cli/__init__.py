"""The `tfgw` command. Each command parses its options, calls one function, and renders the result.

Every `TfgwError` becomes a one-line message on stderr and its exit code (2 for bad input).
"""

from __future__ import annotations

import sys

import typer

from tfgw import __version__
from tfgw.cli import exporter, keys, otel, replay, serve, traces
from tfgw.errors import TfgwError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tfgw",
    help="A local AI gateway that turns every model call into an OpenTelemetry trace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("init")(serve.init)
app.command("serve")(serve.serve)
app.command("exporter")(exporter.exporter)
app.command("replay")(replay.replay_command)
app.add_typer(keys.app, name="keys")
app.add_typer(otel.app, name="otel")
app.add_typer(traces.app, name="traces")


def _version(value: bool) -> None:
    if value:
        print(f"tfgw {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """tfgw: gateway, traces, export and replay."""


def main() -> None:
    try:
        app()
    except TfgwError as exc:
        print(f"tfgw: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
