"""The config's `[otel.targets.NAME]` tables: where traces (and, with `metrics = true`, metrics)
are exported to (`tfgw.config` builds them with these checks; `tfgw.export.targets` applies the
defaults; every problem names the file, line and key)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tfgw.config_toml import KeyPath, TableChecker

__all__ = [
    "CONVENTIONS",
    "OTEL_KINDS",
    "OTEL_PROTOCOLS",
    "OTEL_REQUIRED",
    "RESERVED_TARGET_NAMES",
    "OtelChecks",
    "OtelTargetSettings",
]

OTEL_KINDS = ("arize", "middleware", "otlp")
OTEL_PROTOCOLS = ("grpc", "http/protobuf", "http/json")
OTEL_COMPRESSIONS = ("gzip", "none")
#: what each kind of export target cannot do without (the rest has defaults)
OTEL_REQUIRED = {
    "arize": ("space_id", "api_key"),
    "middleware": ("endpoint", "api_key"),
    "otlp": ("endpoint",),
}
#: a name a target cannot have: its cursor would be the NATS publisher's (tfgw.bus.publish)
RESERVED_TARGET_NAMES = frozenset(("nats",))
#: target names become file names (the exporter's cursor), so they are kept plain
OTEL_TARGET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: the span conventions a target can receive, in the order they are listed
CONVENTIONS = ("openinference", "gen_ai")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OtelTargetSettings:
    """One `[otel.targets.NAME]` table as written; `tfgw.export.targets` applies the defaults."""

    name: str
    kind: str
    endpoint: str | None = None
    protocol: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    space_id: str | None = None
    api_key: str | None = None
    project: str | None = None
    exclude_request_data: bool = False
    enabled: bool = True
    compression: str | None = None  # "gzip" | "none"; None: the default (gzip)
    timeout: float | None = None  # seconds per export request; None: the default (10)
    #: the names of the headers written as `env:VAR`: their values are secrets
    secret_headers: tuple[str, ...] = ()
    #: the span conventions this target receives: "openinference", "gen_ai" or both (the default)
    conventions: tuple[str, ...] = CONVENTIONS
    #: OTLP metrics are pushed to this target too (`/v1/metrics` beside `/v1/traces`)
    metrics: bool = False

    def secrets(self) -> tuple[str, ...]:
        """The secret values (not the env:VAR references a disabled target keeps)."""
        found = [self.api_key, self.space_id, *(self.headers.get(h) for h in self.secret_headers)]
        return tuple(s for s in found if s and not s.startswith("env:"))


class OtelChecks(TableChecker):
    def otel(self, value: Any) -> Mapping[str, OtelTargetSettings]:
        root = self.table(value, ("otel",), ("targets",))
        raw = root.get("targets", {})
        targets = {}
        allowed = (
            "kind", "endpoint", "protocol", "headers", "space_id", "api_key", "project",
            "exclude_request_data", "enabled", "compression", "timeout", "conventions", "metrics",
        )  # fmt: skip
        for name, item in self.table(
            raw, ("otel", "targets"), tuple(raw) if isinstance(raw, dict) else ()
        ).items():
            path = ("otel", "targets", name)
            if not OTEL_TARGET_NAME.fullmatch(name):
                raise self.fail(path, "a target name may only use letters, digits, '-' and '_' (64 at most)")
            if name in RESERVED_TARGET_NAMES:
                raise self.fail(path, f"the target name {name!r} is reserved (the NATS publisher's cursor)")
            t = self.table(item, path, allowed)
            kind = self.choice(t, path, "kind", OTEL_KINDS, None)
            if kind is None:
                raise self.fail((*path, "kind"), f"is required (one of {', '.join(OTEL_KINDS)})")
            for key in OTEL_REQUIRED[kind]:
                if t.get(key) in (None, ""):
                    raise self.fail((*path, key), f"is required for kind {kind!r}")
            if "space_id" in t and kind != "arize":
                raise self.fail((*path, "space_id"), f"is only used by kind 'arize', not {kind!r}")
            if "api_key" in t and kind == "otlp":
                raise self.fail(
                    (*path, "api_key"),
                    "is not used by kind 'otlp': send credentials as headers, "
                    'e.g. headers = { authorization = "env:VAR" }',
                )
            enabled = self.value(t, path, "enabled", bool, True)
            # a disabled target sends nothing, so its env:VAR secrets need not be set: they are left
            # as references (tfgw.export.targets resolves them for display if they are set)
            resolving, self.resolve_secrets = self.resolve_secrets, self.resolve_secrets and enabled
            try:
                headers = self.str_map(t, path, "headers")
                space_id = self.secret((*path, "space_id"), self.value(t, path, "space_id", str, None))
                api_key = self.secret((*path, "api_key"), self.value(t, path, "api_key", str, None))
            finally:
                self.resolve_secrets = resolving
            written = self.value(t, path, "headers", dict, {})
            targets[name] = OtelTargetSettings(
                name=name,
                kind=kind,
                endpoint=self.value(t, path, "endpoint", str, None),
                protocol=self.choice(t, path, "protocol", OTEL_PROTOCOLS, None),
                headers=headers,
                space_id=space_id,
                api_key=api_key,
                project=self.value(t, path, "project", str, None),
                exclude_request_data=self.value(t, path, "exclude_request_data", bool, False),
                enabled=enabled,
                compression=self.choice(t, path, "compression", OTEL_COMPRESSIONS, None),
                timeout=self.positive(t, path, "timeout", float, None),
                secret_headers=tuple(k for k, v in written.items() if v.startswith("env:")),
                conventions=self.conventions(t, path),
                metrics=self.value(t, path, "metrics", bool, False),
            )
        return MappingProxyType(targets)

    def conventions(self, t: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        if "conventions" not in t:
            return CONVENTIONS
        found = self.str_list(t, path, "conventions")
        for i, name in enumerate(found):
            if name not in CONVENTIONS:
                raise self.fail(
                    (*path, "conventions", i), f"must be one of {', '.join(CONVENTIONS)}, got {name!r}"
                )
        if not found:
            raise self.fail((*path, "conventions"), f"needs at least one of {', '.join(CONVENTIONS)}")
        return tuple(name for name in CONVENTIONS if name in found)
