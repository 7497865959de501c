"""tfgw.retry: the one backoff every retry in tfgw waits with."""

from __future__ import annotations

import email.utils
import random

from tfgw import retry
from tfgw.retry import Backoff, parse_retry_after


def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 45, usegmt=True), now) == 45.0
    assert parse_retry_after(email.utils.formatdate(now - 45, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(rng=random.Random(1))
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]

    delays = [backoff.next_delay() for _ in ceilings]

    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 8, "the ceiling grows to the cap"
    assert backoff.next_delay(retry_after=12.5) == 12.5
    assert backoff.next_delay(retry_after=3600) == 60.0
    assert backoff.next_delay(retry_after=-1) == 0.0
    backoff.reset()
    assert all(backoff.next_delay() <= 0.5 for _ in range(1)) and backoff.attempts == 1
    many = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(200)]
    assert 0.15 < sum(many) / len(many) < 0.35, "uniform in [0, 0.5]: a mean near 0.25"


def test_the_public_surface() -> None:
    assert retry.__all__ == ["Backoff", "parse_retry_after"]
