from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from tests.fakes.clock import Clock
from tfgw.config import ModelSettings, ProviderSettings, Settings, Target, Timeouts
from tfgw.errors import BadRequestError, ModelNotFoundError, ProviderError, UpstreamStatusError
from tfgw.gateway import routing
from tfgw.gateway.routing import Router, Try
from tfgw.providers.mock import MockProvider


def router() -> Router:
    providers = {name: MockProvider(ProviderSettings(name, "mock", "mock://")) for name in ("a", "b", "c")}
    models = {
        "split": ModelSettings("split", (Target("a", "m-a", 3.0), Target("b", "m-b", 1.0))),
        "main": ModelSettings("main", (Target("a", "m-a"),), fallbacks=("backup", "c/direct"), retries=2,
                              timeout=Timeouts(total=9.0)),
        "backup": ModelSettings("backup", (Target("b", "m-b"),)),
    }  # fmt: skip
    settings = Settings(providers=MappingProxyType({}), models=MappingProxyType(models))
    return Router(settings, providers)


def test_resolution_order_alias_then_fallbacks_then_direct() -> None:
    attempts = router().resolve("main")
    assert [(a.provider.name, a.model, a.retries, a.alias) for a in attempts] == [
        ("a", "m-a", 2, "main"),
        ("b", "m-b", 0, "backup"),
        ("c", "direct", 0, None),
    ]
    assert attempts[0].timeout == Timeouts(total=9.0)


@pytest.mark.parametrize("name", ["nope", "zz/model", "a/"])
def test_unknown_names_are_404(name: object) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        router().resolve(name)
    assert (info.value.status, info.value.param) == (404, "model")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "you must provide a model parameter"),
        ("", "you must provide a model parameter"),
        (3, "'model' must be a string"),
    ],
)
def test_a_missing_model_is_400_as_openai_answers_it(name: object, message: str) -> None:
    with pytest.raises(BadRequestError) as info:
        router().resolve(name)
    assert orjson.loads(info.value.body()) == {
        "error": {"message": message, "type": "invalid_request_error", "param": "model", "code": None}
    }
    assert info.value.status == 400


def test_weights_pick_targets_in_proportion() -> None:
    r = router()
    picks = Counter(r.resolve("split")[0].provider.name for _ in range(4000))
    assert 0.70 < picks["a"] / 4000 < 0.80


def test_retries_then_fallbacks_and_4xx_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "RETRY_BASE_DELAY", 0.0)
    r = router()
    tried: list[str] = []
    seen: list[tuple[str, int, str | None]] = []

    def failing(outcomes: dict[str, Exception]):
        async def operation(run: Try) -> str:
            name = run.attempt.provider.name
            tried.append(name)
            seen.append((name, run.number, run.previous and str(run.previous)))
            if name in outcomes:
                raise outcomes[name]
            return name

        return operation

    down = UpstreamStatusError("a", 503, b"")
    assert asyncio.run(r.call(r.resolve("main"), failing({"a": down}))) == "b"
    assert tried == ["a", "a", "a", "b"]
    why = "provider 'a' returned HTTP 503"
    assert seen == [("a", 1, None), ("a", 2, why), ("a", 3, why), ("b", 4, why)]

    tried.clear()
    r = router()  # a fresh one: three failures in a row made `a` unhealthy in the first
    with pytest.raises(UpstreamStatusError) as info:
        asyncio.run(r.call(r.resolve("main"), failing({"a": UpstreamStatusError("a", 400, b"")})))
    assert (tried, info.value.status) == (["a"], 400)

    tried.clear()
    everything = {n: ProviderError(f"{n} down") for n in "abc"}
    with pytest.raises(ProviderError, match="c down"):
        asyncio.run(r.call(r.resolve("main"), failing(everything)))
    assert tried == ["a", "a", "a", "b", "c"]


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The router's waits, recorded instead of slept."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(routing.asyncio, "sleep", sleep)
    return waits


def test_retries_wait_for_the_providers_retry_after(slept: list[float]) -> None:
    r = router()
    tried: list[str] = []

    def failing(retry_after: str) -> Callable[[Try], Awaitable[str]]:
        async def operation(run: Try) -> str:
            tried.append(run.attempt.provider.name)
            if run.attempt.provider.name == "a":
                raise UpstreamStatusError("a", 429, b"", {"retry-after": retry_after})
            return run.attempt.provider.name

        return operation

    assert asyncio.run(r.call(r.resolve("main"), failing("1.5"))) == "b"
    assert (tried, slept) == (["a", "a", "a", "b"], [1.5, 1.5])

    tried.clear()
    slept.clear()
    r = router()  # a fresh one: three failures in a row made `a` unhealthy in the first
    # longer than a request should wait: straight to the fallback
    assert asyncio.run(r.call(r.resolve("main"), failing("30"))) == "b"
    assert (tried, slept) == (["a", "b"], [])


def test_retries_without_retry_after_back_off_exponentially(slept: list[float]) -> None:
    r = router()

    async def operation(run: Try) -> str:
        if run.attempt.provider.name == "a":
            raise ProviderError("a down")
        return run.attempt.provider.name

    assert asyncio.run(r.call(r.resolve("main"), operation)) == "b"
    assert len(slept) == 2
    assert 0 <= slept[0] <= routing.RETRY_BASE_DELAY and 0 <= slept[1] <= 2 * routing.RETRY_BASE_DELAY


# -- strategies and health ---------------------------------------------------------------------


def governed(clock: Clock) -> Router:
    providers = {name: MockProvider(ProviderSettings(name, "mock", "mock://")) for name in ("a", "b", "c")}
    models = {
        "prio": ModelSettings("prio", (Target("a", "m-a"), Target("b", "m-b")), fallbacks=("backup",),
                              strategy="priority"),
        "backup": ModelSettings("backup", (Target("c", "m-c"),)),
        "fast": ModelSettings("fast", (Target("a", "m-a"), Target("b", "m-b"), Target("c", "m-c")),
                              strategy="latency"),
        "split": ModelSettings("split", (Target("a", "m-a", 3.0), Target("b", "m-b", 1.0)),
                               fallbacks=("c/direct",)),
        "one": ModelSettings("one", (Target("a", "m-a"),), fallbacks=("c/direct",)),
    }  # fmt: skip
    settings = Settings(providers=MappingProxyType({}), models=MappingProxyType(models))
    return Router(settings, providers, clock=clock)


def summary(plan: routing.Plan) -> dict[str, Any]:
    """A plan as a whole value: its attempts as (target, alias, holds a probe claim)."""
    return {
        **plan._asdict(),
        "attempts": [(a.label, a.alias, bool(a.probe)) for a in plan.attempts],
    }


def run(
    r: Router,
    name: str,
    down: frozenset[str] = frozenset(),
    seconds: dict[str, float] | None = None,
    clock: Clock | None = None,
) -> list[str]:
    """One request for `name`: the targets tried, in order; those in `down` fail with a 503, each
    takes `seconds[target]` on `clock`."""
    tried: list[str] = []

    async def operation(run: Try) -> str:
        label = run.attempt.label
        tried.append(label)
        if clock is not None and seconds is not None:
            clock.now += seconds.get(label, 0.0)
        if label in down:
            raise UpstreamStatusError(run.attempt.provider.name, 503, b"")
        return label

    with contextlib.suppress(ProviderError):  # every target failed: `tried` says how
        asyncio.run(r.call(r.resolve(name), operation))
    return tried


A_DOWN = frozenset({"a/m-a"})


def test_priority_tries_the_targets_in_order_then_the_fallbacks() -> None:
    plan = governed(Clock()).plan("prio")
    assert summary(plan) == {
        "attempts": [("a/m-a", "prio", False), ("b/m-b", "prio", False), ("c/m-c", "backup", False)],
        "strategy": "priority",
        "candidates": ("a/m-a", "b/m-b", "c/m-c"),
        "skipped": (),
        "sources": ("next_target", "fallbacks"),
        "all_unhealthy": False,
    }
    attributes: dict[str, object] = {}
    routing.plan_attributes(plan, attributes)
    assert attributes == {
        "tfgw.route.provider": "a",
        "tfgw.route.model": "m-a",
        "tfgw.route.attempt": 1,
        "tfgw.route.fallbacks": ["b/m-b", "c/m-c"],
        "tfgw.route.fallback_sources": ["next_target", "fallbacks"],
        "tfgw.route.strategy": "priority",
        "tfgw.route.candidates": ["a/m-a", "b/m-b", "c/m-c"],
    }


def test_one_target_writes_what_it_always_wrote() -> None:
    attributes: dict[str, object] = {}
    routing.plan_attributes(router().plan("backup"), attributes)
    assert attributes == {"tfgw.route.provider": "b", "tfgw.route.model": "m-b", "tfgw.route.attempt": 1}
    direct: dict[str, object] = {}
    routing.plan_attributes(router().plan("c/direct"), direct)
    assert direct == {"tfgw.route.provider": "c", "tfgw.route.model": "direct", "tfgw.route.attempt": 1}


def test_three_failures_in_a_row_skip_a_target_for_the_cool_down() -> None:
    clock = Clock()
    r = governed(clock)
    assert [run(r, "prio", A_DOWN) for _ in range(3)] == [["a/m-a", "b/m-b"]] * 3
    plan = r.plan("prio")
    assert summary(plan) == {
        "attempts": [("b/m-b", "prio", False), ("c/m-c", "backup", False)],
        "strategy": "priority",
        "candidates": ("a/m-a", "b/m-b", "c/m-c"),
        "skipped": ("a/m-a",),
        "sources": ("fallbacks",),
        "all_unhealthy": False,
    }
    attributes: dict[str, object] = {}
    routing.plan_attributes(plan, attributes)
    assert attributes == {
        "tfgw.route.provider": "b",
        "tfgw.route.model": "m-b",
        "tfgw.route.attempt": 1,
        "tfgw.route.fallbacks": ["c/m-c"],
        "tfgw.route.fallback_sources": ["fallbacks"],
        "tfgw.route.strategy": "priority",
        "tfgw.route.candidates": ["a/m-a", "b/m-b", "c/m-c"],
        "tfgw.route.skipped": ["a/m-a"],
    }
    # the same target behind another alias, and by its direct name in a fallback, rests too
    assert [(a.label, a.alias) for a in r.resolve("split")] == [("b/m-b", "split"), ("c/direct", None)]
    clock.now += routing.COOLDOWN - 0.001
    assert run(r, "prio", A_DOWN) == ["b/m-b"]


def test_after_the_cool_down_one_request_probes_and_a_success_makes_it_healthy() -> None:
    clock = Clock()
    r = governed(clock)
    for _ in range(3):
        run(r, "prio", A_DOWN)
    clock.now += routing.COOLDOWN
    probe = r.plan("prio")
    assert summary(probe)["attempts"] == [("a/m-a", "prio", True), ("b/m-b", "prio", False),
                                          ("c/m-c", "backup", False)]  # fmt: skip
    # while the probe is out, everyone else still skips the target
    assert [(p["attempts"], p["skipped"]) for p in (summary(r.plan("prio")) for _ in range(2))] == [
        ([("b/m-b", "prio", False), ("c/m-c", "backup", False)], ("a/m-a",)),
    ] * 2

    async def fine(run: Try) -> str:
        return run.attempt.label

    assert asyncio.run(r.call(probe.attempts, fine)) == "a/m-a"
    assert summary(r.plan("prio")) == summary(governed(Clock()).plan("prio"))  # healthy as new


def test_a_failed_probe_starts_another_cool_down() -> None:
    clock = Clock()
    r = governed(clock)
    for _ in range(3):
        run(r, "prio", A_DOWN)
    clock.now += routing.COOLDOWN
    assert run(r, "prio", A_DOWN) == ["a/m-a", "b/m-b"]  # the probe, and the next target
    clock.now += routing.COOLDOWN - 0.001
    assert run(r, "prio", A_DOWN) == ["b/m-b"]
    clock.now += 0.001
    assert run(r, "prio") == ["a/m-a"]  # the next probe succeeds
    assert run(r, "prio") == ["a/m-a"]


def test_a_probe_whose_outcome_never_came_is_let_through_again() -> None:
    clock = Clock()
    r = governed(clock)
    for _ in range(3):
        run(r, "prio", A_DOWN)
    clock.now += routing.COOLDOWN

    async def refused(run: Try) -> str:  # not the provider's failure: nothing learnt about it
        raise BadRequestError("no")

    with pytest.raises(BadRequestError):
        asyncio.run(r.call(r.resolve("prio"), refused))
    assert summary(r.plan("prio"))["attempts"][0] == ("a/m-a", "prio", True)
    # a plan never called holds its claim until it lapses, COOLDOWN later
    assert summary(r.plan("prio"))["skipped"] == ("a/m-a",)
    clock.now += routing.COOLDOWN
    assert summary(r.plan("prio"))["attempts"][0] == ("a/m-a", "prio", True)


def test_a_success_or_the_callers_4xx_resets_the_count() -> None:
    r = governed(Clock())
    run(r, "prio", A_DOWN)
    run(r, "prio", A_DOWN)
    assert run(r, "prio") == ["a/m-a"]
    run(r, "prio", A_DOWN)
    run(r, "prio", A_DOWN)

    async def refused(run: Try) -> str:
        raise UpstreamStatusError("a", 400, b"")

    with pytest.raises(UpstreamStatusError):
        asyncio.run(r.call(r.resolve("prio"), refused))
    run(r, "prio", A_DOWN)
    run(r, "prio", A_DOWN)
    assert r.plan("prio").skipped == ()


def test_when_every_target_rests_they_are_all_tried_in_order() -> None:
    r = governed(Clock())
    everything = frozenset({"a/m-a", "b/m-b", "c/m-c"})
    assert [run(r, "prio", everything) for _ in range(3)] == [["a/m-a", "b/m-b", "c/m-c"]] * 3
    plan = r.plan("prio")
    assert summary(plan) == {
        "attempts": [("a/m-a", "prio", False), ("b/m-b", "prio", False), ("c/m-c", "backup", False)],
        "strategy": "priority",
        "candidates": ("a/m-a", "b/m-b", "c/m-c"),
        "skipped": (),
        "sources": ("next_target", "fallbacks"),
        "all_unhealthy": True,
    }
    attributes: dict[str, object] = {}
    routing.plan_attributes(plan, attributes)
    assert attributes["tfgw.route.all_unhealthy"] is True
    assert run(r, "prio") == ["a/m-a"]  # and an answer makes that one healthy again
    assert summary(r.plan("prio"))["skipped"] == ("b/m-b", "c/m-c")


def test_weighted_draws_among_the_healthy_targets_only() -> None:
    r = governed(Clock())
    for _ in range(3):
        run(r, "prio", A_DOWN)
    plans = {
        (tuple(a.label for a in p.attempts), p.candidates, p.skipped) for p in map(r.plan, ["split"] * 200)
    }
    assert plans == {(("b/m-b", "c/direct"), ("b/m-b", "a/m-a", "c/direct"), ("a/m-a",))}


def test_latency_measures_every_target_first_then_prefers_the_fastest() -> None:
    clock = Clock()
    r = governed(clock)
    seconds = {"a/m-a": 0.5, "b/m-b": 0.2, "c/m-c": 0.9}
    first = [run(r, "fast", seconds=seconds, clock=clock) for _ in range(3)]
    assert first == [["a/m-a"], ["b/m-b"], ["c/m-c"]]  # unmeasured first, in the order written
    assert summary(r.plan("fast")) == {
        "attempts": [("b/m-b", "fast", False)],
        "strategy": "latency",
        "candidates": ("b/m-b", "a/m-a", "c/m-c"),
        "skipped": (),
        "sources": (),
        "all_unhealthy": False,
    }
    # b slows down: one sample of 2.0 s moves its EWMA to 0.2 + 0.3 * 1.8 = 0.74 s, behind a
    assert run(r, "fast", seconds={"b/m-b": 2.0}, clock=clock) == ["b/m-b"]
    assert r.plan("fast").candidates == ("a/m-a", "b/m-b", "c/m-c")
    # the fastest one resting: the next fastest
    for _ in range(3):
        run(r, "prio", A_DOWN)
    assert [a.label for a in r.resolve("fast")] == ["b/m-b"]


def test_latency_ties_go_to_the_order_written_and_a_timeout_is_a_sample() -> None:
    clock = Clock()
    r = governed(clock)
    for _ in range(3):
        run(r, "fast", seconds={"a/m-a": 0.5, "b/m-b": 0.5, "c/m-c": 0.5}, clock=clock)
    assert r.plan("fast").candidates == ("a/m-a", "b/m-b", "c/m-c")

    async def slow(run: Try) -> str:
        clock.now += 5.0
        raise routing.ProviderTimeoutError("provider 'a' timed out")

    with pytest.raises(routing.ProviderTimeoutError):
        asyncio.run(r.call(r.resolve("fast"), slow))
    assert r.plan("fast").candidates == ("b/m-b", "c/m-c", "a/m-a")  # 0.5 + 0.3 * 4.5 = 1.85 s


def test_the_common_case_is_the_plan_made_once() -> None:
    r = governed(Clock())
    one, again = r.plan("one"), r.plan("one")
    assert summary(one) == {
        "attempts": [("a/m-a", "one", False), ("c/direct", None, False)],
        "strategy": "weighted",
        "candidates": ("a/m-a", "c/direct"),
        "skipped": (),
        "sources": ("fallbacks",),
        "all_unhealthy": False,
    }
    assert one.attempts == again.attempts and one.attempts is not again.attempts
    assert all(x is y for x, y in zip(one.attempts, again.attempts, strict=True))


def test_unhealthy_after_zero_turns_health_off_and_cooldown_is_the_routers() -> None:
    clock = Clock()
    r = governed(clock)
    off = Router(Settings(providers=MappingProxyType({}), models=r.models), r.providers, unhealthy_after=0)
    assert [run(off, "prio", A_DOWN) for _ in range(5)] == [["a/m-a", "b/m-b"]] * 5
    brief = Router(Settings(providers=MappingProxyType({}), models=r.models), r.providers, clock=clock,
                   unhealthy_after=1, cooldown=2.0)  # fmt: skip
    assert run(brief, "prio", A_DOWN) == ["a/m-a", "b/m-b"]
    assert run(brief, "prio") == ["b/m-b"]
    clock.now += 2.0
    assert run(brief, "prio") == ["a/m-a"]


def test_a_clients_own_provider_model_names_leave_no_state() -> None:
    r = governed(Clock())
    for i in range(5):
        assert run(r, f"a/made-up-{i}", frozenset({f"a/made-up-{i}"})) == [f"a/made-up-{i}"]
        assert run(r, f"b/made-up-{i}") == [f"b/made-up-{i}"]
    assert (r._health, r._latency) == ({}, {})
    for _ in range(3):  # a direct name the config gives as a fallback is kept
        run(r, "c/direct", frozenset({"c/direct"}))
    assert r.plan("one").skipped == ("c/direct",)


def test_a_reload_keeps_what_the_router_learnt_of_the_targets_both_configs_name() -> None:
    clock = Clock()
    old = governed(clock)
    for _ in range(3):
        run(old, "prio", A_DOWN)
    assert old.plan("prio").skipped == ("a/m-a",)
    new = governed(clock)  # the config again, as a reload builds it
    new.inherit(old)
    assert new.plan("prio").skipped == ("a/m-a",)  # still resting
    fresh = governed(clock)  # a router that did not inherit starts with every target healthy
    assert fresh.plan("prio").skipped == ()
