from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from types import MappingProxyType

import orjson
import pytest

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
