"""Live config: what one config makes for requests (`Runtime`), and reloading it while serving.

A request takes the gateway's current `Runtime` when it begins and keeps it to its end, streams
included, so a reload never changes a request half-way. `tfgw serve` reloads when the config file
changes (its size, modification time or inode, polled every `POLL_S` seconds) and on SIGHUP. A new
config that does not load is refused with the same file:line message `tfgw serve` would give, and
the old one keeps serving; with several workers each does this itself. What only a restart can
change (where the gateway listens, its workers, the trace directory) is kept, and the log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tfgw.config import Settings, load
from tfgw.errors import ConfigError
from tfgw.gateway.auth import KeyRing, limited
from tfgw.gateway.routing import Router
from tfgw.policy.cache import ResponseCache
from tfgw.policy.guardrails import Guardrails
from tfgw.policy.limits import Limits
from tfgw.policy.shared import SharedLimits
from tfgw.providers import Provider, build_providers

__all__ = ["POLL_S", "ConfigWatcher", "Runtime", "restart_only"]

log = logging.getLogger("tfgw.gateway")

#: seconds between two looks at the config file: a revoked key is refused within about this long
POLL_S = 0.25
#: after a refused edit the file is read once more this much later (an editor may still be writing)
RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything a request needs that comes from the config, made once per config."""

    settings: Settings
    keys: KeyRing
    providers: Mapping[str, Provider]
    router: Router
    guardrails: Guardrails
    #: the worker's response cache, one for every config (a reload empties it)
    cache: ResponseCache
    #: the limits and budgets every worker counts together (None while no key has any)
    limits: Limits | None
    #: the names of the keys that have a limit or a budget
    limited: frozenset[str]
    #: with a NATS bus: the limits counted across every gateway (`limits` while NATS is down)
    shared: SharedLimits | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        session: aiohttp.ClientSession,
        cache: ResponseCache,
        limits: Limits | None,
        previous: Runtime | None = None,
        shared: SharedLimits | None = None,
    ) -> Runtime:
        """The runtime of `settings`, its providers calling through `session`; what the `previous`
        config's router learnt of the targets both name is kept (their health and latency)."""
        providers = build_providers(settings.providers, session, settings.secrets())
        routing = settings.routing
        router = Router(
            settings, providers, unhealthy_after=routing.unhealthy_after, cooldown=routing.cooldown
        )
        if previous is not None:
            router.inherit(previous.router)
        guardrails = Guardrails(settings.guardrails)
        counted = frozenset(key.name for key in settings.keys if limited(key))
        return cls(
            settings, KeyRing(settings.keys), providers, router, guardrails, cache, limits, counted, shared
        )


def restart_only(old: Settings, new: Settings) -> list[str]:
    """The settings that changed between `old` and `new` but take effect only after a restart."""
    changed = [
        f"[server] {name}"
        for name in ("host", "port", "workers")
        if getattr(old.server, name) != getattr(new.server, name)
    ]
    if old.tracing != new.tracing:
        changed.append("[tracing]")
    if old.otel_targets != new.otel_targets:
        changed.append("[otel.targets]")
    return changed


class ConfigWatcher:
    """Calls `apply` with the new settings when the config file at `path` changes (polled every
    `interval` seconds; None: never polled), or when `request()` is called (SIGHUP); logs and keeps
    the old config when the new one does not load."""

    def __init__(
        self, path: Path, apply: Callable[[Settings], None], *, interval: float | None = POLL_S
    ) -> None:
        self.path = path
        self.apply = apply
        self.interval = interval
        self.seen = self._signature()
        self.reloads = 0  # configs applied
        self.refused = 0  # edits refused
        self._wake = asyncio.Event()
        self._retry_at: float | None = None

    def request(self) -> None:
        """Reload now (SIGHUP), whether the file changed or not."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            forced, signature = self._wake.is_set(), self._signature()
            self._wake.clear()
            retry = self._retry_at is not None and loop.time() >= self._retry_at
            if forced or retry or signature != self.seen:
                self.seen = signature
                refused = not self.reload()
                self._retry_at = loop.time() + RETRY_S if refused and not retry else None

    def reload(self) -> bool:
        """Load the file and apply it; False when it was refused."""
        try:
            settings = load(self.path)
        except ConfigError as exc:
            self.refused += 1
            log.error("config reload refused, the previous config keeps serving: %s", exc)
            return False
        self.apply(settings)
        self.reloads += 1
        return True

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino
