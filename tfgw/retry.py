"""Waiting between attempts, in one place: exponential backoff with full jitter, and Retry-After.

Used by everything that tries again: the exporter's delivery loop, `tfgw replay` and
`tfgw otel test` (`tfgw.export.send.deliver`) and the gateway's retries of a provider
(`tfgw.gateway.routing`). A server's own answer wins over the computed delay: `Retry-After`
(delta-seconds or an HTTP-date) or gRPC's RetryInfo, capped at `max_retry_after`.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

__all__ = ["Backoff", "parse_retry_after"]


class Backoff:
    """Delays between attempts: exponential with full jitter (a random delay in
    [0, min(cap, base·2ⁿ)]), or what the server asked for (Retry-After, RetryInfo), capped."""

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        max_retry_after: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.max_retry_after = max_retry_after
        self.attempts = 0
        # the random module's own generator unless told otherwise: making a Random() seeds it from
        # os.urandom (~12 µs), too dear for one backoff a request
        self._uniform = (rng or random).uniform

    def next_delay(self, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt; counts the attempt."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempts, 62))
        self.attempts += 1
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after)
        return self._uniform(0, ceiling)

    def reset(self) -> None:
        """After a success: the next failure starts from `base` again."""
        self.attempts = 0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
