"""Options shared by several commands, and reading the config the way every command does."""

from __future__ import annotations

from pathlib import Path

import typer

from tfgw.config import Settings, find_config, load
from tfgw.errors import ConfigError

__all__ = ["CONFIG", "config_path", "read_settings"]

CONFIG = typer.Option(
    None, "--config", "-c", help="Config file (else $TFGW_CONFIG, ./tfgw.toml, ~/.config/tfgw/config.toml)."
)

LOOKUP = "--config, $TFGW_CONFIG, ./tfgw.toml, ~/.config/tfgw/config.toml"


def config_path(explicit: Path | None) -> Path:
    path = find_config(explicit)
    if path is None:
        hint = "run `tfgw init` (or `tfgw init --demo`) first"
        raise ConfigError("tfgw.toml", f"no config file found (looked at {LOOKUP}); {hint}")
    return path


def read_settings(explicit: Path | None, *, resolve_secrets: bool = True) -> Settings:
    return load(config_path(explicit), resolve_secrets=resolve_secrets)
