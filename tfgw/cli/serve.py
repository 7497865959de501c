"""`tfgw init` and `tfgw serve`."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import tomli_w
import typer

from tfgw import __version__
from tfgw.cli.options import CONFIG, read_settings
from tfgw.config import Settings, demo_settings, find_config, is_loopback, load
from tfgw.config_file import write_atomic
from tfgw.errors import ConfigError, InputError
from tfgw.export.status import target_status
from tfgw.export.targets import enabled_targets, target_names
from tfgw.tracing.exports import Exports

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
    from tfgw.gateway.server import bind
    from tfgw.gateway.server import serve as run

    if demo:
        _warn_demo_ignores(find_config(config))
    settings = demo_settings() if demo else _settings(config, recorded, paths or [])
    if reload is not None:
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, reload=reload))
    served, answering = _recorded(settings, recorded, paths or [])
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    workers = workers or settings.server.workers
    _refuse_open_bind(settings, host)
    # every target resolved (and so checked) once: a broken one is a config error before anything starts
    targets = list(enabled_targets(settings))
    exports, exporting = _exports(settings, targets, exporter)
    hconfig, sockets = bind(settings, host, port)
    bound = sockets.insecure_sockets[0].getsockname()
    models = ", ".join(served.models) or "none"
    source = "demo" if demo else settings.path or "none"
    print(
        f"tfgw {__version__} listening on http://{host}:{bound[1]} ({workers} worker{'s' * (workers > 1)}, "
        f"config: {source}, models: {models}{answering}{exporting})",
        flush=True,
    )
    supervisor = None
    consumers = exporter and settings.bus.kind == "nats" and bool(targets)
    if settings.tracing.enabled or consumers:  # targets or not: the exporter derives the metrics too
        from tfgw.export.supervisor import ExporterSupervisor

        supervisor = ExporterSupervisor(settings, targets, demo=demo, exporter=exporter)
        supervisor.start()
    try:
        code = run(served, hconfig, sockets, workers, exports=exports)
    finally:
        if supervisor is not None:
            supervisor.stop()
    raise typer.Exit(code)


def _exports(settings: Settings, targets: list[str], exporter: bool) -> tuple[Exports, str]:
    """What the gateway is told of the export (the cursors its log's retention keeps, the status
    `GET /readyz` shows), and what the start line says of it. With the NATS bus the log's only
    reader is the publisher (cursor `nats`): the targets read the stream."""
    if settings.bus.kind == "nats":
        from tfgw.bus.publish import CURSOR

        said = f", publishing to NATS stream {settings.bus.stream}" if settings.tracing.enabled else ""
        if exporter and targets:
            said += f", exporting to: {', '.join(targets)}"
        names = [CURSOR] if settings.tracing.enabled else []
    else:
        said = f", exporting to: {', '.join(targets)}" if targets else ""
        names = target_names(settings)
    return Exports(tuple(names), functools.partial(target_status, settings, names)), said


def _settings(config: Path | None, recorded: bool, paths: list[Path]) -> Settings:
    """The config `tfgw serve` runs (`--recorded` runs without one too: `Settings()`)."""
    if paths and not recorded:
        raise InputError(f"{paths[0]}: a PATH is only taken with --recorded (tfgw serve --recorded PATH...)")
    if recorded and not paths:
        raise InputError("--recorded: give at least one PATH (a trace file or directory) to answer from")
    if recorded and find_config(config) is None:
        return Settings()
    return read_settings(config)


def _recorded(settings: Settings, recorded: bool, paths: list[Path]) -> tuple[Settings, str]:
    """What the workers serve (`--recorded`: every model answered from `paths`), and what the
    start line says of it. Every recorded provider's files are read now, once: the workers, forked
    later, find them loaded (`tfgw.providers.recordings.LOADED`); a file that cannot serve answers
    is said here."""
    from tfgw.providers.recorded import recorded_settings, unusable_files
    from tfgw.providers.recordings import LOADED
    from tfgw.tracing.otlp.files import TraceFileError

    try:
        served = recorded_settings(settings if settings.path else None, paths) if recorded else settings
    except TraceFileError as exc:
        raise InputError(f"--recorded: {exc.message}") from exc
    said = ""
    for ps in served.providers.values():
        if ps.kind != "recorded":
            continue
        where = "--recorded" if recorded else f"providers.{ps.name}.traces"
        try:
            recordings = LOADED.get(ps.traces)
        except TraceFileError as exc:
            raise InputError(f"{where}: {exc.message}") from exc
        for line in unusable_files(recordings):
            print(f"tfgw: warning: {line}", file=sys.stderr)
        if not len(recordings):
            shown = " ".join(map(str, paths)) if recorded else ", ".join(ps.traces)
            message = f"{where} {shown}: no recorded answers in {len(recordings.files)} trace file(s)"
            if recorded:
                raise InputError(message)
            print(f"tfgw: warning: {message}", file=sys.stderr)
        count = len(recordings)
        said += f", {ps.name}: {count} recorded answer{'s' * (count != 1)}"
    return served, said


def _refuse_open_bind(settings: Settings, host: str) -> None:
    if not is_loopback(host) and not settings.keys:
        raise ConfigError(
            settings.path or "--demo",
            f"refusing to listen on {host} without gateway keys: anyone who can reach it could use your "
            "provider keys. Add one with `tfgw keys add NAME`, or listen on 127.0.0.1.",
            key="server.host",
        )


def _warn_demo_ignores(path: Path | None) -> None:
    """`--demo` with a config file in reach: say, in one line, what it leaves out."""
    if path is None or not path.is_file():
        return
    try:
        names = list(load(path, resolve_secrets=False).otel_targets)
    except ConfigError:
        names = []
    count = len(names)
    what = f" and its {count} export target{'s' * (count > 1)} ({', '.join(names)})" if names else ""
    print(
        f"tfgw: warning: --demo ignores {path}{what}; run `tfgw serve` without --demo to use it",
        file=sys.stderr,
    )
