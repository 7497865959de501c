"""`tfgw exporter`: send the trace log to every enabled export target, alone (scaled-out mode) or as
the child process `tfgw serve` supervises."""

from __future__ import annotations

from pathlib import Path

import typer

from tfgw.cli.options import CONFIG, read_settings
from tfgw.config import demo_settings

__all__ = ["exporter"]


def exporter(
    config: Path | None = CONFIG,
    nice: int = typer.Option(0, "--nice", min=0, max=19, help="Run at this lower CPU priority."),
    demo: bool = typer.Option(
        False, "--demo", help="Use the demo settings (targets from OTEL_EXPORTER_OTLP_*)."
    ),
) -> None:
    """Export the trace log to the configured targets until SIGTERM or ^C."""
    from tfgw.export.worker import exporter_main

    settings = demo_settings() if demo else read_settings(config)
    raise typer.Exit(exporter_main(settings, nice=nice))
