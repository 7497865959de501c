"""Model resolution and the fallback loop: the one place that decides which provider is called.

A name resolves through `[[models]]` first (an alias: weighted choice among its targets, then its
`fallbacks` in order), then as `provider/model` directly; a request without a model name is the
caller's mistake (400), a name that resolves to nothing is 404. A provider failure that is the
provider's (5xx, 429, connection error, timeout) is retried on the same target (`retries`) and
then moves on to the next attempt; a 4xx that is the caller's ends the request with the
provider's own error.

Retries wait as every retry in tfgw does (`tfgw.retry.Backoff`): exponential backoff with full
jitter, or the provider's `Retry-After` when it sent one. A `Retry-After` longer than
`RETRY_AFTER_MAX` is not waited for inside a request: the next target is tried instead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tfgw.config import ModelSettings, Settings, Timeouts
from tfgw.errors import BadRequestError, ModelNotFoundError, ProviderError, UpstreamStatusError
from tfgw.providers.base import NO_HEADERS, Call, Provider
from tfgw.retry import Backoff, parse_retry_after

__all__ = ["Attempt", "Router", "Try"]

T = TypeVar("T")

#: seconds before the first retry of the same target (at most; full jitter), doubled each time
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 4.0
#: the longest Retry-After a request waits for before a retry of the same target
RETRY_AFTER_MAX = 10.0


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

    def call(self, body: dict[str, Any], headers: Mapping[str, str] = NO_HEADERS) -> Call:
        return Call(self.attempt.model, body, self.attempt.timeout, headers)


class Router:
    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.models = settings.models
        self.providers = providers

    def names(self) -> list[str]:
        return list(self.models)

    def resolve(self, name: Any) -> list[Attempt]:
        """Every attempt for a requested model name, in the order they are tried."""
        if name is None or name == "":
            raise BadRequestError("you must provide a model parameter", param="model")
        if not isinstance(name, str):
            raise BadRequestError("'model' must be a string", param="model")
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
            backoff = Backoff(RETRY_BASE_DELAY, RETRY_MAX_DELAY, RETRY_AFTER_MAX)
            for retry in range(attempt.retries + 1):
                if retry:
                    wait = _retry_after(last)
                    if wait is not None and wait > RETRY_AFTER_MAX:
                        break  # not worth holding the request: the next target, if any
                    await asyncio.sleep(backoff.next_delay(wait))
                number += 1
                try:
                    return await operation(Try(attempt, number, last))
                except ProviderError as exc:
                    if not exc.retryable:
                        raise
                    last = exc
        assert last is not None, "resolve() returns at least one attempt"
        raise last


def _retry_after(error: ProviderError | None) -> float | None:
    """The seconds a provider asked to wait (its Retry-After), if it did."""
    if isinstance(error, UpstreamStatusError):
        return parse_retry_after(error.upstream_headers.get("retry-after"))
    return None
