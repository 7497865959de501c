"""Model resolution and the fallback loop: the one place that decides which provider is called.

A name resolves through `[[models]]` first (an alias: weighted choice among its targets, then its
`fallbacks` in order), then as `provider/model` directly. A provider failure that is the
provider's (5xx, 429, connection error, timeout) moves on to the next attempt; a 4xx that is the
caller's ends the request with the provider's own error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tfgw.config import ModelSettings, Settings, Timeouts
from tfgw.errors import ModelNotFoundError, ProviderError
from tfgw.providers.base import Call, Provider

__all__ = ["Attempt", "Router", "Try"]

T = TypeVar("T")

#: seconds before the first retry of the same target; doubled each time, with jitter
RETRY_BASE_DELAY = 0.25


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: Provider
    model: str
    timeout: Timeouts
    retries: int = 0
    #: the alias this attempt came from (None for a direct provider/model name)
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Try:
    """One run of an attempt: its number over all fallbacks and retries (from 1), and the error that
    ended the previous one."""

    attempt: Attempt
    number: int
    previous: ProviderError | None = None

    def call(self, body: dict[str, Any]) -> Call:
        return Call(self.attempt.model, body, self.attempt.timeout)


class Router:
    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.models = settings.models
        self.providers = providers

    def names(self) -> list[str]:
        return list(self.models)

    def resolve(self, name: Any) -> list[Attempt]:
        """Every attempt for a requested model name, in the order they are tried."""
        if not isinstance(name, str) or not name:
            raise ModelNotFoundError("you must provide a model name", param="model")
        model = self.models.get(name)
        if model is None:
            return [self._direct(name)]
        attempts = [self._pick(model)]
        for fallback in model.fallbacks:
            other = self.models.get(fallback)
            attempts.append(self._pick(other) if other is not None else self._direct(fallback))
        return attempts

    def _pick(self, model: ModelSettings) -> Attempt:
        targets = model.targets
        target = targets[0] if len(targets) == 1 else random.choices(targets, [t.weight for t in targets])[0]
        return Attempt(
            self.providers[target.provider], target.model, model.timeout, model.retries, model.name
        )

    def _direct(self, name: str) -> Attempt:
        provider, _, model = name.partition("/")
        if model and provider in self.providers:
            return Attempt(self.providers[provider], model, Timeouts())
        raise ModelNotFoundError(
            f"The model {name!r} does not exist on this gateway. GET /v1/models lists the models it serves.",
            param="model",
        )

    async def call(self, attempts: list[Attempt], operation: Callable[[Try], Awaitable[T]]) -> T:
        """Run `operation` on each attempt in turn until one succeeds or fails for good."""
        last: ProviderError | None = None
        number = 0
        for attempt in attempts:
            for retry in range(attempt.retries + 1):
                if retry:
                    await asyncio.sleep(RETRY_BASE_DELAY * 2 ** (retry - 1) * random.uniform(0.5, 1.5))
                number += 1
                try:
                    return await operation(Try(attempt, number, last))
                except ProviderError as exc:
                    if not exc.retryable:
                        raise
                    last = exc
        assert last is not None, "resolve() returns at least one attempt"
        raise last
