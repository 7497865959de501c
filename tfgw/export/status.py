"""What each export target has done, read from the cursor files its exporter keeps current.

The same view backs `tfgw otel status` and the `export` part of `GET /readyz`. An exporter
refreshes its target's file at least every couple of seconds, so a file older than `STALE_S`
means no exporter is running for that target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from tfgw.tracing.segments import cursor_dir, dropped_spans

__all__ = ["STALE_S", "target_status"]

STALE_S = 15.0
FIELDS = (
    "delivered", "pending_bytes", "retrying", "rejected", "partial_rejected", "unsendable", "last_error",
    "lag_s",
)  # fmt: skip


def target_status(
    trace_dir: Path, targets: Iterable[str], now: float | None = None
) -> dict[str, dict[str, Any]]:
    now = time.time() if now is None else now
    dropped = dropped_spans(trace_dir)
    out: dict[str, dict[str, Any]] = {}
    for name in targets:
        try:
            data = orjson.loads((cursor_dir(trace_dir) / f"{name}.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            data = {}
        updated = data.get("updated")
        running = isinstance(updated, int | float) and now - updated < STALE_S
        out[name] = {
            "state": ("retrying" if data.get("retrying") else "running") if running else "not running",
            **{key: data.get(key) for key in FIELDS},
            "dropped": dropped.get(name, 0),
            "last_success": data.get("last_success"),
            "updated": updated,
        }
    return out
