"""Routing as a real gateway process does it, against the real fake provider: strategies, fallback
order and why, retries that wait for Retry-After, a first-token timeout, a stream that breaks.

The gateway here has its own config (its models name the fake's models, so the fake can slow down
or fail one of them) and its own trace directory; health and latency are the process's own, so
every test uses models no other test calls.

Covered elsewhere, not repeated here: fallback on a connection error, on 429/500/503, and for a
stream before its first byte (tests/e2e/test_gateway.py: test_fallback_on_connection_error,
test_fallback_on_provider_failure, test_fallback_for_streams_before_the_first_byte); fallback
attempts as sibling CLIENT spans with `tfgw.route.fallback_reason` (tests/e2e/test_traces.py:
test_fallback_attempts_are_sibling_spans); a stream breaking after its first byte on /v1/messages
and /v1/responses (tests/e2e/test_messages.py:
test_stream_failing_after_the_first_byte_ends_with_an_error_event, tests/e2e/test_responses.py);
the Retry-After arithmetic (tests/unit/test_routing.py: test_retries_wait_for_the_providers_retry_after).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import GATEWAY_KEY, OPENAI_KEY
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import hash_key

HELLO = [{"role": "user", "content": "hello there world"}]


def routing_config(upstream: str, traces: Path) -> str:
    def model(name: str, *targets: str, extra: str = "") -> str:
        listed = ", ".join(f'{{ provider = "up", model = "{t}" }}' for t in targets)
        return f'[[models]]\nname = "{name}"\ntargets = [{listed}]\n{extra}\n'

    return f"""
[server]
graceful_timeout = 10.0

[tracing]
dir = "{traces}"
project = "e2e-routing"

[[keys]]
name = "e2e"
hash = "{hash_key(GATEWAY_KEY)}"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"

[[models]]
name = "split"
targets = [{{ provider = "up", model = "w-three", weight = 3.0 }}, {{ provider = "up", model = "w-one", weight = 1.0 }}]

{model("ordered", "p-first", "p-second", extra='strategy = "priority"')}
{model("fastest", "l-slow", "l-quick", extra='strategy = "latency"')}
{model("chain", "c-one", "c-two", extra='strategy = "priority"' + chr(10) + 'fallbacks = ["chain-backup"]')}
{model("chain-backup", "c-three")}
{model("patient", "r-model", extra="retries = 1")}
{model("first-slow", "ft-slow", extra="timeout = { first_token = 0.5 }" + chr(10) + 'fallbacks = ["first-quick"]')}
{model("first-quick", "ft-quick")}
{model("mid", "mid-one", "mid-two", extra='strategy = "priority"')}
"""  # noqa: E501


@pytest.fixture(scope="module")
def routed_traces(tmp_path_factory: pytest.TempPathFactory) -> TraceFiles:
    return TraceFiles(tmp_path_factory.mktemp("routing-traces"))


@pytest.fixture(scope="module")
def routed(
    shared_upstream: FakeUpstream, routed_traces: TraceFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("routing") / "tfgw.toml"
    config.write_text(routing_config(shared_upstream.url, routed_traces.dir))
    with Gateway(config, env={"E2E_OPENAI_KEY": OPENAI_KEY}) as gw:
        yield gw


@pytest.fixture
def http(routed: Gateway, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.Client(base_url=f"{routed.url}/v1", headers=headers, timeout=20) as client:
        yield client


def chat(http: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return http.post("/chat/completions", json={"model": model, "messages": HELLO, **extra})


def models_called(up: FakeUpstream) -> list[str]:
    return [r.body["model"] for r in up.requests if r.body is not None]


def resolve_span(traces: TraceFiles, answer: httpx.Response) -> dict[str, Any]:
    (span,) = [s for s in traces.spans(answer.headers["x-tfgw-trace-id"]) if s["name"] == "model.resolve"]
    return span["attributes"]


def client_spans(traces: TraceFiles, answer: httpx.Response) -> list[tuple[str, str | None, int, str | None]]:
    """Each attempt: (span name, error.type, attempt number, fallback reason)."""
    spans = [s for s in traces.spans(answer.headers["x-tfgw-trace-id"]) if s["kind"] == "CLIENT"]
    keys = ("error.type", "tfgw.route.attempt", "tfgw.route.fallback_reason")
    return [(s["name"], *(s["attributes"].get(k) for k in keys)) for s in spans]  # type: ignore[misc]


def test_weighted_calls_follow_the_weights(http: httpx.Client, up: FakeUpstream) -> None:
    """Weights 3:1 over 1,000 calls: w-three is Binomial(1000, 0.75), mean 750, standard deviation
    sqrt(1000 * 0.75 * 0.25) = 13.7; 750 ± 60 is ± 4.4 standard deviations, so a correct router
    fails this about once in 100,000 runs."""
    for _ in range(1000):
        assert chat(http, "split").status_code == 200
    counts = Counter(models_called(up))
    assert set(counts) == {"w-three", "w-one"} and counts["w-three"] + counts["w-one"] == 1000
    assert 690 <= counts["w-three"] <= 810, counts


def test_priority_falls_to_the_second_target_and_the_trace_says_so(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    first = chat(http, "ordered")
    assert (first.status_code, first.json()["model"]) == (200, "p-first")
    up.fail_next(503, model="p-first")
    answer = chat(http, "ordered")
    assert (answer.status_code, answer.json()["model"]) == (200, "p-second")
    assert models_called(up) == ["p-first", "p-first", "p-second"]
    assert resolve_span(routed_traces, answer) == {
        "tfgw.model.requested": "ordered",
        "tfgw.route.provider": "up",
        "tfgw.route.model": "p-first",
        "tfgw.route.attempt": 1,
        "tfgw.route.fallbacks": ["up/p-second"],
        "tfgw.route.fallback_sources": ["next_target"],
        "tfgw.route.strategy": "priority",
        "tfgw.route.candidates": ["up/p-first", "up/p-second"],
    }
    assert client_spans(routed_traces, answer) == [
        ("chat p-first", "503", 1, None),
        ("chat p-second", None, 2, "503"),
    ]


def test_latency_prefers_the_faster_model_after_measuring_both(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    up.delay_model("l-slow", 0.3)
    warm_up = [chat(http, "fastest").json()["model"] for _ in range(2)]
    assert warm_up == ["l-slow", "l-quick"]  # not measured yet: each in the order written
    after = [chat(http, "fastest") for _ in range(5)]
    assert [a.json()["model"] for a in after] == ["l-quick"] * 5
    assert resolve_span(routed_traces, after[-1]) == {
        "tfgw.model.requested": "fastest",
        "tfgw.route.provider": "up",
        "tfgw.route.model": "l-quick",
        "tfgw.route.attempt": 1,
        "tfgw.route.strategy": "latency",
        "tfgw.route.candidates": ["up/l-quick", "up/l-slow"],
    }


def test_fallback_order_and_reasons_are_on_the_trace(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    up.fail_next(503, model="c-one")
    up.fail_next(429, model="c-two")
    answer = chat(http, "chain")
    assert (answer.status_code, answer.json()["model"]) == (200, "c-three")
    assert models_called(up) == ["c-one", "c-two", "c-three"]
    assert resolve_span(routed_traces, answer) == {
        "tfgw.model.requested": "chain",
        "tfgw.route.provider": "up",
        "tfgw.route.model": "c-one",
        "tfgw.route.attempt": 1,
        "tfgw.route.fallbacks": ["up/c-two", "up/c-three"],
        "tfgw.route.fallback_sources": ["next_target", "fallbacks"],
        "tfgw.route.strategy": "priority",
        "tfgw.route.candidates": ["up/c-one", "up/c-two", "up/c-three"],
    }
    assert client_spans(routed_traces, answer) == [
        ("chat c-one", "503", 1, None),
        ("chat c-two", "429", 2, "503"),
        ("chat c-three", None, 3, "429"),
    ]


def test_a_retry_waits_for_the_providers_retry_after(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    """Without Retry-After the first retry waits at most RETRY_BASE_DELAY (0.25 s): taking a whole
    second shows the provider's 1 s was waited for."""
    up.fail_next(429, headers={"retry-after": "1"}, model="r-model")
    started = time.monotonic()
    answer = chat(http, "patient")
    took = time.monotonic() - started
    assert (answer.status_code, answer.json()["model"]) == (200, "r-model")
    assert 1.0 <= took < 5.0, took
    assert models_called(up) == ["r-model", "r-model"]
    assert client_spans(routed_traces, answer) == [
        ("chat r-model", "429", 1, None),
        ("chat r-model", None, 2, "429"),
    ]


def test_a_first_token_timeout_falls_back_before_any_byte_is_sent(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    up.delay_model("ft-slow", 3.0)  # no headers for 3 s; the model allows 0.5 s
    started = time.monotonic()
    with http.stream("POST", "/chat/completions", json={"model": "first-slow", "messages": HELLO,
                                                         "stream": True}) as response:  # fmt: skip
        body = response.read()
    assert time.monotonic() - started < 2.5
    assert response.status_code == 200
    events = [orjson.loads(e[len(b"data: ") :]) for e in body.strip().split(b"\n\n") if e != b"data: [DONE]"]
    assert {e["model"] for e in events} == {"ft-quick"}
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == (
        "echo: hello there world"
    )
    assert client_spans(routed_traces, response) == [
        ("chat ft-slow", "provider_timeout", 1, None),
        ("chat ft-quick", None, 2, "provider_timeout"),
    ]


def test_a_stream_breaking_after_its_first_byte_says_so_in_the_stream_and_is_not_retried(
    http: httpx.Client, up: FakeUpstream, routed_traces: TraceFiles
) -> None:
    up.break_streams(3, error_event=False)
    with http.stream("POST", "/chat/completions", json={"model": "mid", "messages": HELLO,
                                                         "stream": True}) as response:  # fmt: skip
        body = response.read()
    assert response.status_code == 200
    events = body.strip().split(b"\n\n")
    assert [orjson.loads(e[len(b"data: ") :])["choices"][0]["delta"] for e in events[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "echo: "},
        {"content": "hello "},
    ]
    assert orjson.loads(events[-1][len(b"data: ") :]) == {
        "error": {
            "message": "provider 'up' failed: ClientPayloadError",
            "type": "api_error",
            "param": None,
            "code": "provider_error",
        }
    }
    assert len(events) == 4
    assert models_called(up) == ["mid-one"]  # the next target is not tried once bytes went out
    assert client_spans(routed_traces, response) == [("chat mid-one", "provider_error", 1, None)]
