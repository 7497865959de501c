"""`tfgw exporter`: send the trace log to every enabled export target, alone (scaled-out mode) or as
the child process `tfgw serve` supervises. With `[bus] kind = "nats"` it reads the JetStream stream
instead, one durable consumer per target that any number of `tfgw exporter` processes share
(`tfgw.bus.consume`)."""

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
    """Export the trace log (or, with [bus] kind = "nats", the stream) to the configured targets
    until SIGTERM or ^C."""
    settings = demo_settings() if demo else read_settings(config)
    if settings.bus.kind == "nats":
        from tfgw.bus.consume import consumers_main

        raise typer.Exit(consumers_main(settings, nice=nice))
    from tfgw.export.worker import exporter_main

    raise typer.Exit(exporter_main(settings, nice=nice))
