"""What `tfgw serve` runs once its options are read: `python -m tfgw.serving OPTIONS`.

The command line parses the options (Typer) and then execs this module, so the process that serves,
and every worker it forks, never imported Typer, Rich, the other commands and the pydantic that
Typer parses options with: about 12 MiB of every worker's memory (bench/README.md, "Memory of the
tree"). It reads the config, binds, says the start line, starts the exporter child and serves;
an error is the command line's one line on stderr, `tfgw: MESSAGE`, with its exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

from tfgw import __version__
from tfgw.config import Settings, config_path, demo_settings, find_config, is_loopback, load
from tfgw.errors import ConfigError, InputError, TfgwError
from tfgw.export.status import target_status
from tfgw.export.targets import enabled_targets, target_names
from tfgw.tracing.exports import Exports

__all__ = ["ServeOptions", "exec_serve", "start"]


@dataclasses.dataclass(frozen=True, slots=True)
class ServeOptions:
    """`tfgw serve`'s options, as its command line read them (None: the config says)."""

    config: str | None = None
    host: str | None = None
    port: int | None = None
    workers: int | None = None
    demo: bool = False
    reload: bool | None = None
    recorded: bool = False
    paths: tuple[str, ...] = ()
    exporter: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        fields = json.loads(text)
        return cls(**{**fields, "paths": tuple(fields["paths"])})


def exec_serve(options: ServeOptions) -> None:
    """Replace this process (the same pid, stdio and environment) with one serving `options`."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    # -P: not the working directory first on sys.path, as `-m` would put it: a `tfgw/` there (an
    # old checkout) would be served instead of the tfgw that was started
    os.execv(sys.executable, [sys.executable, "-P", "-m", "tfgw.serving", options.to_json()])


def start(options: ServeOptions) -> int:
    """Serve `options` until SIGTERM/SIGINT; the exit code."""
    from tfgw.gateway.server import bind
    from tfgw.gateway.server import serve as run

    paths = [Path(p) for p in options.paths]
    if options.demo:
        _warn_demo_ignores(find_config(options.config))
    settings = demo_settings() if options.demo else _settings(options.config, options.recorded, paths)
    if options.reload is not None:
        server = dataclasses.replace(settings.server, reload=options.reload)
        settings = dataclasses.replace(settings, server=server)
    served, answering = _recorded(settings, options.recorded, paths)
    host = options.host or settings.server.host
    port = settings.server.port if options.port is None else options.port
    workers = options.workers or settings.server.workers
    _refuse_open_bind(settings, host)
    # every target resolved (and so checked) once: a broken one is a config error before anything starts
    targets = list(enabled_targets(settings))
    exports, exporting = _exports(settings, targets, options.exporter)
    hconfig, sockets = bind(settings, host, port)
    bound = sockets.insecure_sockets[0].getsockname()
    models = ", ".join(served.models) or "none"
    source = "demo" if options.demo else settings.path or "none"
    print(
        f"tfgw {__version__} listening on http://{host}:{bound[1]} ({workers} worker{'s' * (workers > 1)}, "
        f"config: {source}, models: {models}{answering}{exporting})",
        flush=True,
    )
    supervisor = None
    consumers = options.exporter and settings.bus.kind == "nats" and bool(targets)
    if settings.tracing.enabled or consumers:  # targets or not: the exporter derives the metrics too
        from tfgw.export.supervisor import ExporterSupervisor

        supervisor = ExporterSupervisor(settings, targets, demo=options.demo, exporter=options.exporter)
        supervisor.start()
    try:
        return run(served, hconfig, sockets, workers, exports=exports)
    finally:
        if supervisor is not None:
            supervisor.stop()


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


def _settings(config: str | None, recorded: bool, paths: list[Path]) -> Settings:
    """The config `tfgw serve` runs (`--recorded` runs without one too: `Settings()`)."""
    if paths and not recorded:
        raise InputError(f"{paths[0]}: a PATH is only taken with --recorded (tfgw serve --recorded PATH...)")
    if recorded and not paths:
        raise InputError("--recorded: give at least one PATH (a trace file or directory) to answer from")
    if recorded and find_config(config) is None:
        return Settings()
    return load(config_path(config))


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


def main(argv: list[str]) -> int:
    try:
        return start(ServeOptions.from_json(argv[1]))
    except TfgwError as exc:
        print(f"tfgw: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
