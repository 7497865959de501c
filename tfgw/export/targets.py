"""How a configured export target becomes something a sender can use.

`resolve_targets()` turns every `[otel.targets.NAME]` table, plus the standard
`OTEL_EXPORTER_OTLP_*` variables when they name an endpoint, into `ResolvedTarget`s: every
default applied, the endpoint in the form its protocol sends to, every header to send (auth
included), and the secret values among them, for masking. Nothing here opens a connection.

The rules (docs/export.md):
- http/protobuf and http/json: the endpoint is a base URL and `/v1/traces` is appended unless it
  already ends with it; a URL ending in `/v1` (as arize-otel writes Arize's) gets `/traces`.
- grpc: the endpoint is sent to as `host:port`; `http://` means a plaintext channel, `https://`
  and a bare `host:port` mean TLS; a path is ignored, as the OTLP gRPC exporters ignore it.
- arize: grpc to `https://otlp.arize.com` unless told otherwise, with the headers arize-otel sends;
  middleware: http/protobuf with `authorization: <api key>`; otlp: what it is given.
- header names are lowercased for grpc (gRPC metadata keys must be lowercase).

The implicit `env` target reads the variables exactly as the OTel specification's "OTLP Exporter
Configuration" says (the TRACES_ variable wins over the generic one, an empty variable counts as
unset), except that a value tfgw cannot use is a `ConfigError` naming the variable rather than a
warning: an exporter silently sending elsewhere than asked is worse than one that does not start.

A settings object read without resolving secrets (`load(..., resolve_secrets=False)`, as the CLI
does to display targets) may still hold `env:VAR` references: they are resolved here from
`environ` when set, and otherwise kept as written and listed in `unset_env`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from tfgw.config import CONVENTIONS, OTEL_PROTOCOLS, OTEL_REQUIRED, OtelTargetSettings, Settings
from tfgw.errors import ConfigError, InputError, NotFoundError
from tfgw.secrets import mask
from tfgw.tracing.conventions import KEPT_BY_KIND, left_out

__all__ = [
    "ARIZE_ENDPOINT",
    "DEFAULT_PROTOCOLS",
    "DEFAULT_TIMEOUT_S",
    "ENDPOINT_TARGET",
    "ENV_TARGET",
    "SENSITIVE_HEADER",
    "ResolvedTarget",
    "configured_target",
    "describe",
    "enabled_targets",
    "endpoint_target",
    "resolve_target",
    "resolve_targets",
    "target_names",
]

ENV_TARGET = "env"
ARIZE_ENDPOINT = "https://otlp.arize.com"
DEFAULT_PROTOCOLS = {"arize": "grpc", "middleware": "http/protobuf", "otlp": "http/protobuf"}
DEFAULT_TIMEOUT_S = 10.0
#: an OTEL_EXPORTER_OTLP_TIMEOUT of 0 means "no limit"; the spec suggests the largest 32-bit ms count
INDEFINITE_TIMEOUT_S = (2**31 - 1) / 1000
TRACES_PATH = "/v1/traces"
#: header names whose literal values are treated as secrets (values written as env:VAR always are)
SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|credential|signature|session", re.I)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    name: str
    kind: str  # arize | middleware | otlp
    protocol: str  # grpc | http/protobuf | http/json
    #: HTTP: the full URL posted to; grpc: host:port
    endpoint: str
    #: plaintext (http://, or an insecure gRPC channel) rather than TLS
    insecure: bool = False
    #: everything sent with each request, auth included (lowercase names for grpc)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: the resource's openinference.project.name
    project: str = "default"
    exclude_request_data: bool = False
    compression: str | None = "gzip"
    timeout: float = DEFAULT_TIMEOUT_S  # seconds per export request
    enabled: bool = True
    #: the span conventions it receives: what only the other one says is left out (docs/export.md)
    conventions: tuple[str, ...] = CONVENTIONS
    #: OTLP metrics are pushed to it too
    metrics: bool = False
    #: every secret value in this target (api key, space id, secret header values), for masking
    secrets: tuple[str, ...] = ()
    #: `env:VAR` references left as written because VAR is not set (only from unresolved settings)
    unset_env: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Resolution


def resolve_targets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, ResolvedTarget]:
    """Every `[otel.targets.*]` (disabled ones too, with enabled=False), then the implicit `env`
    target when an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set and no config target is named `env`."""
    env = os.environ if environ is None else environ
    resolved = {name: _from_config(settings, t, env) for name, t in settings.otel_targets.items()}
    if ENV_TARGET not in resolved and (implicit := _from_environment(settings, env)) is not None:
        resolved[ENV_TARGET] = implicit
    return resolved


def enabled_targets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, ResolvedTarget]:
    """The targets an exporter sends to: `resolve_targets()` without the disabled ones."""
    return {name: t for name, t in resolve_targets(settings, environ).items() if t.enabled}


def resolve_target(settings: Settings, name: str, environ: Mapping[str, str] | None = None) -> ResolvedTarget:
    """One target by name, without resolving the others. Unknown: `NotFoundError` (exit code 1)."""
    env = os.environ if environ is None else environ
    if name in settings.otel_targets:
        return _from_config(settings, settings.otel_targets[name], env)
    if name == ENV_TARGET and (implicit := _from_environment(settings, env)) is not None:
        return implicit
    have = ", ".join(target_names(settings, env)) or "none"
    raise NotFoundError(f"no export target {name} (have: {have})")


def target_names(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The names `resolve_targets()` would return, without resolving anything."""
    env = os.environ if environ is None else environ
    names = list(settings.otel_targets)
    if ENV_TARGET not in names and _env_wanted(env):
        names.append(ENV_TARGET)
    return names


class _References:
    """Resolves the `env:VAR` references an unresolved settings object still holds."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.unset: list[str] = []

    def __call__(self, value: str | None) -> tuple[str | None, bool]:
        """The value to use, and whether it is a real value (False for an unset reference)."""
        if value is None or not value.startswith("env:"):
            return value, value is not None
        var = value[4:]
        if resolved := self.environ.get(var):
            return resolved, True
        if var not in self.unset:
            self.unset.append(var)
        return value, False


def _from_config(settings: Settings, t: OtelTargetSettings, environ: Mapping[str, str]) -> ResolvedTarget:
    file = settings.path or "<config>"

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(file, message, key=f"otel.targets.{t.name}.{key}")

    for key in OTEL_REQUIRED[t.kind]:
        if not getattr(t, key):
            raise fail(key, f"is required for kind {t.kind!r}")
    refs = _References(environ)
    secrets: list[str] = []

    def secret(value: str | None) -> str | None:
        resolved, real = refs(value)
        if real and resolved:
            secrets.append(resolved)
        return resolved

    protocol = t.protocol or DEFAULT_PROTOCOLS[t.kind]
    raw = t.endpoint or (ARIZE_ENDPOINT if t.kind == "arize" else "")
    try:
        endpoint, insecure, password = _endpoint(raw, protocol, _config_url)
    except ValueError as exc:
        raise fail("endpoint", str(exc)) from None
    if password:
        secrets.append(password)

    headers = _kind_headers(t, secret)
    for name, value in t.headers.items():
        if name in t.secret_headers or SENSITIVE_HEADER.search(name) or value.startswith("env:"):
            value = secret(value) or ""
        _set_header(headers, name, value)

    return ResolvedTarget(
        name=t.name,
        kind=t.kind,
        protocol=protocol,
        endpoint=endpoint,
        insecure=insecure,
        headers=_final_headers(headers, protocol),
        project=t.project or settings.tracing.project,
        exclude_request_data=t.exclude_request_data or settings.tracing.exclude_request_data,
        compression=None if t.compression == "none" else "gzip",
        timeout=t.timeout or DEFAULT_TIMEOUT_S,
        enabled=t.enabled,
        conventions=t.conventions,
        metrics=t.metrics,
        secrets=_unique(secrets),
        unset_env=tuple(refs.unset),
    )


def _kind_headers(t: OtelTargetSettings, secret: Callable[[str | None], str | None]) -> dict[str, str]:
    """The headers a kind sends before the target's own: Arize's as arize-otel sends them,
    Middleware's raw key."""
    if t.kind == "arize":
        api_key, space_id = secret(t.api_key) or "", secret(t.space_id) or ""
        return {
            "authorization": api_key,
            "api_key": api_key,
            "arize-space-id": space_id,
            "space_id": space_id,
            "arize-interface": "otel",
        }
    if t.kind == "middleware":
        return {"authorization": secret(t.api_key) or ""}
    return {}


def _set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any other spelling of the same (case-insensitive) name."""
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def _final_headers(headers: dict[str, str], protocol: str) -> Mapping[str, str]:
    if protocol == "grpc":
        headers = {k.lower(): v for k, v in headers.items()}
    return MappingProxyType(headers)


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


# --------------------------------------------------------------------------------------------------
# Endpoints


def _config_url(url: SplitResult) -> str:
    """A config target's HTTP endpoint: a base URL that gets /v1/traces, unless it has it already."""
    path = url.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += "/traces" if path.endswith("/v1") else TRACES_PATH
    return urlunsplit((url.scheme, url.netloc, path, url.query, ""))


def _env_base_url(url: SplitResult) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT: a base URL; traces go to `v1/traces` relative to it."""
    path = url.path if url.path.endswith("/") else url.path + "/"
    return urlunsplit((url.scheme, url.netloc, path + "v1/traces", url.query, url.fragment))


def _env_traces_url(url: SplitResult) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: used as is; only an empty path becomes `/`."""
    return urlunsplit((url.scheme, url.netloc, url.path or "/", url.query, url.fragment))


def _endpoint(
    raw: str, protocol: str, http_url: Callable[[SplitResult], str], *, bare_insecure: bool = False
) -> tuple[str, bool, str | None]:
    """(endpoint, insecure, password in the URL) for `raw` sent with `protocol`; ValueError if unusable."""
    raw = raw.strip()
    has_scheme = "://" in raw
    url = urlsplit(raw if has_scheme else "//" + raw)
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"invalid port in {raw!r}") from None
    if protocol != "grpc":
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"must be an http:// or https:// URL for protocol {protocol}, got {raw!r}")
        return http_url(url), url.scheme == "http", url.password
    if (has_scheme and url.scheme not in ("http", "https")) or not url.hostname:
        raise ValueError(
            f"must be https://host:port, http://host:port or host:port for protocol grpc, got {raw!r}"
        )
    insecure = url.scheme == "http" if has_scheme else bare_insecure
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{host}:{port or (80 if insecure else 443)}", insecure, None


# --------------------------------------------------------------------------------------------------
# The implicit `env` target (OTEL_EXPORTER_OTLP_*)

_PREFIX = "OTEL_EXPORTER_OTLP_"


def _env_var(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(variable, value) of OTEL_EXPORTER_OTLP_TRACES_{name}, else of OTEL_EXPORTER_OTLP_{name}."""
    for var in (f"{_PREFIX}TRACES_{name}", f"{_PREFIX}{name}"):
        if value := environ.get(var, "").strip():
            return var, value
    return None


def _env_wanted(environ: Mapping[str, str]) -> bool:
    """An endpoint is set, the SDK is not disabled, and OTEL_TRACES_EXPORTER (if set) names otlp."""
    if _env_var(environ, "ENDPOINT") is None:
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return not exporters or "otlp" in (e.strip() for e in exporters.split(","))


def _from_environment(settings: Settings, environ: Mapping[str, str]) -> ResolvedTarget | None:
    if not _env_wanted(environ):
        return None

    def fail(var: str, message: str) -> ConfigError:
        return ConfigError("environment", message, key=var)

    protocol = "http/protobuf"
    if found := _env_var(environ, "PROTOCOL"):
        var, protocol = found[0], found[1].lower()
        if protocol not in OTEL_PROTOCOLS:
            raise fail(var, f"must be one of {', '.join(OTEL_PROTOCOLS)}, got {found[1]!r}")

    bare_insecure = False
    if found := _env_var(environ, "INSECURE"):
        if found[1].lower() not in ("true", "false"):
            raise fail(found[0], f"must be true or false, got {found[1]!r}")
        bare_insecure = found[1].lower() == "true"

    var, raw = _env_var(environ, "ENDPOINT") or ("", "")
    http_url = _env_traces_url if var == f"{_PREFIX}TRACES_ENDPOINT" else _env_base_url
    try:
        endpoint, insecure, password = _endpoint(raw, protocol, http_url, bare_insecure=bare_insecure)
    except ValueError as exc:
        raise fail(var, str(exc)) from None

    headers: dict[str, str] = {}
    if found := _env_var(environ, "HEADERS"):
        headers = _parse_headers(*found)

    compression: str | None = "gzip"
    if found := _env_var(environ, "COMPRESSION"):
        if found[1].lower() not in ("gzip", "none"):
            raise fail(found[0], f"must be gzip or none, got {found[1]!r}")
        compression = None if found[1].lower() == "none" else "gzip"

    timeout = DEFAULT_TIMEOUT_S
    if found := _env_var(environ, "TIMEOUT"):
        if not found[1].isdigit():
            raise fail(found[0], f"must be a whole number of milliseconds (>= 0), got {found[1]!r}")
        timeout = int(found[1]) / 1000 or INDEFINITE_TIMEOUT_S

    return ResolvedTarget(
        name=ENV_TARGET,
        kind="otlp",
        protocol=protocol,
        endpoint=endpoint,
        insecure=insecure,
        headers=_final_headers(headers, protocol),
        project=settings.tracing.project,
        exclude_request_data=settings.tracing.exclude_request_data,
        compression=compression,
        timeout=timeout,
        enabled=True,
        # header values from the environment usually carry the credentials: all are secrets
        secrets=_unique([*headers.values(), password or ""]),
    )


def _parse_headers(var: str, value: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (W3C Baggage without properties), keys and values percent-decoded, keys
    lowercased as the OTel SDKs do. An error never quotes an entry: it may hold a secret."""
    headers: dict[str, str] = {}
    for number, entry in enumerate(value.split(","), start=1):
        if not entry.strip():
            continue
        name, sep, raw = entry.partition("=")
        name = unquote(name).strip().lower()
        if not sep or not name:
            raise ConfigError(
                "environment", f"entry {number} is not key=value (expected k1=v1,k2=v2)", key=var
            )
        headers[name] = unquote(raw).strip()
    return headers


# --------------------------------------------------------------------------------------------------
# Display


def describe(target: ResolvedTarget) -> dict[str, Any]:
    """A JSON-able view of a target, with every secret masked (`sk-…abcd`). `left_out`: the keys
    (and span events) of the convention it does not receive that it goes without, each only
    where the one it receives carries the same value."""
    hide = _masker(target.secrets)
    return {
        "name": target.name,
        "kind": target.kind,
        "protocol": target.protocol,
        "endpoint": hide(target.endpoint),
        "insecure": target.insecure,
        "headers": {name: hide(value) for name, value in target.headers.items()},
        "project": target.project,
        "exclude_request_data": target.exclude_request_data,
        "conventions": list(target.conventions),
        "left_out": left_out(target.conventions, KEPT_BY_KIND.get(target.kind, ())),
        "metrics": target.metrics,
        "compression": target.compression,
        "timeout": target.timeout,
        "enabled": target.enabled,
        "unset_env": list(target.unset_env),
    }


def _masker(secrets: tuple[str, ...]) -> Callable[[str], str]:
    whole = set(secrets)
    longest_first = sorted((s for s in whole if len(s) >= 8), key=len, reverse=True)

    def hide(text: str) -> str:
        if text in whole:
            return mask(text)
        url = urlsplit(text) if "://" in text else None
        if url is not None and url.password:
            text = text.replace(f":{url.password}@", f":{mask(url.password)}@", 1)
        for secret in longest_first:
            text = text.replace(secret, mask(secret))
        return text

    return hide


# -- targets named on the command line (`tfgw replay --to NAME | --endpoint URL`) --------------------

ENDPOINT_TARGET = "endpoint"


def endpoint_target(
    settings: Settings, endpoint: str, protocol: str | None, headers: list[str]
) -> ResolvedTarget:
    """An ad-hoc `otlp` target for `--endpoint URL [--protocol P] [--header K=V]...`, resolved by
    the same rules as a configured one (a header value may be `env:VAR`). Its project is empty:
    the files keep their own."""
    parsed: dict[str, str] = {}
    for item in headers:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--header: expected K=V, got {item.split('=')[0]!r}{'=…' if sep else ''}")
        parsed[key.strip()] = value.strip()
    t = OtelTargetSettings(
        name=ENDPOINT_TARGET,
        kind="otlp",
        endpoint=endpoint,
        protocol=protocol,
        headers=MappingProxyType(parsed),
        secret_headers=tuple(k for k, v in parsed.items() if v.startswith("env:")),
    )
    adhoc = dataclasses.replace(settings, path="--endpoint", otel_targets={ENDPOINT_TARGET: t})
    try:
        target = resolve_target(adhoc, ENDPOINT_TARGET)
    except ConfigError as exc:
        raise InputError(exc.message.replace(f"otel.targets.{ENDPOINT_TARGET}.endpoint: ", "")) from None
    _require_env(target, "--header")
    return dataclasses.replace(target, project="")


def configured_target(settings: Settings, name: str) -> ResolvedTarget:
    """`--to NAME`: a target of the config (or the implicit `env` one); unknown is bad usage.

    Its `project` is the one its table sets, else empty: a replay keeps the files' own projects
    unless the target (or `--project`) names one, rather than stamp `[tracing] project` on them."""
    try:
        target = resolve_target(settings, name)
    except NotFoundError as exc:
        raise InputError(f"--to: {exc.message}") from None
    _require_env(target, f"--to {name}")
    table = settings.otel_targets.get(name)
    return dataclasses.replace(target, project=table.project or "" if table is not None else "")


def _require_env(target: ResolvedTarget, what: str) -> None:
    if target.unset_env:
        names = ", ".join(target.unset_env)
        raise InputError(f"{what}: environment variable {names} is not set (the target's env:VAR secrets)")
