"""The config's `[bus]` table: where finished traces travel between processes. `local` (the
default) is the trace log's segment files on this machine; `nats` is a NATS JetStream stream that
gateway replicas publish to and exporter workers, `tfgw traces tail --nats` and `top` read from.
(`tfgw.config` builds it with these checks; every problem names the file, line and key.)"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tfgw.config_toml import KeyPath, TableChecker
from tfgw.errors import ConfigError

__all__ = ["BUS_KINDS", "BusChecks", "BusSettings", "TlsSettings", "with_bus_secrets"]

BUS_KINDS = ("local", "nats")
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """`tls = { ca = "...", cert = "...", key = "..." }`: files; `ca` alone verifies the server,
    `cert` and `key` together are the client's own certificate."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class BusSettings:
    kind: str = "local"
    #: the NATS servers (several: a cluster; the client fails over between them)
    urls: tuple[str, ...] = (DEFAULT_NATS_URL,)
    stream: str = "TFGW_TRACES"
    subject: str = "tfgw.traces"
    #: credentials, at most one way: user and password, a token, a creds file, or an NKey seed file
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None
    nkey: str | None = None
    tls: TlsSettings | None = None
    #: the stream, made when it is missing: its replicas, and how long and how much it keeps
    replicas: int = 1
    max_age_hours: float = 168.0
    max_mb: int = 10240

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token) if s)


class BusChecks(TableChecker):
    def bus(self, value: Any) -> BusSettings:
        path: KeyPath = ("bus",)
        allowed = (
            "kind", "url", "stream", "subject", "user", "password", "token", "creds", "nkey", "tls",
            "replicas", "max_age_hours", "max_mb",
        )  # fmt: skip
        t = self.table(value, path, allowed)
        default = BusSettings()
        kind = self.choice(t, path, "kind", BUS_KINDS, "local") or "local"
        urls = self._urls(t, path)
        ways = [k for k in ("user", "token", "creds", "nkey") if k in t]
        if len(ways) > 1:
            raise self.fail(
                (*path, ways[1]), f"give one way to authenticate, not both {ways[0]} and {ways[1]}"
            )
        if ("password" in t) != ("user" in t):
            missing = "user" if "password" in t else "password"
            raise self.fail((*path, "password" if "password" in t else "user"), f"needs {missing} too")
        return BusSettings(
            kind=kind,
            urls=urls,
            stream=self.value(t, path, "stream", str, default.stream),
            subject=self.value(t, path, "subject", str, default.subject),
            user=self.value(t, path, "user", str, None),
            password=self.secret((*path, "password"), self.value(t, path, "password", str, None)),
            token=self.secret((*path, "token"), self.value(t, path, "token", str, None)),
            creds=self.value(t, path, "creds", str, None),
            nkey=self.value(t, path, "nkey", str, None),
            tls=self._tls(t, path),
            replicas=self.positive(t, path, "replicas", int, default.replicas),
            max_age_hours=self.positive(t, path, "max_age_hours", float, default.max_age_hours),
            max_mb=self.positive(t, path, "max_mb", int, default.max_mb),
        )

    def _urls(self, t: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        if "url" not in t:
            return (DEFAULT_NATS_URL,)
        value = t["url"]
        urls = (
            (self.value(t, path, "url", str, None),)
            if isinstance(value, str)
            else self.str_list(t, path, "url")
        )
        if not urls:
            raise self.fail((*path, "url"), "needs at least one nats:// or tls:// URL")
        for i, url in enumerate(urls):
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                where = (*path, "url") if isinstance(value, str) else (*path, "url", i)
                raise self.fail(where, f"must start with nats://, tls://, ws:// or wss://, got {url!r}")
        return tuple(urls)

    def _tls(self, t: dict[str, Any], path: KeyPath) -> TlsSettings | None:
        if "tls" not in t:
            return None
        tp = (*path, "tls")
        tt = self.table(t["tls"], tp, ("ca", "cert", "key"))
        if ("cert" in tt) != ("key" in tt):
            raise self.fail((*tp, "cert" if "cert" in tt else "key"), "cert and key go together")
        return TlsSettings(
            ca=self.value(tt, tp, "ca", str, None),
            cert=self.value(tt, tp, "cert", str, None),
            key=self.value(tt, tp, "key", str, None),
        )


def with_bus_secrets(bus: BusSettings, path: Path) -> BusSettings:
    """`[bus] password` and `token` given as `env:VAR`, resolved, for a command that read its config
    without resolving secrets (only these: reading NATS needs no other secret of the config)."""

    def resolved(key: str, value: str | None) -> str | None:
        if value is None or not value.startswith("env:"):
            return value
        found = os.environ.get(value[4:])
        if not found:
            raise ConfigError(str(path), f"environment variable {value[4:]} is not set", key=f"bus.{key}")
        return found

    return replace(bus, password=resolved("password", bus.password), token=resolved("token", bus.token))
