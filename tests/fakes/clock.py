"""A clock a test sets by hand: passed where the code takes `clock=` (`time.time`'s shape)."""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    """`clock()` is `now`, which the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
