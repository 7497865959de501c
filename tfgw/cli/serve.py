"""`tfgw init` and `tfgw serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import tomli_w
import typer

from tfgw.cli.options import CONFIG
from tfgw.config_file import write_atomic
from tfgw.errors import ConfigError

STARTER = {
    "server": {"host": "127.0.0.1", "port": 8787},
    "providers": {
        "openai": {
            "kind": "openai",
            "base_url": "https://api.openai.com/v1",
            "api_key": "env:OPENAI_API_KEY",
        },
        "anthropic": {
            "kind": "anthropic",
            "base_url": "https://api.anthropic.com",
            "api_key": "env:ANTHROPIC_API_KEY",
        },
    },
    "models": [
        {
            "name": "gpt-4o-mini",
            "targets": [{"provider": "openai", "model": "gpt-4o-mini"}],
            "fallbacks": ["claude-haiku"],
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
        },
        {
            "name": "claude-haiku",
            "targets": [{"provider": "anthropic", "model": "claude-3-5-haiku-latest"}],
            "price": {"input_per_mtok": 0.8, "output_per_mtok": 4.0},
        },
    ],
}

DEMO = {
    "server": {"host": "127.0.0.1", "port": 8787},
    "providers": {"mock": {"kind": "mock"}},
    "models": [
        {
            "name": "demo",
            "targets": [{"provider": "mock", "model": "demo-1"}],
            "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
        },
        {"name": "demo-embed", "targets": [{"provider": "mock", "model": "demo-embed-1"}]},
    ],
}

HEADER = "# tfgw config: every key is described in configs/tfgw.example.toml\n\n"


def write_starter(path: Path, *, demo: bool) -> None:
    """The starter config (`DEMO`: the built-in mock provider; else `STARTER`), and say so on stderr."""
    write_atomic(path, HEADER + tomli_w.dumps(DEMO if demo else STARTER))
    print(f"wrote {path}", file=sys.stderr)


def init(
    path: Path = typer.Option(Path("tfgw.toml"), "--path", help="Where to write the config."),
    demo: bool = typer.Option(False, "--demo", help="Use the built-in mock provider (no keys, no network)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter config (--demo: the built-in demo provider, ready for `tfgw otel set`)."""
    if path.exists() and not force:
        raise ConfigError(str(path), "already exists (use --force to overwrite)")
    write_starter(path, demo=demo)


def serve(
    config: Path | None = CONFIG,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default [server] host)."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on; 0 picks a free one."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (default [server] workers)."
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Serve the built-in demo provider without any config: a config file that is found "
        "(./tfgw.toml...) is ignored, its export targets too (plain `tfgw serve` uses it).",
    ),
    reload: bool | None = typer.Option(
        None,
        "--reload/--no-reload",
        help="Reload the config when its file changes (default [server] reload: on); SIGHUP always reloads.",
    ),
    recorded: bool = typer.Option(
        False,
        "--recorded",
        help="Answer every configured model from the trace files PATH... (files, directories, .gz) "
        "instead of its providers, no network; with no config, one model for each name recorded. "
        "The config is not reloaded.",
    ),
    paths: list[Path] | None = typer.Argument(
        None, metavar="PATH", help="With --recorded: the trace files and directories answered from."
    ),
    exporter: bool = typer.Option(
        False,
        "--exporter",
        help='With [bus] kind = "nats": this gateway\'s exporter process delivers to the export targets '
        "too, from the stream (each target's consumer, shared with every `tfgw exporter`); without it "
        "the gateway only publishes. With the local bus the targets are always exported.",
    ),
) -> None:
    """Run the gateway."""
    from tfgw.serving import ServeOptions, exec_serve

    exec_serve(
        ServeOptions(
            config=None if config is None else str(config),
            host=host,
            port=port,
            workers=workers,
            demo=demo,
            reload=reload,
            recorded=recorded,
            paths=tuple(str(p) for p in paths or ()),
            exporter=exporter,
        )
    )
