"""Policy through a real gateway process against the real fake provider: guardrails on input and
output (JSON and streams, on every route), the response cache, and the key limits and budgets that
every worker counts together.

The fake provider answers "echo: <the last user text>", so a rule on answers sees what the client
sent, after the input rules."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import ANTHROPIC_KEY, GATEWAY_KEY, OPENAI_KEY
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import hash_key

ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"  # passes the Luhn check
LIMITED_KEY = "tfgw-e2e-limited-key-0123456789"
THRIFTY_KEY = "tfgw-e2e-thrifty-key-0123456789"
TOKENED_KEY = "tfgw-e2e-tokened-key-0123456789"


def policy_config(upstream: str, traces: Path) -> str:
    return f"""
[server]
graceful_timeout = 10.0
cache_max_mb = 0.05

[routing]
unhealthy_after = 0

[tracing]
dir = "{traces}"
project = "e2e-policy"

[[keys]]
name = "e2e"
hash = "{hash_key(GATEWAY_KEY)}"

[[keys]]
name = "thrifty"
hash = "{hash_key(THRIFTY_KEY)}"
budget_usd_day = 0.05

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"

[providers.claude]
kind = "anthropic"
base_url = "{upstream}"
api_key = "{ANTHROPIC_KEY}"

[[models]]
name = "guarded"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[[models]]
name = "guarded-claude"
targets = [{{ provider = "claude", model = "claude-3-5-haiku" }}]

[[models]]
name = "cached"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
cache = {{ ttl = 60 }}

[[models]]
name = "brief"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
cache = {{ ttl = 1.0 }}

[[models]]
name = "priced"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
# "hello there world": 3 prompt tokens and 4 completion tokens ("echo: hello there world"), so
# 3 * 2500 + 4 * 1250 = 12,500 USD per million calls' tokens: $0.0125 a call
price = {{ input_per_mtok = 2500.0, output_per_mtok = 1250.0 }}

[[guardrails]]
name = "no-email"
kind = "pii"
patterns = ["email"]
stage = "input"
action = "redact"
models = ["guarded*"]

[[guardrails]]
name = "no-zeus"
kind = "keywords"
patterns = ["project zeus"]
stage = "input"
action = "block"
models = ["guarded*"]

[[guardrails]]
name = "no-banana"
kind = "keywords"
patterns = ["banana"]
stage = "output"
action = "redact"
models = ["guarded*"]

[[guardrails]]
name = "no-cards-out"
kind = "pii"
patterns = ["credit_card"]
stage = "output"
action = "block"
models = ["guarded"]
"""


@pytest.fixture(scope="module")
def policy_traces(tmp_path_factory: pytest.TempPathFactory) -> TraceFiles:
    return TraceFiles(tmp_path_factory.mktemp("policy-traces"))


@pytest.fixture(scope="module")
def gw(
    shared_upstream: FakeUpstream, policy_traces: TraceFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("policy") / "tfgw.toml"
    config.write_text(policy_config(shared_upstream.url, policy_traces.dir))
    with Gateway(config, env=ENV) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Gateway, up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0) as c:
        yield c


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sent_texts(up: FakeUpstream) -> list[str]:
    """The last user text of each request the provider got."""
    out = []
    for request in up.requests:
        assert request.body is not None
        messages = request.body["messages"]
        out.append(messages[-1]["content"])
    return out


def guardrail_spans(traces: TraceFiles, trace_id: str) -> list[dict[str, Any]]:
    return [s["attributes"] for s in traces.spans(trace_id) if s["name"].startswith("guardrail ")]


def verdict(
    rule: str, stage: str, action: str, outcome: str, matches: int, patterns: list[str] | None = None
) -> dict[str, Any]:
    """A `guardrail` span's attributes, as the gateway writes them."""
    out: dict[str, Any] = {
        "openinference.span.kind": "GUARDRAIL",
        "tfgw.guardrail.name": rule,
        "tfgw.guardrail.stage": stage,
        "tfgw.guardrail.action": action,
        "tfgw.guardrail.outcome": outcome,
        "tfgw.guardrail.matches": matches,
    }
    if patterns:
        out["tfgw.guardrail.patterns"] = patterns
    return out


# -- guardrails --------------------------------------------------------------------------------------


def test_an_input_rule_redacts_before_the_provider_and_any_span_sees_it(
    client: openai.OpenAI, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="guarded", messages=ask(f"mail {EMAIL} now"))
    assert raw.parse().choices[0].message.content == "echo: mail [REDACTED:email] now"
    assert sent_texts(up) == ["mail [REDACTED:email] now"]
    trace_id = raw.headers["x-tfgw-trace-id"]
    assert guardrail_spans(policy_traces, trace_id) == [
        verdict("no-email", "input", "redact", "redacted", 1, ["email"]),
        verdict("no-zeus", "input", "block", "pass", 0),
        verdict("no-banana", "output", "redact", "pass", 0),
        verdict("no-cards-out", "output", "block", "pass", 0),
    ]
    assert EMAIL.encode() not in policy_traces.everything()


def test_an_input_rule_blocks_with_400_naming_it_and_the_provider_is_not_called(
    client: openai.OpenAI, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="guarded", messages=ask("tell me about Project Zeus"))
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "Blocked by guardrail 'no-zeus' (input: keyword).",
        "type": "invalid_request_error",
        "param": None,
        "code": "guardrail_blocked",
    }
    assert up.requests == []
    trace_id = caught.value.response.headers["x-tfgw-trace-id"]
    (blocked,) = [
        a for a in guardrail_spans(policy_traces, trace_id) if a["tfgw.guardrail.outcome"] == "blocked"
    ]
    assert blocked["tfgw.guardrail.name"] == "no-zeus" and blocked["error.type"] == "guardrail_blocked"


def test_an_output_rule_redacts_the_answer_and_its_spans(
    client: openai.OpenAI, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="guarded", messages=ask("I like banana bread")
    )
    assert raw.parse().choices[0].message.content == "echo: I like [REDACTED:no-banana] bread"
    spans = policy_traces.spans(raw.headers["x-tfgw-trace-id"])
    root = spans[0]["attributes"]
    assert root["output.value"] == "echo: I like [REDACTED:no-banana] bread"
    (llm,) = [s["attributes"] for s in spans if s["kind"] == "CLIENT"]
    assert llm["llm.output_messages.0.message.content"] == "echo: I like [REDACTED:no-banana] bread"
    assert "banana bread" not in str(llm["output.value"])


def test_an_output_rule_blocks_a_whole_answer_with_400(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="guarded", messages=ask(f"my card is {CARD}"))
    assert caught.value.body["message"] == "Blocked by guardrail 'no-cards-out' (output: credit_card)."  # type: ignore[index]
    assert len(up.requests) == 1


def test_output_rules_on_a_chat_stream(
    client: openai.OpenAI, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    up.stream_delay(0.001)
    raw = client.chat.completions.with_raw_response.create(
        model="guarded", messages=ask("banana split banana"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: [REDACTED:no-banana] split [REDACTED:no-banana]"
    spans = policy_traces.spans(raw.headers["x-tfgw-trace-id"])
    (llm,) = [s["attributes"] for s in spans if s["kind"] == "CLIENT"]
    assert llm["llm.output_messages.0.message.content"] == text
    assert spans[0]["attributes"]["output.value"] == text
    outcomes = [
        (a["tfgw.guardrail.name"], a["tfgw.guardrail.outcome"])
        for a in guardrail_spans(policy_traces, raw.headers["x-tfgw-trace-id"])
    ]
    assert outcomes == [
        ("no-email", "pass"),
        ("no-zeus", "pass"),
        ("no-banana", "redacted"),
        ("no-cards-out", "pass"),
    ]


def test_output_rules_block_a_stream_with_an_error_event(client: openai.OpenAI, up: FakeUpstream) -> None:
    stream = client.chat.completions.create(model="guarded", messages=ask(f"card {CARD} ok"), stream=True)
    with pytest.raises(openai.APIError) as caught:
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Blocked by guardrail 'no-cards-out' (output: credit_card)." in str(caught.value)


def test_output_rules_on_an_anthropic_stream_passed_on(gw: Gateway, up: FakeUpstream) -> None:
    question = [{"role": "user", "content": "one banana please"}]
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0) as claude,
        claude.messages.stream(model="guarded-claude", max_tokens=64, messages=question) as stream,  # type: ignore[arg-type]
    ):
        text = "".join(stream.text_stream)
    assert text == "echo: one [REDACTED:no-banana] please"


def test_rules_on_the_responses_api(client: openai.OpenAI, up: FakeUpstream) -> None:
    answer = client.responses.create(model="guarded", input=f"banana for {EMAIL}")
    assert answer.output_text == "echo: [REDACTED:no-banana] for [REDACTED:email]"
    stream = client.responses.create(model="guarded", input="banana", stream=True)
    deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert deltas == "echo: [REDACTED:no-banana]"


# -- the response cache ------------------------------------------------------------------------------


def test_the_same_request_is_answered_from_the_cache(
    client: openai.OpenAI, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    question = ask("cache me please")
    first = client.chat.completions.with_raw_response.create(model="cached", messages=question)
    again = client.chat.completions.with_raw_response.create(model="cached", messages=question)
    assert again.parse().model_dump() == first.parse().model_dump()
    assert len(up.requests) == 1
    spans = policy_traces.spans(again.headers["x-tfgw-trace-id"])
    assert spans[0]["attributes"]["tfgw.cache.hit"] is True
    (llm,) = [s["attributes"] for s in spans if s["kind"] == "CLIENT"]
    counts = {k: llm[k] for k in ("tfgw.cache.hit", "llm.token_count.total", "llm.token_count.prompt")}
    assert counts == {"tfgw.cache.hit": True, "llm.token_count.total": 0, "llm.token_count.prompt": 0}
    assert policy_traces.spans(first.headers["x-tfgw-trace-id"])[0]["attributes"]["tfgw.cache.hit"] is False
    # asked not to use a cache: the provider again
    client.chat.completions.create(
        model="cached", messages=question, extra_headers={"cache-control": "no-cache"}
    )
    assert len(up.requests) == 2


def test_a_cached_stream_is_sent_again_as_a_stream(client: openai.OpenAI, up: FakeUpstream) -> None:
    def streamed() -> str:
        stream = client.chat.completions.create(model="cached", messages=ask("stream me twice"), stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert streamed() == streamed() == "echo: stream me twice"
    assert len(up.requests) == 1


def test_an_entry_lives_its_ttl(client: openai.OpenAI, up: FakeUpstream) -> None:
    for _ in range(2):
        client.chat.completions.create(model="brief", messages=ask("short lived"))
    assert len(up.requests) == 1
    time.sleep(1.1)
    client.chat.completions.create(model="brief", messages=ask("short lived"))
    assert len(up.requests) == 2


def test_the_least_recently_used_entries_go_past_the_bound(client: openai.OpenAI, up: FakeUpstream) -> None:
    """cache_max_mb = 0.05 (52 KB) holds a hundred or so answers of ~450 bytes: 200 distinct
    questions push the first out, and the last stays."""
    for n in range(200):
        client.chat.completions.create(model="cached", messages=ask(f"question number {n}"))
    client.chat.completions.create(model="cached", messages=ask("question number 199"))
    assert len(up.requests) == 200
    client.chat.completions.create(model="cached", messages=ask("question number 0"))
    assert len(up.requests) == 201


# -- budgets and limits ------------------------------------------------------------------------------


def test_a_budget_cuts_off_at_the_right_cent(
    gw: Gateway, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    """$0.05 a day at $0.0125 a call: four calls spend exactly $0.05, the fifth is refused."""
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=THRIFTY_KEY, max_retries=0) as thrifty:
        answers = [
            thrifty.chat.completions.with_raw_response.create(
                model="priced", messages=ask("hello there world")
            )
            for _ in range(4)
        ]
        with pytest.raises(openai.RateLimitError) as caught:
            thrifty.chat.completions.create(model="priced", messages=ask("hello there world"))
    assert len(up.requests) == 4
    assert caught.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert caught.value.body["message"].startswith(  # type: ignore[index]
        "Budget exceeded for key 'thrifty': $0.05 spent of its daily budget of $0.05; it resets at "
    )
    assert 0 < int(caught.value.response.headers["retry-after"]) <= 86400
    auth = [
        s["attributes"]
        for s in policy_traces.spans(answers[-1].headers["x-tfgw-trace-id"])
        if s["name"] == "auth"
    ]
    assert auth == [{"tfgw.auth.outcome": "ok", "tfgw.key.name": "thrifty", "tfgw.budget.day_usd": 0.05,
                     "tfgw.budget.day_remaining_usd": 0.0}]  # fmt: skip
    refused = [
        s["attributes"]
        for s in policy_traces.spans(caught.value.response.headers["x-tfgw-trace-id"])
        if s["name"] == "auth"
    ]
    assert refused == [{"tfgw.auth.outcome": "over_budget", "tfgw.key.name": "thrifty",
                        "tfgw.limit.refused": "budget_usd_day", "error.type": "budget_exceeded"}]  # fmt: skip


def limits_config(upstream: str, traces: Path) -> str:
    return f"""
[tracing]
dir = "{traces}"

[[keys]]
name = "limited"
hash = "{hash_key(LIMITED_KEY)}"
rpm = 20

[[keys]]
name = "tokened"
hash = "{hash_key(TOKENED_KEY)}"
tpm = 30

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"

[[models]]
name = "gpt"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
"""


def burst(gateway: Gateway, key: str, count: int = 50) -> tuple[list[tuple[int, int]], float]:
    """`count` concurrent requests of `key`: each one's status and Retry-After (0 if none), and how
    long the burst took."""

    def one(_: int) -> tuple[int, int]:
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt", "messages": ask("hello there world")},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        return answer.status_code, int(answer.headers.get("retry-after") or 0)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    return results, time.monotonic() - started


def test_rpm_and_tpm_hold_exactly_across_two_workers_under_50_concurrent_clients(
    shared_upstream: FakeUpstream, up: FakeUpstream, tmp_path: Path
) -> None:
    """rpm = 20: exactly 20 of 50 get through. tpm = 30, each request estimated at 4 tokens ("hello
    there world" at four characters a token) while in flight: exactly 7 get through (7 * 4 = 28;
    an eighth would make 32), whichever worker each lands on."""
    config = tmp_path / "tfgw.toml"
    config.write_text(limits_config(shared_upstream.url, tmp_path / "traces"))
    up.delay(1.0)  # every admitted request is still in flight while the others are admitted
    with Gateway(config, "--workers", "2", env=ENV) as gateway:
        by_rpm, took = burst(gateway, LIMITED_KEY)
        by_tpm, _ = burst(gateway, TOKENED_KEY)
    assert Counter(status for status, _ in by_rpm) == {200: 20, 429: 30}
    # the first admitted request leaves the one-minute window 60 s after its second began
    waits = [wait for status, wait in by_rpm if status == 429]
    assert all(60 - took - 1 <= wait <= 60 for wait in waits), (waits, took)
    assert Counter(status for status, _ in by_tpm) == {200: 7, 429: 43}
    assert all(1 <= wait <= 60 for status, wait in by_tpm if status == 429)
    assert len(up.requests) == 27


def test_input_rules_on_an_anthropic_body_passed_on(
    gw: Gateway, up: FakeUpstream, policy_traces: TraceFiles
) -> None:
    with anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0) as claude:
        raw = claude.messages.with_raw_response.create(
            model="guarded-claude",
            max_tokens=64,
            system=f"The user is {EMAIL}.",
            messages=[{"role": "user", "content": [{"type": "text", "text": f"write to {EMAIL}"}]}],
        )
    assert raw.parse().content[0].text == "echo: write to [REDACTED:email]"  # type: ignore[union-attr]
    (sent,) = [r.body for r in up.requests]
    assert sent is not None
    assert (sent["system"], sent["messages"][0]["content"][0]["text"]) == (
        "The user is [REDACTED:email].",
        "write to [REDACTED:email]",
    )
    policy_traces.spans(raw.headers["x-tfgw-trace-id"])  # written
    assert EMAIL.encode() not in policy_traces.everything()
