"""Who is calling: gateway keys checked by hash, and their per-minute request and token limits."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tfgw.config import KeySettings
from tfgw.errors import AuthenticationError, RateLimitError
from tfgw.keys import hash_key

__all__ = ["KeyRing", "Limiter"]


@dataclass(slots=True)
class Limiter:
    """A token bucket refilled at `per_minute / 60` per second, holding at most `per_minute`."""

    per_minute: int
    level: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = float(self.per_minute)

    def _refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until the bucket holds one whole unit again; 0 when it does now."""
        self._refill(now)
        return 0.0 if self.level >= 1 else (1.0 - self.level) * 60.0 / self.per_minute

    def take(self, amount: float) -> None:
        self.level -= amount


class KeyRing:
    def __init__(self, keys: Iterable[KeySettings]) -> None:
        self.by_hash = {key.hash: key for key in keys}
        self.rpm = {key.name: Limiter(key.rpm) for key in self.by_hash.values() if key.rpm}
        self.tpm = {key.name: Limiter(key.tpm) for key in self.by_hash.values() if key.tpm}

    @property
    def enabled(self) -> bool:
        return bool(self.by_hash)

    def authenticate(self, authorization: str | None, *, api_key: str | None = None) -> KeySettings | None:
        """The caller's key (None when the gateway has no keys), from `Authorization: Bearer` or,
        as Anthropic's clients send it, `x-api-key` (`api_key`). Raises 401 or 429."""
        if not self.by_hash:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = (token if scheme.lower() == "bearer" else "").strip() or (api_key or "").strip()
        if not token:
            raise AuthenticationError(
                "You didn't provide an API key. Send your tfgw key as 'Authorization: Bearer <key>'"
                " (or 'x-api-key: <key>')."
            )
        key = self.by_hash.get(hash_key(token))
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        self.admit(key)
        return key

    def admit(self, key: KeySettings) -> None:
        now = time.monotonic()
        for kind, limiters in (("requests", self.rpm), ("tokens", self.tpm)):
            limiter = limiters.get(key.name)
            if limiter is not None and (wait := limiter.wait_time(now)) > 0:
                raise RateLimitError(
                    f"Rate limit reached for key {key.name!r}: {limiter.per_minute} {kind} per minute.",
                    retry_after=wait,
                )
        if (rpm := self.rpm.get(key.name)) is not None:
            rpm.take(1)

    def spend_tokens(self, key: KeySettings | None, tokens: int) -> None:
        if key is not None and (tpm := self.tpm.get(key.name)) is not None:
            tpm.take(tokens)
