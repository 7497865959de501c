"""What the gateway knows of the export targets, without knowing the exporter.

`tfgw serve` resolves the targets once, starts the exporter, and hands the gateway an `Exports`:
the names of the targets whose cursors the trace log's retention must respect (their undelivered
data is kept), and a `status()` callable for the `export` part of `GET /readyz`. The gateway never
imports `tfgw.export`: the dependency points from the CLI to both sides, not from one to the other.

A plain frozen object: with `--workers N` the workers are forked from `tfgw serve`, so each gets
its own copy as it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NO_EXPORTS", "Exports"]


def _nothing() -> dict[str, dict[str, Any]]:
    return {}


@dataclass(frozen=True, slots=True)
class Exports:
    #: every configured target (disabled ones too): retention keeps what any of them has not had
    targets: tuple[str, ...] = ()
    #: per target, what its exporter has done (`tfgw otel status --json`, one object per target)
    status: Callable[[], dict[str, dict[str, Any]]] = field(default=_nothing)


#: a gateway without export targets (the app factory's default, and the app tests')
NO_EXPORTS = Exports()
