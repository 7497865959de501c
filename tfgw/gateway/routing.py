"""Model resolution, strategies, target health and the fallback loop: the one place that decides
which provider is called.

A name resolves through `[[models]]` first (an alias: its targets by its `strategy`, then its
`fallbacks` in order, each fallback alias by its own strategy), then as `provider/model` directly;
a request without a model name is the caller's mistake (400), a name that resolves to nothing is
404. A provider failure that is the provider's (5xx, 429, connection error, timeout) is retried on
the same target (`retries`) and then moves on to the next attempt; a 4xx that is the caller's ends
the request with the provider's own error.

Strategies (`strategy` on a model), over the targets that are healthy (below):

- `weighted` (the default): one target, drawn at random in proportion to the `weight`s.
- `priority`: every target in the order written; the first is called, the others are the next
  attempts, before the model's `fallbacks`.
- `latency`: the one target with the lowest recent latency as this process measured it: an EWMA
  (weight `LATENCY_ALPHA` for the newest sample) per (provider, model) of the time `Router.call`
  waited for the provider's answer (its headers for a stream, its whole body otherwise), and of a
  timeout's time too (a lower bound of the truth); a fast 5xx is no sample. Targets without a
  sample yet come first, so every target gets measured; ties go to the order written.

Health, per (provider, model) and per worker process (each process of `--workers` learns on its
own, and a restart forgets): a target whose last `UNHEALTHY_AFTER` tries in a row failed with a
retryable error is skipped for `COOLDOWN` seconds (a `Router`'s `unhealthy_after` and `cooldown`;
`unhealthy_after=0` turns health off). After the cool-down ONE request is let through
as the probe (the others keep skipping it until the probe's outcome is known, or for `COOLDOWN`
more seconds if it never is); a success, or an answer that is the caller's 4xx, makes the target
healthy again, a failure starts another cool-down. When every target of a request is cooling down,
they are all tried anyway, in order: no request fails only because its targets are resting.

What was decided is a `Plan`: the attempts in order, and what `plan_attributes` writes on the
`model.resolve` span (the strategy, the candidates considered, the targets skipped, why each
fallback is in the plan).

Retries wait as every retry in tfgw does (`tfgw.retry.Backoff`): exponential backoff with full
jitter, or the provider's `Retry-After` when it sent one. A `Retry-After` longer than
`RETRY_AFTER_MAX` is not waited for inside a request: the next target is tried instead.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeVar

from tfgw.config import ModelSettings, Settings, Timeouts
from tfgw.errors import (
    BadRequestError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UpstreamStatusError,
)
from tfgw.providers.base import NO_HEADERS, Call, Provider
from tfgw.retry import Backoff, parse_retry_after
from tfgw.tracing import semconv as sc

__all__ = ["Attempt", "Plan", "Router", "Try", "plan_attributes"]

T = TypeVar("T")

#: seconds before the first retry of the same target (at most; full jitter), doubled each time
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 4.0
#: the longest Retry-After a request waits for before a retry of the same target
RETRY_AFTER_MAX = 10.0
#: retryable failures in a row that make a target unhealthy
UNHEALTHY_AFTER = 3
#: seconds an unhealthy target is skipped before one request probes it
COOLDOWN = 30.0
#: the weight of the newest sample in a target's latency EWMA
LATENCY_ALPHA = 0.3

#: how many direct provider/model names a router keeps made (names are the client's: bounded)
DIRECT_NAMES_KEPT = 1024

#: why an attempt after the first is in the plan (`tfgw.route.fallback_sources`)
NEXT_TARGET = "next_target"  # another target of the same model: priority order, or all cooling down
FALLBACKS = "fallbacks"  # the first target of a name in the model's `fallbacks`


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: Provider
    model: str
    timeout: Timeouts
    retries: int = 0
    #: the alias this attempt came from (None for a direct provider/model name)
    alias: str | None = None
    #: the probe claim this attempt holds on a target after its cool-down (0: none)
    probe: int = 0

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(frozen=True, slots=True)
class Try:
    """One run of an attempt: its number over all fallbacks and retries (from 1), and the error that
    ended the previous one."""

    attempt: Attempt
    number: int
    previous: ProviderError | None = None

    def call(self, body: dict[str, Any], headers: Mapping[str, str] = NO_HEADERS) -> Call:
        return Call(self.attempt.model, body, self.attempt.timeout, headers)


class Plan(NamedTuple):
    """What resolving a name decided: the attempts in the order they are tried, and why."""

    attempts: list[Attempt]
    #: the requested model's strategy (None for a direct provider/model name)
    strategy: str | None = None
    #: every target considered, "provider/model", in order of preference, fallbacks' included
    candidates: tuple[str, ...] = ()
    #: the candidates left out because they are cooling down
    skipped: tuple[str, ...] = ()
    #: for each attempt after the first, why it is in the plan (NEXT_TARGET or FALLBACKS)
    sources: tuple[str, ...] = ()
    #: every target was cooling down: they are tried anyway
    all_unhealthy: bool = False


def plan_attributes(plan: Plan, attributes: dict[str, Any]) -> None:
    """Write what `plan` decided on the `model.resolve` span's `attributes`: the first attempt, the
    attempts after it and why each is there; the strategy and candidates when there was more than
    one; what was skipped as unhealthy, and whether all were."""
    first = plan.attempts[0]
    attributes[sc.ROUTE_PROVIDER] = first.provider.name
    attributes[sc.ROUTE_MODEL] = first.model
    attributes[sc.ROUTE_ATTEMPT] = 1
    if len(plan.attempts) > 1:
        attributes[sc.ROUTE_FALLBACKS] = [a.label for a in plan.attempts[1:]]
        attributes[sc.ROUTE_FALLBACK_SOURCES] = list(plan.sources)
    if len(plan.candidates) > 1 and plan.strategy is not None:
        attributes[sc.ROUTE_STRATEGY] = plan.strategy
        attributes[sc.ROUTE_CANDIDATES] = list(plan.candidates)
    if plan.skipped:
        attributes[sc.ROUTE_SKIPPED] = list(plan.skipped)
    if plan.all_unhealthy:
        attributes[sc.ROUTE_ALL_UNHEALTHY] = True


@dataclass(slots=True)
class _Health:
    """A target that failed lately: retryable failures in a row, the end of its cool-down, and the
    probe let through after it (its claim, and when that claim lapses)."""

    failures: int = 0
    until: float = 0.0
    probe: int = 0
    probe_until: float = 0.0


@dataclass(frozen=True, slots=True)
class _Route:
    """One alias as the router keeps it: an attempt per target, made once; `fixed` is its plan
    whenever no target is unhealthy and no choice is random or measured (None otherwise)."""

    model: ModelSettings
    targets: tuple[Attempt, ...]
    weights: tuple[float, ...]
    fixed: Plan | None = None


# the state of a target when a plan is made
_OK, _RESTING, _PROBE = 0, 1, 2


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], float] = time.monotonic,
        unhealthy_after: int = UNHEALTHY_AFTER,
        cooldown: float = COOLDOWN,
    ) -> None:
        self.models = settings.models
        self.providers = providers
        self._clock = clock
        self._after = unhealthy_after if unhealthy_after > 0 else sys.maxsize  # 0: never unhealthy
        self._cooldown = cooldown
        self._health: dict[tuple[str, str], _Health] = {}
        self._unhealthy = 0  # how many of them failed `unhealthy_after` times in a row
        self._latency: dict[tuple[str, str], float] = {}
        self._claims = itertools.count(1)
        self._directs: dict[str, Attempt] = {}  # direct provider/model names, as attempts
        # an alias whose providers are not all built (a router made before serving) serves nothing
        self._routes = {
            name: self._route(model)
            for name, model in self.models.items()
            if all(t.provider in providers for t in model.targets)
        }
        self._routes = {name: self._fix(route) for name, route in self._routes.items()}
        #: the targets the config names, the only ones whose health and latency are kept (a client's
        #: own provider/model names are not: they are the client's, unbounded)
        self._tracked = self._configured_targets()

    def names(self) -> list[str]:
        return list(self.models)

    def inherit(self, old: Router) -> None:
        """Keep what `old` (the router of the config before a reload) learnt of the targets both
        configs name: their health and their latency."""
        self._health = {k: v for k, v in old._health.items() if k in self._tracked}
        self._latency = {k: v for k, v in old._latency.items() if k in self._tracked}
        self._unhealthy = sum(1 for h in self._health.values() if h.failures >= self._after)

    def resolve(self, name: Any) -> list[Attempt]:
        """Every attempt for a requested model name, in the order they are tried."""
        return self.plan(name).attempts

    def plan(self, name: Any) -> Plan:
        """What to try for a requested model name, in order, and why (see the module docstring)."""
        if name is None or name == "":
            raise BadRequestError("you must provide a model parameter", param="model")
        if not isinstance(name, str):
            raise BadRequestError("'model' must be a string", param="model")
        route = self._routes.get(name)
        if route is None:
            return Plan([self._direct(name)])
        fixed = route.fixed
        if fixed is not None and not self._unhealthy:  # the common case: nothing to choose or avoid
            return Plan(list(fixed.attempts), fixed.strategy, fixed.candidates, (), fixed.sources)
        return self._choose(route, self._clock())

    def _choose(self, route: _Route, now: float) -> Plan:
        """The plan when a choice is random or measured, or some target is unhealthy."""
        considered: list[tuple[Attempt, str, int]] = []  # (attempt, source, state) by preference
        chosen: list[tuple[Attempt, str]] = []
        for n, name in enumerate((route.model.name, *route.model.fallbacks)):
            other = self._routes.get(name)
            if other is None:
                direct = self._direct(name)
                ordered = [(direct, self._state(direct, now))]
            else:
                ordered = self._order(other, now)
            # the first of a fallback's targets is there for the fallback, the others as its next
            head = FALLBACKS if n else NEXT_TARGET
            considered += [(a, NEXT_TARGET if i else head, state) for i, (a, state) in enumerate(ordered)]
            usable = [a for a, state in ordered if state != _RESTING]
            kept = [(a, NEXT_TARGET if i else head) for i, a in enumerate(usable)]
            chosen += kept if other is None or other.model.strategy == "priority" else kept[:1]
        skipped = tuple(a.label for a, _, state in considered if state == _RESTING)
        everything = not chosen
        if everything:  # every target is cooling down: try them all, in order
            chosen, skipped = [(a, source) for a, source, _ in considered], ()
        return Plan(
            [self._claim(a, now) for a, _ in chosen],
            route.model.strategy,
            tuple(a.label for a, _, _ in considered),
            skipped,
            tuple(source for _, source in chosen[1:]),
            everything,
        )

    def _order(self, route: _Route, now: float) -> list[tuple[Attempt, int]]:
        """An alias's targets, each with its state, in order of preference by its strategy."""
        targets, strategy = route.targets, route.model.strategy
        states = [self._state(t, now) for t in targets]
        order = list(range(len(targets)))
        if strategy == "latency":
            latency = self._latency
            keys = [(t.provider.name, t.model) for t in targets]
            order.sort(key=lambda i: (keys[i] in latency, latency.get(keys[i], 0.0), i))
        elif strategy == "weighted" and len(targets) > 1:
            usable = [i for i in order if states[i] != _RESTING] or order
            pick = random.choices(usable, [route.weights[i] for i in usable])[0]
            order.remove(pick)
            order.insert(0, pick)
        return [(targets[i], states[i]) for i in order]

    def _state(self, attempt: Attempt, now: float) -> int:
        health = self._health.get((attempt.provider.name, attempt.model))
        if health is None or health.failures < self._after:
            return _OK
        if now < health.until or (health.probe and now < health.probe_until):
            return _RESTING
        return _PROBE

    def _claim(self, attempt: Attempt, now: float) -> Attempt:
        """`attempt`, holding the probe claim when its target's cool-down is over and no other
        request probes it."""
        if self._state(attempt, now) != _PROBE:
            return attempt
        health = self._health[(attempt.provider.name, attempt.model)]
        health.probe, health.probe_until = next(self._claims), now + self._cooldown
        return replace(attempt, probe=health.probe)

    def _route(self, model: ModelSettings) -> _Route:
        targets = tuple(
            Attempt(self.providers[t.provider], t.model, model.timeout, model.retries, model.name)
            for t in model.targets
        )
        return _Route(model, targets, tuple(t.weight for t in model.targets))

    def _fix(self, route: _Route) -> _Route:
        """`route` with its plan made once, when making it involves no chance and no measure."""
        names = (route.model.name, *route.model.fallbacks)
        routes = [self._routes.get(name) for name in names]
        if any(r is not None and len(r.targets) > 1 and r.model.strategy != "priority" for r in routes):
            return route
        try:
            plan = self._choose(route, self._clock())
        except ModelNotFoundError:  # a fallback naming a provider that is not built: at request time
            return route
        return replace(route, fixed=plan)

    def _configured_targets(self) -> frozenset[tuple[str, str]]:
        targets = {(a.provider.name, a.model) for route in self._routes.values() for a in route.targets}
        for model in self.models.values():
            for name in model.fallbacks:
                provider, _, target = name.partition("/")
                if name not in self.models and target:
                    targets.add((provider, target))
        return frozenset(targets)

    def _direct(self, name: str) -> Attempt:
        attempt = self._directs.get(name)
        if attempt is not None:
            return attempt
        provider, _, model = name.partition("/")
        if model and provider in self.providers:
            attempt = Attempt(self.providers[provider], model, Timeouts())
            if len(self._directs) < DIRECT_NAMES_KEPT:
                self._directs[name] = attempt
            return attempt
        raise ModelNotFoundError(
            f"The model {name!r} does not exist on this gateway. GET /v1/models lists the models it serves.",
            param="model",
        )

    async def call(self, attempts: Sequence[Attempt], operation: Callable[[Try], Awaitable[T]]) -> T:
        """Run `operation` on each attempt in turn until one succeeds or fails for good; every run's
        outcome is the target's health and latency."""
        last: ProviderError | None = None
        number = 0
        try:
            for attempt in attempts:
                backoff = Backoff(RETRY_BASE_DELAY, RETRY_MAX_DELAY, RETRY_AFTER_MAX)
                for retry in range(attempt.retries + 1):
                    if retry:
                        wait = _retry_after(last)
                        if wait is not None and wait > RETRY_AFTER_MAX:
                            break  # not worth holding the request: the next target, if any
                        await asyncio.sleep(backoff.next_delay(wait))
                    number += 1
                    started = self._clock()
                    try:
                        result = await operation(Try(attempt, number, last))
                    except ProviderError as exc:
                        self._failed(attempt, exc, self._clock() - started)
                        if not exc.retryable:
                            raise
                        last = exc
                    else:
                        self._answered(attempt, self._clock() - started)
                        return result
        finally:
            for attempt in attempts:
                if attempt.probe:
                    self._release(attempt)
        assert last is not None, "resolve() returns at least one attempt"
        raise last

    def _answered(self, attempt: Attempt, seconds: float | None) -> None:
        """A run that got the provider's answer (or the caller's 4xx): the target is healthy."""
        key = (attempt.provider.name, attempt.model)
        health = self._health.pop(key, None)
        if health is not None and health.failures >= self._after:
            self._unhealthy -= 1
        if seconds is not None and key in self._tracked:
            self._sample(key, seconds)

    def _failed(self, attempt: Attempt, exc: ProviderError, seconds: float) -> None:
        if not exc.retryable:  # the caller's 4xx: the provider is up and answering
            self._answered(attempt, None)
            return
        key = (attempt.provider.name, attempt.model)
        if key not in self._tracked:
            return
        if isinstance(exc, ProviderTimeoutError):  # it was at least this slow
            self._sample(key, seconds)
        health = self._health.setdefault(key, _Health())
        health.failures += 1
        if health.failures == self._after:
            self._unhealthy += 1
        if health.failures >= self._after:
            health.until = self._clock() + self._cooldown
            health.probe = 0

    def _sample(self, key: tuple[str, str], seconds: float) -> None:
        old = self._latency.get(key)
        self._latency[key] = seconds if old is None else old + LATENCY_ALPHA * (seconds - old)

    def _release(self, attempt: Attempt) -> None:
        """The probe claim of an attempt whose outcome was not learnt (never run, or cancelled)."""
        health = self._health.get((attempt.provider.name, attempt.model))
        if health is not None and health.probe == attempt.probe:
            health.probe = 0


def _retry_after(error: ProviderError | None) -> float | None:
    """The seconds a provider asked to wait (its Retry-After), if it did."""
    if isinstance(error, UpstreamStatusError):
        return parse_retry_after(error.upstream_headers.get("retry-after"))
    return None
