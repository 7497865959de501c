"""Where the metrics live on disk, in the state directory (`[server] state_dir`, default `state`
beside the traces, where `limits.bin` is too):

- `metrics.prom`: the Prometheus text of every metric, rewritten whole (a temporary file, then a
  rename) at most once a second while anything changed. `GET /metrics` serves it as it is.
- `metrics-start.json`: `{"started": <Unix ns>, "offsets": {"<rows file>": <offset>, ...}}`, where
  the deriver starts counting. `tfgw serve` writes it when it starts, before any worker writes a
  trace: counters are cumulative since then, and an exporter restart counts the rows from there
  again rather than losing them.

Light on purpose: the gateway imports this module for its route, nothing else of tfgw.metrics.
"""

from __future__ import annotations

from pathlib import Path

from tfgw.config import Settings

__all__ = ["CONTENT_TYPE", "SNAPSHOT", "START", "snapshot_path", "state_dir"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SNAPSHOT = "metrics.prom"
START = "metrics-start.json"


def state_dir(settings: Settings) -> Path:
    return settings.tracing.state_path(settings.server.state_dir)


def snapshot_path(settings: Settings) -> Path:
    return state_dir(settings) / SNAPSHOT
