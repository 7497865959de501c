"""Options shared by several commands, and reading the config the way every command does."""

from __future__ import annotations

from pathlib import Path

import typer

from tfgw.config import LOOKUP, Settings, config_path, load

__all__ = ["CONFIG", "LOOKUP", "config_path", "read_settings"]

CONFIG = typer.Option(
    None, "--config", "-c", help="Config file (else $TFGW_CONFIG, ./tfgw.toml, ~/.config/tfgw/config.toml)."
)


def read_settings(explicit: Path | None, *, resolve_secrets: bool = True) -> Settings:
    return load(config_path(explicit), resolve_secrets=resolve_secrets)
