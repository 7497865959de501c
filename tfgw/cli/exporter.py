"""`tfgw exporter`: send the trace log to every enabled export target, alone (scaled-out mode) or as
the child process `tfgw serve` supervises."""

from __future__ import annotations

import logging
import os
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
    from tfgw.export.worker import run_exporter

    logging.basicConfig(level=logging.INFO, format="tfgw exporter: %(message)s")
    for noisy in ("httpx", "httpcore"):  # a line per request sent is not news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if nice:
        os.nice(nice)
    settings = demo_settings() if demo else read_settings(config)
    raise typer.Exit(run_exporter(settings))
