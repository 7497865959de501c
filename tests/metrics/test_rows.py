"""The row fields the metrics are derived from (tfgw.tracing.rows), pinned whole."""

from __future__ import annotations

from typing import Any

from tfgw.tracing import otlp
from tfgw.tracing import semconv as sc
from tfgw.tracing.rows import summarize_decoded

MS = 1_000_000


def span(name: str, attributes: dict[str, Any], *, failed: bool = False, start: int = 0, end: int = 0) -> Any:
    record: dict[str, Any] = {"traceId": "ab" * 16, "spanId": name, "name": name}
    record |= {"startTimeUnixNano": start, "endTimeUnixNano": end}
    record["status"] = {"code": otlp.STATUS_ERROR} if failed else {}
    return record, attributes


def attempt(provider: str, model: str, number: int, *, failed: bool = False, **more: Any) -> Any:
    attributes = {
        sc.OI_SPAN_KIND: "LLM",
        sc.GEN_OPERATION: "chat",
        sc.GEN_PROVIDER: {"up": "openai", "claude": "anthropic"}[provider],
        sc.ROUTE_PROVIDER: provider,
        sc.ROUTE_MODEL: model,
        sc.ROUTE_ATTEMPT: number,
        **more,
    }
    if failed:
        attributes[sc.ERROR_TYPE] = "503"
    return span(f"chat {model}", attributes, failed=failed)


def test_a_streamed_answer_after_a_retry_and_a_fallback_has_every_metrics_field() -> None:
    root = span(
        "POST /v1/chat/completions",
        {
            sc.URL_PATH: "/v1/chat/completions",
            sc.HTTP_STATUS: 200,
            sc.CACHE_HIT: False,
            sc.MODEL_REQUESTED: "m",
        },
        end=1000 * MS,
    )
    spans = [
        root,
        span("auth", {sc.KEY_NAME: "ci", sc.AUTH_OUTCOME: "ok"}),
        span(
            "guardrail no-pii",
            {sc.GUARDRAIL_NAME: "no-pii", sc.GUARDRAIL_STAGE: "input", sc.GUARDRAIL_OUTCOME: "redacted"},
        ),
        attempt("up", "gpt-4o", 1, failed=True),
        attempt("up", "gpt-4o", 2, failed=True),
        attempt(
            "claude",
            "haiku",
            3,
            **{
                sc.GEN_STREAM: True,
                sc.GEN_INPUT_TOKENS: 10,
                sc.GEN_OUTPUT_TOKENS: 20,
                sc.GEN_CACHE_READ: 4,
                sc.GEN_REASONING: 5,
                sc.GEN_RESPONSE_MODEL: "haiku-1",
                sc.LLM_FINISH: "stop",
            },
        ),
        span("stream", {sc.STREAM_TTFT: 120.0, sc.STREAM_CHUNKS: 9, sc.STREAM_CANCELLED: False}),
        span(
            "guardrail no-x",
            {sc.GUARDRAIL_NAME: "no-x", sc.GUARDRAIL_STAGE: "output", sc.GUARDRAIL_OUTCOME: "pass"},
        ),
    ]
    assert summarize_decoded(spans, 0, "p") == {
        "time": 0,
        "trace_id": "ab" * 16,
        "name": "POST /v1/chat/completions",
        "model": "m",
        "response_model": "haiku-1",
        "provider": "claude",
        "key": "ci",
        "status": "ok",
        "http_status": 200,
        "error_type": None,
        "duration_ms": 1000.0,
        "ttft_ms": 120.0,
        "tokens_in": 10,
        "tokens_out": 20,
        "cost": None,
        "stream": True,
        "attempts": 3,
        "finish_reason": "stop",
        "spans": 8,
        "project": "p",
        "route": "/v1/chat/completions",
        "operation": "chat",
        "provider_system": "anthropic",
        "tokens_cached": 4,
        "tokens_reasoning": 5,
        "cache_hit": False,
        "retries": 1,
        "fallbacks": 1,
        "chunks": 9,
        "guardrails": [["no-pii", "input", "redacted"], ["no-x", "output", "pass"]],
        "refusal": None,
    }


def test_a_request_a_budget_refused_names_the_refusal_and_has_no_operation() -> None:
    root = span("POST /v1/embeddings", {sc.URL_PATH: "/v1/embeddings", sc.HTTP_STATUS: 429}, failed=True)
    auth = span(
        "auth",
        {sc.KEY_NAME: "thrifty", sc.AUTH_OUTCOME: "over_budget", sc.ERROR_TYPE: "budget_exceeded"},
        failed=True,
    )
    row = summarize_decoded([root, auth], 0, None)
    metrics_fields = (
        "route", "operation", "provider_system", "tokens_cached", "tokens_reasoning", "cache_hit", "retries",
        "fallbacks", "chunks", "guardrails", "refusal", "status", "error_type",
    )  # fmt: skip
    assert {k: row[k] for k in metrics_fields} == {
        "route": "/v1/embeddings",
        "operation": None,
        "provider_system": None,
        "tokens_cached": None,
        "tokens_reasoning": None,
        "cache_hit": None,
        "retries": 0,
        "fallbacks": 0,
        "chunks": None,
        "guardrails": None,
        "refusal": "over_budget",
        "status": "error",
        "error_type": "budget_exceeded",
    }
