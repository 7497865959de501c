"""Metrics end to end: a mixed load through `tfgw serve` (one worker and two), `GET /metrics`
parsed by prometheus_client, and the same counts pushed as OTLP metrics to a real receiver.

The fake provider answers "echo: <the last user text>" with word counts as tokens: "hello there
world" is 3 tokens in and 4 out."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import GATEWAY_KEY, OPENAI_KEY
from tests.e2e.gateway import Gateway
from tests.fakes.otlp import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import hash_key
from tfgw.metrics import catalog
from tfgw.tracing.reader import read_rows

pytestmark = pytest.mark.e2e

ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
HELLO = [{"role": "user", "content": "hello there world"}]
CHAT = "/v1/chat/completions"
GPT_COST = 3 * 0.25 / 1e6 + 4 * 2.0 / 1e6


def metrics_config(upstream: str, tmp_path: Path, targets: str = "") -> Path:
    config = tmp_path / "tfgw.toml"
    config.write_text(f"""
[tracing]
dir = "{tmp_path / "traces"}"
project = "e2e-metrics"

[[keys]]
name = "e2e"
hash = "{hash_key(GATEWAY_KEY)}"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:E2E_OPENAI_KEY"

[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "gpt"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
price = {{ input_per_mtok = 0.25, output_per_mtok = 2.0 }}

[[models]]
name = "dead-then-gpt"
targets = [{{ provider = "dead", model = "gpt-4o" }}]
fallbacks = ["gpt"]

[[models]]
name = "cached"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
cache = {{ ttl = 60 }}

[[models]]
name = "guarded"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[[guardrails]]
name = "no-zeus"
kind = "keywords"
patterns = ["project zeus"]
stage = "input"
action = "block"
models = ["guarded"]
{targets}""")
    return config


def mixed_load(gw: Gateway) -> None:
    """JSON, a stream, an unknown model, a fallback, a cache miss then hit, a guardrail block, and
    a request without a key."""
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20) as client:
        client.chat.completions.create(model="gpt", messages=HELLO)  # type: ignore[arg-type]
        for _ in client.chat.completions.create(model="gpt", messages=HELLO, stream=True):  # type: ignore[arg-type]
            pass
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=HELLO)  # type: ignore[arg-type]
        client.chat.completions.create(model="dead-then-gpt", messages=HELLO)  # type: ignore[arg-type]
        for _ in range(2):
            client.chat.completions.create(model="cached", messages=HELLO)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="guarded",
                messages=[{"role": "user", "content": "tell me about project zeus"}],
            )
    assert httpx.post(f"{gw.url}{CHAT}", json={"model": "gpt", "messages": HELLO}).status_code == 401


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _requests(
    model: str | None, provider: str | None, status: str, code: str, key: str | None = "e2e"
) -> Any:
    labels = {"route": CHAT, "model": model, "provider": provider, "key": key, "status": status, "code": code}
    return ("tfgw_requests_total", _labels(**{k: v for k, v in labels.items() if v is not None}))


def _tokens(model: str, kind: str) -> Any:
    return ("tfgw_tokens_total", _labels(model=model, provider="up", key="e2e", type=kind))


def _genai(name: str, model: str, **more: str) -> Any:
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": model,
    }
    return (name, _labels(**labels, **more))


DURATION = "gen_ai_client_operation_duration_seconds_count"
USAGE = "gen_ai_client_token_usage_count"

EXPECTED: dict[Any, float] = {
    _requests("gpt", "up", "ok", "200"): 2,
    _requests("nope", None, "error", "404"): 1,
    _requests("dead-then-gpt", "up", "ok", "200"): 1,
    _requests("cached", "up", "ok", "200"): 2,
    _requests("guarded", None, "error", "400"): 1,
    _requests(None, None, "error", "401", key=None): 1,
    _tokens("gpt", "input"): 6,
    _tokens("gpt", "output"): 8,
    _tokens("dead-then-gpt", "input"): 3,
    _tokens("dead-then-gpt", "output"): 4,
    _tokens("cached", "input"): 3,
    _tokens("cached", "output"): 4,
    ("tfgw_cost_usd_total", _labels(model="gpt", provider="up", key="e2e")): 2 * GPT_COST,
    # the fallback is priced as the model that answered
    ("tfgw_cost_usd_total", _labels(model="dead-then-gpt", provider="up", key="e2e")): GPT_COST,
    ("tfgw_fallbacks_total", _labels(model="dead-then-gpt", provider="up")): 1,
    ("tfgw_cache_lookups_total", _labels(model="cached", result="miss")): 1,
    ("tfgw_cache_lookups_total", _labels(model="cached", result="hit")): 1,
    ("tfgw_guardrail_evaluations_total", _labels(rule="no-zeus", stage="input", outcome="blocked")): 1,
    _genai(DURATION, "gpt"): 2,
    _genai(DURATION, "dead-then-gpt"): 1,
    _genai(DURATION, "cached"): 2,
    _genai(USAGE, "gpt", gen_ai_token_type="input"): 2,
    _genai(USAGE, "gpt", gen_ai_token_type="output"): 2,
    _genai(USAGE, "dead-then-gpt", gen_ai_token_type="input"): 1,
    _genai(USAGE, "dead-then-gpt", gen_ai_token_type="output"): 1,
    _genai(USAGE, "cached", gen_ai_token_type="input"): 2,
    _genai(USAGE, "cached", gen_ai_token_type="output"): 2,
    _genai("gen_ai_client_operation_time_to_first_chunk_seconds_count", "gpt"): 1,
    _genai("gen_ai_client_operation_time_per_output_chunk_seconds_count", "gpt"): 1,
}


def scraped(text: str) -> dict[Any, float]:
    """The request-derived samples of a scrape: every counter but the export targets' and the
    spans', and the GenAI histograms' counts."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            wanted = name.endswith("_count") or (name.endswith("_total") and "export" not in name)
            if wanted and name != "tfgw_spans_written_total":
                out[name, frozenset(sample.labels.items())] = sample.value
    return out


def spans_written(text: str) -> float:
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "tfgw_spans_written"]
    return family.samples[0].value


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """`read()` until `done` holds of it; its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def scrape(gw: Gateway) -> str:
    answer = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert (answer.status_code, answer.headers["content-type"]) == (
        200,
        "text/plain; version=0.0.4; charset=utf-8",
    )
    return answer.text


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_a_mixed_load_exactly(tmp_path: Path, upstream: FakeUpstream, workers: int) -> None:
    config = metrics_config(upstream.url, tmp_path)
    with Gateway(config, "--workers", str(workers), env=ENV) as gw:
        assert scraped(scrape(gw)) == {}  # counted from the start of this run, not the last
        mixed_load(gw)
        text = poll(lambda: scrape(gw), lambda t: scraped(t) == EXPECTED)
        refused = httpx.get(f"{gw.url}/metrics")
    assert scraped(text) == EXPECTED
    rows = list(read_rows(tmp_path / "traces"))
    assert (len(rows), spans_written(text)) == (8, sum(row["spans"] for row in rows))
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")


def pushed(request: dict[str, Any]) -> dict[Any, float]:
    """An OTLP metrics request as `scraped()` reads a scrape: Prometheus names and label names."""
    names = {m.name: m for m in catalog.CATALOG}
    out = {}
    for rm in request.get("resourceMetrics") or ():
        for sm in rm.get("scopeMetrics") or ():
            for metric in sm.get("metrics") or ():
                m = names[metric["name"]]
                kind = "histogram" if "histogram" in metric else "sum" if "sum" in metric else "gauge"
                for point in metric[kind]["dataPoints"]:
                    labels = frozenset(
                        (a["key"].replace(".", "_"), str(*a["value"].values()))
                        for a in point.get("attributes", ())
                    )  # `code` is an intValue, the others strings
                    if kind == "histogram":
                        out[m.prometheus + "_count", labels] = float(point["count"])
                    elif "export" not in m.name and m is not catalog.SPANS_WRITTEN:
                        value = point.get("asDouble", point.get("asInt"))
                        out[m.prometheus, labels] = float(value)
    return out


def test_targets_with_metrics_get_the_same_counts_as_otlp_metrics(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as http, OtlpGrpcReceiver() as grpc_receiver:
        targets = f"""
[otel.targets.http]
kind = "otlp"
protocol = "http/protobuf"
endpoint = "{http.url}"
metrics = true

[otel.targets.grpc]
kind = "otlp"
protocol = "grpc"
endpoint = "{grpc_receiver.url}"
metrics = true
headers = {{ "x-team" = "metrics" }}
"""
        config = metrics_config(upstream.url, tmp_path, targets)
        with Gateway(config, env={**ENV, "TFGW_METRICS_PUSH_S": "0.2"}) as gw:
            mixed_load(gw)
            for receiver in (http, grpc_receiver):
                last = poll(receiver.metrics, lambda got: bool(got) and pushed(got[-1]) == EXPECTED)
                assert pushed(last[-1]) == EXPECTED
            text = poll(lambda: scrape(gw), lambda t: scraped(t) == EXPECTED)  # rewritten once a second
        assert scraped(text) == EXPECTED
        assert gw.logs() == ""  # pushing quietly
    (to_http,) = {r.path for r in http.requests if r.path.endswith("metrics")}
    grpc_metadata = {r.headers.get("x-team") for r in grpc_receiver.requests if r.path.endswith("Export")}
    assert (to_http, grpc_metadata) == ("/v1/metrics", {"metrics"})
    resource = last[-1]["resourceMetrics"][0]["resource"]["attributes"]
    assert {a["key"]: a["value"]["stringValue"] for a in resource}["service.name"] == "tfgw"
