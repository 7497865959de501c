"""The only place that reads the config: TOML, `env:VAR` secrets and defaults.

`load()` returns a frozen `Settings`. Every problem is a `ConfigError` whose message names the
file, the line (found in the source text, since tomllib only reports lines for syntax errors) and
the dotted key, and the CLI turns it into exit code 2. This module is the schema: the settings
objects and the sections that build them; `tfgw.config_toml` is the TOML reading, line finding
and typed table access under it.

Lookup order: `--config`, then `$TFGW_CONFIG`, then `./tfgw.toml`, then `~/.config/tfgw/config.toml`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tfgw.config_bus import BusChecks, BusSettings
from tfgw.config_otel import CONVENTIONS as CONVENTIONS
from tfgw.config_otel import OTEL_PROTOCOLS as OTEL_PROTOCOLS
from tfgw.config_otel import OTEL_REQUIRED as OTEL_REQUIRED
from tfgw.config_otel import OTEL_TARGET_NAME as OTEL_TARGET_NAME
from tfgw.config_otel import OtelChecks, OtelTargetSettings
from tfgw.config_policy import PII_PATTERNS as PII_PATTERNS
from tfgw.config_policy import CacheSettings, GuardrailSettings, PolicyChecks
from tfgw.config_toml import KeyLocator as KeyLocator  # re-exported for tfgw.config_file
from tfgw.config_toml import KeyPath, read_toml
from tfgw.config_toml import dotted as dotted
from tfgw.errors import ConfigError

__all__ = [
    "LOOKUP",
    "PROVIDER_KINDS",
    "BusSettings",
    "CacheSettings",
    "GuardrailSettings",
    "KeySettings",
    "ModelSettings",
    "OtelTargetSettings",
    "Price",
    "ProviderSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "Target",
    "Timeouts",
    "TracingSettings",
    "config_path",
    "demo_settings",
    "find_config",
    "load",
    "parse",
]

PROVIDER_KINDS = ("openai", "azure", "anthropic", "mock", "recorded")
#: what a `recorded` provider does with a request it has no recording of: "error", or "forward:NAME"
ON_MISS = re.compile(r"error|forward:(?P<provider>.+)")
PACES = ("none", "recorded")
STRATEGIES = ("weighted", "priority", "latency")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    #: seconds a request's whole body may take to arrive (408 past it), however often a byte comes
    body_timeout: float = 60.0
    graceful_timeout: float = 30.0
    #: where limits and budgets are counted (a file every worker maps; `tfgw keys list` reads it);
    #: None: `state` beside the trace directory
    state_dir: str | None = None
    #: the response cache's bound over all models, in bytes of cached answers (LRU beyond it)
    cache_max_bytes: int = 64 * 1024 * 1024
    #: reload the config when its file changes (and on SIGHUP, always)
    reload: bool = True


@dataclass(frozen=True, slots=True)
class KeySettings:
    name: str
    hash: str
    rpm: int | None = None
    tpm: int | None = None
    #: USD a key may spend per UTC day / calendar month (UTC), at the models' prices
    budget_usd_day: float | None = None
    budget_usd_month: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: str
    base_url: str
    api_key: str | None = None
    api_version: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: ask an OpenAI-style provider for the usage chunk of every stream (off for servers that refuse
    #: `stream_options`; streamed calls then have token counts only when the client asked for them)
    stream_usage: bool = True
    #: the provider serves the Responses API itself (`{base_url}/responses`, `openai` only):
    #: `/v1/responses` is passed on as it is instead of translated to chat completions
    responses: bool = False
    #: `recorded` only: the trace files and directories answered from (absolute, or relative to
    #: the working directory), what a request with no recording gets, and the pace of answers
    traces: tuple[str, ...] = ()
    on_miss: str = "error"
    pace: str = "none"
    #: the provider's well-known name in the conventions (`llm.provider`, `gen_ai.provider.name`),
    #: e.g. "groq"; None: known from the upstream host, else from the kind
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 60.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class ModelSettings:
    name: str
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()
    price: Price | None = None
    retries: int = 0
    timeout: Timeouts = Timeouts()
    strategy: str = "weighted"  # weighted | priority (targets in order) | latency (fastest recently)
    cache: CacheSettings | None = None


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """`[routing]`: when a target is let rest. 0 `unhealthy_after`: never."""

    unhealthy_after: int = 3  # retryable failures in a row that make a target unhealthy
    cooldown: float = 30.0  # seconds an unhealthy target is skipped before one request probes it


@dataclass(frozen=True, slots=True)
class TracingSettings:
    dir: str = "~/.local/share/tfgw/traces"
    project: str = "default"
    exclude_request_data: bool = False
    enabled: bool = True
    segment_max_mb: int = 64  # a segment is closed at this size, and at midnight UTC
    retention_days: int = 7  # segments older than this are deleted; 0 keeps them forever
    max_disk_mb: int = 10240  # past this the oldest segments go, delivered to every target or not

    @property
    def path(self) -> Path:
        return Path(self.dir).expanduser()

    def state_path(self, state_dir: str | None) -> Path:
        """Where limits and budgets are counted: `state_dir`, or `state` beside the traces."""
        return Path(state_dir).expanduser() if state_dir else self.path.parent / "state"


@dataclass(frozen=True, slots=True)
class Settings:
    path: str | None = None
    server: ServerSettings = ServerSettings()
    keys: tuple[KeySettings, ...] = ()
    providers: Mapping[str, ProviderSettings] = field(default_factory=lambda: _EMPTY)
    models: Mapping[str, ModelSettings] = field(default_factory=lambda: _EMPTY)
    guardrails: tuple[GuardrailSettings, ...] = ()
    routing: RoutingSettings = RoutingSettings()
    tracing: TracingSettings = TracingSettings()
    otel_targets: Mapping[str, OtelTargetSettings] = field(default_factory=lambda: _EMPTY)
    bus: BusSettings = field(default_factory=BusSettings)

    def secrets(self) -> tuple[str, ...]:
        """Every resolved secret, for scrubbing provider error bodies and logs."""
        found = [p.api_key for p in self.providers.values()]
        found += [s for t in self.otel_targets.values() for s in t.secrets()]
        found += self.bus.secrets()
        return tuple(s for s in found if s)


OPENAI_API = "https://api.openai.com/v1"
DEFAULT_BASE_URLS = {
    "openai": OPENAI_API,
    "anthropic": "https://api.anthropic.com",
    "mock": "mock://",
    "recorded": "",
}
RECORDED_KEYS = ("traces", "on_miss", "pace")  # only a `recorded` provider's, and all it has but `kind`


# --------------------------------------------------------------------------------------------------
# Finding and reading the file


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, in lookup order; None when there is none anywhere."""
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("TFGW_CONFIG"):
        return Path(env).expanduser()
    for candidate in (Path("tfgw.toml"), Path("~/.config/tfgw/config.toml").expanduser()):
        if candidate.is_file():
            return candidate
    return None


#: where `find_config` looks, as commands say it
LOOKUP = "--config, $TFGW_CONFIG, ./tfgw.toml, ~/.config/tfgw/config.toml"


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`find_config`'s file, or the ConfigError that says where it looked."""
    path = find_config(explicit)
    if path is None:
        hint = "run `tfgw init` (or `tfgw init --demo`) first"
        raise ConfigError("tfgw.toml", f"no config file found (looked at {LOOKUP}); {hint}")
    return path


def load(path: str | os.PathLike[str], *, resolve_secrets: bool = True) -> Settings:
    """Read and validate one config file. `resolve_secrets=False` leaves `env:VAR` references as they
    are (for commands that only edit the file)."""
    name = str(path)
    try:
        source = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, f"cannot read config file: {exc}") from exc
    return parse(source, name, resolve_secrets=resolve_secrets)


def parse(source: str, file: str = "<config>", *, resolve_secrets: bool = True) -> Settings:
    data = read_toml(source, file)
    return _Validator(file, source, resolve_secrets).settings(data)


def demo_settings() -> Settings:
    """What `tfgw serve --demo` runs: the built-in mock provider behind two model names."""
    mock = ProviderSettings(name="mock", kind="mock", base_url="mock://")
    models = {
        "demo": ModelSettings(
            name="demo",
            targets=(Target("mock", "demo-1"),),
            price=Price(input_per_mtok=0.5, output_per_mtok=1.5),
        ),
        "demo-embed": ModelSettings(name="demo-embed", targets=(Target("mock", "demo-embed-1"),)),
    }
    return Settings(providers=MappingProxyType({"mock": mock}), models=MappingProxyType(models))


# --------------------------------------------------------------------------------------------------
# Validation


class _Validator(PolicyChecks, OtelChecks, BusChecks):
    """Checks the parsed TOML against the schema and builds the settings objects."""

    def settings(self, data: dict[str, Any]) -> Settings:
        sections = (
            "server",
            "keys",
            "providers",
            "models",
            "guardrails",
            "routing",
            "tracing",
            "otel",
            "bus",
        )
        root = self.table(data, (), sections)
        providers = self.providers(root.get("providers", {}))
        models = self.models(root.get("models", []), providers)
        return Settings(
            path=self.file,
            server=self.server(root.get("server", {})),
            keys=self.keys(root.get("keys", [])),
            providers=providers,
            models=models,
            guardrails=self.guardrails(root.get("guardrails", [])),
            routing=self.routing(root.get("routing", {})),
            tracing=self.tracing(root.get("tracing", {})),
            otel_targets=self.otel(root.get("otel", {})),
            bus=self.bus(root.get("bus", {})),
        )

    def server(self, value: Any) -> ServerSettings:
        path = ("server",)
        allowed = (
            "host",
            "port",
            "workers",
            "max_body_bytes",
            "body_timeout",
            "graceful_timeout",
            "state_dir",
            "cache_max_mb",
            "reload",
        )
        t = self.table(value, path, allowed)
        port = self.value(t, path, "port", int, 8787)
        if not 0 <= port <= 65535:
            raise self.fail((*path, "port"), f"must be between 0 and 65535, got {port}")
        return ServerSettings(
            host=self.value(t, path, "host", str, "127.0.0.1"),
            port=port,
            workers=self.positive(t, path, "workers", int, 1),
            max_body_bytes=self.positive(t, path, "max_body_bytes", int, 10 * 1024 * 1024),
            body_timeout=self.positive(t, path, "body_timeout", float, 60.0),
            graceful_timeout=self.positive(t, path, "graceful_timeout", float, 30.0, zero=True),
            state_dir=self.value(t, path, "state_dir", str, None),
            reload=self.value(t, path, "reload", bool, True),
            cache_max_bytes=int(self.positive(t, path, "cache_max_mb", float, 64.0, zero=True) * 1024 * 1024),
        )

    def keys(self, value: Any) -> tuple[KeySettings, ...]:
        if not isinstance(value, list):
            raise self.fail(("keys",), "expected an array of tables ([[keys]])")
        keys, seen = [], set()
        for i, item in enumerate(value):
            path = ("keys", i)
            t = self.table(item, path, ("name", "hash", "rpm", "tpm", "budget_usd_day", "budget_usd_month"))
            name = self.required(t, path, "name", str)
            if name in seen:
                raise self.fail((*path, "name"), f"duplicate key name {name!r}")
            seen.add(name)
            digest = self.required(t, path, "hash", str)
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise self.fail((*path, "hash"), "must be 'sha256:' followed by 64 hex digits")
            keys.append(
                KeySettings(
                    name=name,
                    hash=digest,
                    rpm=self.positive(t, path, "rpm", int, None),
                    tpm=self.positive(t, path, "tpm", int, None),
                    budget_usd_day=self.positive(t, path, "budget_usd_day", float, None, zero=True),
                    budget_usd_month=self.positive(t, path, "budget_usd_month", float, None, zero=True),
                )
            )
        return tuple(keys)

    def providers(self, value: Any) -> Mapping[str, ProviderSettings]:
        providers = {}
        for name, item in self.table(
            value, ("providers",), tuple(value) if isinstance(value, dict) else ()
        ).items():
            path = ("providers", name)
            allowed = (
                "kind", "base_url", "api_key", "api_version", "headers", "stream_usage", "responses",
                "traces", "on_miss", "pace", "system",
            )  # fmt: skip
            t = self.table(item, path, allowed)
            kind = self.choice(t, path, "kind", PROVIDER_KINDS, None)
            if kind is None:
                raise self.fail((*path, "kind"), f"is required (one of {', '.join(PROVIDER_KINDS)})")
            if kind == "recorded":
                providers[name] = self._recorded(t, path)
                continue
            for key in RECORDED_KEYS:
                if key in t:
                    raise self.fail((*path, key), f"is only for kind 'recorded', not {kind!r}")
            base_url = self.value(t, path, "base_url", str, DEFAULT_BASE_URLS.get(kind))
            if base_url is None:
                raise self.fail((*path, "base_url"), f"is required for kind {kind!r}")
            if kind != "mock" and not base_url.startswith(("http://", "https://")):
                raise self.fail((*path, "base_url"), f"must start with http:// or https://, got {base_url!r}")
            api_version = self.value(t, path, "api_version", str, None)
            if kind == "azure" and api_version is None:
                api_version = "2024-10-21"
            providers[name] = ProviderSettings(
                name=name,
                kind=kind,
                base_url=base_url.rstrip("/"),
                api_key=self.secret((*path, "api_key"), self.value(t, path, "api_key", str, None)),
                api_version=api_version,
                headers=self.str_map(t, path, "headers"),
                stream_usage=self.value(t, path, "stream_usage", bool, True),
                responses=self._responses(t, path, kind, base_url),
                system=self.value(t, path, "system", str, None) or None,
            )
        self._forwards(providers)
        return MappingProxyType(providers)

    def _recorded(self, t: dict[str, Any], path: KeyPath) -> ProviderSettings:
        """`kind`, `traces` (relative to the config file's directory), `on_miss`, `pace` alone."""
        for key in t:
            if key not in ("kind", *RECORDED_KEYS):
                raise self.fail((*path, key), "is not used by kind 'recorded' (it has traces, on_miss, pace)")
        traces = self.str_list(t, path, "traces")
        if not traces:
            raise self.fail((*path, "traces"), "is required for kind 'recorded' (trace files or directories)")
        here = Path(self.file).parent
        on_miss = self.value(t, path, "on_miss", str, "error")
        if ON_MISS.fullmatch(on_miss) is None:
            raise self.fail((*path, "on_miss"), f"must be 'error' or 'forward:<provider>', got {on_miss!r}")
        return ProviderSettings(
            name=str(path[-1]),
            kind="recorded",
            base_url="",
            traces=tuple(str(here / Path(p).expanduser()) for p in traces),
            on_miss=on_miss,
            pace=self.choice(t, path, "pace", PACES, "none") or "none",
        )

    def _forwards(self, providers: Mapping[str, ProviderSettings]) -> None:
        """Every `on_miss = "forward:NAME"` names another provider, one that is not `recorded`."""
        for name, ps in providers.items():
            match = ON_MISS.fullmatch(ps.on_miss)
            target = match.group("provider") if match else None
            if target is None:
                continue
            where = ("providers", name, "on_miss")
            if target not in providers:
                raise self.fail(where, f"forwards to unknown provider {target!r} (no [providers.{target}])")
            if providers[target].kind == "recorded":
                raise self.fail(where, f"forwards to {target!r}, a recorded provider: name a real one")

    def _responses(self, t: dict[str, Any], path: KeyPath, kind: str, base_url: str) -> bool:
        """Whether an `openai` provider takes the Responses API itself: OpenAI's own API does."""
        native = kind == "openai" and base_url.rstrip("/") == OPENAI_API
        responses = self.value(t, path, "responses", bool, native)
        if responses and kind != "openai":
            raise self.fail((*path, "responses"), f"is only for kind 'openai', not {kind!r}")
        return bool(responses)

    def models(self, value: Any, providers: Mapping[str, ProviderSettings]) -> Mapping[str, ModelSettings]:
        if not isinstance(value, list):
            raise self.fail(("models",), "expected an array of tables ([[models]])")
        models: dict[str, ModelSettings] = {}
        allowed = ("name", "targets", "fallbacks", "price", "retries", "timeout", "strategy", "cache")
        for i, item in enumerate(value):
            path = ("models", i)
            t = self.table(item, path, allowed)
            name = self.required(t, path, "name", str)
            if name in models:
                raise self.fail((*path, "name"), f"duplicate model name {name!r}")
            targets = self.targets(self.required(t, path, "targets", list), (*path, "targets"), providers)
            price = None
            if "price" in t:
                pt = self.table(t["price"], (*path, "price"), ("input_per_mtok", "output_per_mtok"))
                price = Price(
                    input_per_mtok=self.positive(
                        pt, (*path, "price"), "input_per_mtok", float, 0.0, zero=True
                    ),
                    output_per_mtok=self.positive(
                        pt, (*path, "price"), "output_per_mtok", float, 0.0, zero=True
                    ),
                )
            timeouts = Timeouts()
            if "timeout" in t:
                tp = (*path, "timeout")
                tt = self.table(t["timeout"], tp, ("connect", "first_token", "total"))
                timeouts = Timeouts(
                    connect=self.positive(tt, tp, "connect", float, timeouts.connect),
                    first_token=self.positive(tt, tp, "first_token", float, timeouts.first_token),
                    total=self.positive(tt, tp, "total", float, timeouts.total),
                )
            models[name] = ModelSettings(
                name=name,
                targets=targets,
                fallbacks=self.str_list(t, path, "fallbacks"),
                price=price,
                retries=self.positive(t, path, "retries", int, 0, zero=True),
                timeout=timeouts,
                strategy=self.choice(t, path, "strategy", STRATEGIES, "weighted") or "weighted",
                cache=self.cache(t, path),
            )
        for i, model in enumerate(models.values()):
            for j, fallback in enumerate(model.fallbacks):
                if fallback not in models and not _is_direct(fallback, providers):
                    raise self.fail(("models", i, "fallbacks", j), f"unknown model {fallback!r}")
        return MappingProxyType(models)

    def targets(self, value: list[Any], path: tuple[str | int, ...], providers) -> tuple[Target, ...]:
        if not value:
            raise self.fail(path, "needs at least one target")
        targets = []
        for j, item in enumerate(value):
            tp = (*path, j)
            t = self.table(item, tp, ("provider", "model", "weight"))
            provider = self.required(t, tp, "provider", str)
            if provider not in providers:
                raise self.fail(
                    (*tp, "provider"), f"unknown provider {provider!r} (no [providers.{provider}])"
                )
            targets.append(
                Target(
                    provider=provider,
                    model=self.required(t, tp, "model", str),
                    weight=self.positive(t, tp, "weight", float, 1.0),
                )
            )
        return tuple(targets)

    def routing(self, value: Any) -> RoutingSettings:
        path = ("routing",)
        t = self.table(value, path, ("unhealthy_after", "cooldown"))
        return RoutingSettings(
            unhealthy_after=self.positive(t, path, "unhealthy_after", int, 3, zero=True),
            cooldown=self.positive(t, path, "cooldown", float, 30.0),
        )

    def tracing(self, value: Any) -> TracingSettings:
        path = ("tracing",)
        allowed = (
            "dir", "project", "exclude_request_data", "enabled", "segment_max_mb", "retention_days",
            "max_disk_mb",
        )  # fmt: skip
        t = self.table(value, path, allowed)
        default = TracingSettings()
        return TracingSettings(
            dir=self.value(t, path, "dir", str, default.dir),
            project=self.value(t, path, "project", str, default.project),
            exclude_request_data=self.value(t, path, "exclude_request_data", bool, False),
            enabled=self.value(t, path, "enabled", bool, True),
            segment_max_mb=self.positive(t, path, "segment_max_mb", int, default.segment_max_mb),
            retention_days=self.positive(t, path, "retention_days", int, default.retention_days, zero=True),
            max_disk_mb=self.positive(t, path, "max_disk_mb", int, default.max_disk_mb),
        )


def _is_direct(model: str, providers: Mapping[str, ProviderSettings]) -> bool:
    provider, sep, rest = model.partition("/")
    return bool(sep and rest and provider in providers)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")
