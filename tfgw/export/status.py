"""What each export target has done, read from the cursor files its exporter keeps current, and,
when no exporter is running for it, why not.

The same view backs `tfgw otel status` and the `export` part of `GET /readyz` (`tfgw serve` hands
the gateway this function). An exporter refreshes its target's file at least every couple of
seconds, so a file older than `STALE_S` means no exporter is running for that target.

`reason` is null while the target's exporter runs; otherwise one line, the first that applies:
tracing disabled, the target disabled, stopped (a heartbeat once, none lately), an `env:VAR` secret
unset, starting (its cursor is fresh, no heartbeat yet), never started.

With `[bus] kind = "nats"` the exporters keep no cursor file: `consumer_status` asks JetStream
for each target's durable consumer (`tfgw-<target>`) instead: messages not yet delivered to any
exporter (`num_pending`), delivered and waiting for their ack (`num_ack_pending`), delivered more
than once (`num_redelivered`), deliveries so far (`delivered`, redeliveries included), the stream
sequence every message up to which is settled (`ack_floor`), and the exporters' pull requests
waiting on it now (`waiting`: 0 means no exporter is idle on it, or none runs). The gateway's
publisher on this machine keeps a cursor file as a target's exporter does (`nats`):
`publisher_status` reads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from tfgw.config import Settings
from tfgw.export.targets import resolve_target, target_names
from tfgw.tracing.segments import cursor_dir, dropped_spans

__all__ = ["STALE_S", "consumer_status", "not_running_reason", "publisher_status", "target_status"]

STALE_S = 15.0
FIELDS = (
    "delivered", "attempts", "retries", "pending_bytes", "retrying", "rejected", "partial_rejected",
    "unsendable", "unreadable", "last_error", "warning", "lag_s",
)  # fmt: skip
CONSUMER_FIELDS = ("num_pending", "num_ack_pending", "num_redelivered", "delivered", "ack_floor", "waiting")
#: how long `otel status` tries to reach NATS
STATUS_TIMEOUT_S = 3.0
NO_CONSUMER = "no consumer yet: no exporter has run with this target since the stream was made"
NEVER_STARTED = "never started: no exporter has run with this target since it was added; restart `tfgw serve`"


def target_status(
    settings: Settings,
    targets: Iterable[str] | None = None,
    *,
    now: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per target (default: every one `target_names()` gives), its state, why it is not running
    (`reason`, None when it is), and its exporter's counters."""
    now = time.time() if now is None else now
    env = os.environ if environ is None else environ
    trace_dir = settings.tracing.path
    dropped = dropped_spans(trace_dir)
    out: dict[str, dict[str, Any]] = {}
    for name in target_names(settings, env) if targets is None else targets:
        path = cursor_dir(trace_dir) / f"{name}.json"
        data, created = _read_cursor(path)
        updated = data.get("updated")
        running = isinstance(updated, int | float) and now - updated < STALE_S
        out[name] = {
            "state": ("retrying" if data.get("retrying") else "running") if running else "not running",
            "reason": None if running else not_running_reason(settings, name, updated, created, now, env),
            **{key: data.get(key) for key in FIELDS},
            "dropped": dropped.get(name, 0),
            "last_success": data.get("last_success"),
            "updated": updated,
        }
    return out


def _read_cursor(path: Path) -> tuple[dict[str, Any], float | None]:
    """The cursor file's content ({} if absent or unreadable) and when it was last written."""
    try:
        raw, written = path.read_bytes(), path.stat().st_mtime
    except OSError:
        return {}, None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}, written
    return (data if isinstance(data, dict) else {}), written


def not_running_reason(
    settings: Settings,
    name: str,
    updated: Any,
    written: float | None,
    now: float,
    environ: Mapping[str, str],
) -> str:
    """Why no exporter runs for `name`: `updated` is its last heartbeat (None if there never was
    one), `written` when its cursor file was last written (None if there is none)."""
    table = settings.otel_targets.get(name)
    if not settings.tracing.enabled:
        return "tracing disabled ([tracing] enabled = false): nothing is written to export"
    if table is not None and not table.enabled:
        return f"disabled in the config (otel.targets.{name}.enabled = false)"
    if isinstance(updated, int | float):
        return f"stopped: last heartbeat {_ago(now - updated)} ago"
    if table is not None and (unset := resolve_target(settings, name, environ).unset_env):
        refs = ", ".join(f"env:{var}" for var in unset)
        return f"its secret {refs} is not set" if len(unset) == 1 else f"its secrets {refs} are not set"
    if written is not None and now - written < STALE_S:
        return "starting: no heartbeat from its exporter yet"
    return NEVER_STARTED


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def consumer_status(settings: Settings, targets: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per target (default: the enabled ones), its consumer's state read from JetStream; a target
    without a consumer has `state` "no consumer" and `reason`. `tfgw.bus.connect.BusError` (exit
    code 1) when no NATS server answers within `STATUS_TIMEOUT_S`."""
    import asyncio

    if targets is None:
        tables = settings.otel_targets
        targets = [n for n in target_names(settings) if n not in tables or tables[n].enabled]
    names = list(targets)
    return asyncio.run(_consumer_status(settings, names))


async def _consumer_status(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    from tfgw.bus.connect import BusError, connect, describe
    from tfgw.bus.consume import consumer_name

    bus = settings.bus
    nc = await connect(bus, "status", reconnect=False, timeout=STATUS_TIMEOUT_S, on_error=lambda _: None)
    out: dict[str, dict[str, Any]] = {}
    try:
        js = nc.jetstream(timeout=5)
        for name in names:
            consumer = consumer_name(name)
            try:
                info = await js.consumer_info(bus.stream, consumer)
            except NotFoundError:
                out[name] = {"consumer": consumer, "state": "no consumer", "reason": NO_CONSUMER}
                out[name].update(dict.fromkeys(CONSUMER_FIELDS))
                continue
            out[name] = {
                "consumer": consumer,
                "state": "consumer",
                "reason": None,
                "num_pending": info.num_pending,
                "num_ack_pending": info.num_ack_pending,
                "num_redelivered": info.num_redelivered,
                "delivered": info.delivered.consumer_seq if info.delivered else 0,
                "ack_floor": info.ack_floor.stream_seq if info.ack_floor else 0,
                "waiting": info.num_waiting,
            }
    except (TimeoutError, NatsError) as exc:  # JetStream off, or not answering
        raise BusError(f"JetStream stream {bus.stream}: {describe(exc, bus)}") from exc
    finally:
        await nc.close()
    return out


def publisher_status(settings: Settings, *, now: float | None = None) -> dict[str, Any] | None:
    """The publisher of this machine's gateway (`tfgw.bus.publish`, its cursor `nats`) as
    `target_status` reads a target's; None when no gateway has published from this trace log."""
    from tfgw.bus.publish import CURSOR

    if not (cursor_dir(settings.tracing.path) / f"{CURSOR}.json").exists():
        return None
    return target_status(settings, [CURSOR], now=now)[CURSOR]
