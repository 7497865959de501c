"""One row per request: the summary `traces tail`, `list` and `stats` show, derived from its spans.

The gateway writes each request's row next to its spans (`<segment>.rows`, one JSON object per
line), so `list` and `stats` read a few hundred bytes per request instead of every span. A row is
always what `summarize()` makes of the request's spans: readers call it themselves for lines that
have no row (a file another tool wrote, or rows lost in a crash).

Row keys (absent values are None, never 0):

| key | what |
| --- | --- |
| `time` | start of the root span, Unix nanoseconds (int) |
| `trace_id` | 32 hex digits |
| `name` | root span name, e.g. `POST /v1/chat/completions` |
| `model` | the model the client asked for (`tfgw.model.requested`, else the LLM span's request model) |
| `response_model` | the model that answered (`gen_ai.response.model`, else `llm.model_name`) |
| `provider` | the provider that answered (`tfgw.route.provider`, else `gen_ai.provider.name`, else |
|  | `llm.provider`) |
| `key` | the gateway key's name (`tfgw.key.name`) |
| `status` | `"ok"` or `"error"` (the root span's status is ERROR, or its HTTP status is >= 400) |
| `http_status` | root `http.response.status_code` |
| `error_type` | root `error.type`, else the last failed span's |
| `duration_ms` | root span duration, milliseconds (float) |
| `ttft_ms` | time to first token in milliseconds (float), streams only |
| `tokens_in`, `tokens_out` | summed over LLM/EMBEDDING spans that report them |
| `cost` | USD summed over LLM spans (`llm.cost.total`) |
| `stream` | bool |
| `attempts` | number of LLM/EMBEDDING spans (provider attempts: more than one is a retry or a |
|  | fallback) |
| `finish_reason` | why the answer ended (`llm.finish_reason`, else the first of |
|  | `gen_ai.response.finish_reasons`) on the attempt that answered: `stop`, `length`, ... |
| `spans` | number of spans |
| `project` | `openinference.project.name` of the resource |
| `route` | root `url.path`, e.g. `/v1/chat/completions` |
| `operation` | `gen_ai.operation.name` (`chat`, `embeddings`) of the attempt that answered, else of the |
|  | last attempt; None without one (refused, blocked, no such model) |
| `provider_system` | `gen_ai.provider.name` of that attempt (`openai`, `anthropic`, ...) |
| `tokens_cached` | cached input tokens (`gen_ai.usage.cache_read.input_tokens`), summed like `tokens_in` |
| `tokens_reasoning` | reasoning output tokens (`gen_ai.usage.reasoning.output_tokens`), summed |
| `cache_hit` | root `tfgw.cache.hit`: true (answered from the cache), false (a model with `cache` |
|  | that called its provider), None (no cache) |
| `retries` | attempts of the same target as the attempt before them (int) |
| `fallbacks` | attempts of another target than the attempt before them (int) |
| `chunks` | `tfgw.stream.chunks` of the `stream` span, streams only |
| `guardrails` | `[rule, stage, outcome]` of each `guardrail` span, in span order (`[["no-pii", "input", |
|  | "redacted"]]`), None when no rule was evaluated |
| `refusal` | the limit that refused the request (`auth`'s `tfgw.limit.refused`): `rpm`, `tpm`, |
|  | `budget_usd_day` or `budget_usd_month`; from a trace without it, `rate_limited` or `over_budget` |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfgw.tracing import otlp, semconv
from tfgw.tracing.spans import Constant

__all__ = ["summarize", "summarize_decoded"]

LLM_KINDS = ("LLM", "EMBEDDING")
REFUSALS = frozenset(("rate_limited", "over_budget"))
RULE, STAGE, OUTCOME = semconv.GUARDRAIL_NAME, semconv.GUARDRAIL_STAGE, semconv.GUARDRAIL_OUTCOME


def summarize(spans: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """The row of one trace from its `(resource, span)` pairs, as `otlp.spans_of()` yields them."""
    pairs = list(spans)
    if not pairs:
        raise ValueError("a trace has at least one span")
    decoded = [(span, otlp.decode_attributes(span.get("attributes") or ())) for _, span in pairs]
    ids = {span.get("spanId") for span, _ in decoded}
    root_index = next(
        (i for i, (s, _) in enumerate(decoded) if not s.get("parentSpanId") or s["parentSpanId"] not in ids),
        0,
    )
    project = otlp.decode_attributes(pairs[root_index][0].get("attributes") or ()).get(semconv.PROJECT_NAME)
    return summarize_decoded(decoded, root_index, project)


def summarize_decoded(
    spans: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], root_index: int, project: str | None
) -> dict[str, Any]:
    """`summarize()` on spans whose attributes are already plain dicts (the writer has them so)."""
    root, ra = spans[root_index]
    start, end = int(root.get("startTimeUnixNano") or 0), int(root.get("endTimeUnixNano") or 0)
    totals = _Totals(model=ra.get(semconv.MODEL_REQUESTED))
    for span, a in spans:
        totals.add(span, a)
    error = (root.get("status") or {}).get("code") == otlp.STATUS_ERROR
    http_status = ra.get(semconv.HTTP_STATUS)
    if isinstance(http_status, int) and http_status >= 400:
        error = True
    error_type = totals.error_type
    if error and ra.get(semconv.ERROR_TYPE):
        error_type = ra[semconv.ERROR_TYPE]
    return {
        "time": start,
        "trace_id": root.get("traceId"),
        "name": root.get("name"),
        "model": totals.model,
        "response_model": totals.response_model,
        "provider": totals.provider,
        "key": totals.key,
        "status": "error" if error else "ok",
        "http_status": http_status,
        "error_type": error_type if error else None,
        "duration_ms": (end - start) / 1e6 if end >= start else None,
        "ttft_ms": totals.ttft,
        "tokens_in": totals.tokens_in,
        "tokens_out": totals.tokens_out,
        "cost": totals.cost,
        "stream": totals.stream,
        "attempts": totals.attempts,
        "finish_reason": totals.finish_reason,
        "spans": len(spans),
        "project": project,
        "route": ra.get(semconv.URL_PATH),
        "operation": totals.operation,
        "provider_system": totals.system,
        "tokens_cached": totals.tokens_cached,
        "tokens_reasoning": totals.tokens_reasoning,
        "cache_hit": ra.get(semconv.CACHE_HIT),
        "retries": totals.retries,
        "fallbacks": totals.fallbacks,
        "chunks": totals.chunks,
        "guardrails": totals.guardrails,
        "refusal": totals.refusal,
    }


@dataclass(slots=True)
class _Totals:
    """What a request's spans add up to, in span order; the root's own status is applied after."""

    model: Any = None
    provider: Any = None
    response_model: Any = None
    error_type: Any = None
    ttft: float | None = None
    key: Any = None
    tokens_in: Any = None
    tokens_out: Any = None
    cost: Any = None
    stream: bool = False
    attempts: int = 0
    finish_reason: Any = None
    operation: Any = None
    system: Any = None
    tokens_cached: Any = None
    tokens_reasoning: Any = None
    retries: int = 0
    fallbacks: int = 0
    target: Any = None  # (provider, model) of the last attempt
    answered: bool = False
    chunks: Any = None
    guardrails: list[list[Any]] | None = None
    refusal: Any = None

    def add(self, span: Mapping[str, Any], a: Mapping[str, Any]) -> None:
        if type(a) is Constant:  # a passed guardrail's, as the encoder hands it: nothing else here
            if (entry := a.row) is None:
                entry = a.row = [a.get(RULE), a.get(STAGE), a.get(OUTCOME)]
            if self.guardrails is None:
                self.guardrails = [entry]
            else:
                self.guardrails.append(entry)
            return
        failed = (span.get("status") or {}).get("code") == otlp.STATUS_ERROR
        if failed and a.get(semconv.ERROR_TYPE):
            self.error_type = a[semconv.ERROR_TYPE]
        self.key = self.key or a.get(semconv.KEY_NAME)
        self.model = self.model or a.get(semconv.MODEL_REQUESTED)
        if a.get(semconv.STREAM_TTFT) is not None:
            self.ttft = float(a[semconv.STREAM_TTFT])
            self.chunks = a.get(semconv.STREAM_CHUNKS)
        elif a.get(semconv.GEN_TTFC) is not None and self.ttft is None:
            self.ttft = float(a[semconv.GEN_TTFC]) * 1000
        if a.get(semconv.OI_SPAN_KIND) in LLM_KINDS or semconv.GEN_OPERATION in a:
            self.add_attempt(a, failed)
        elif semconv.GUARDRAIL_OUTCOME in a:  # a guardrail span (one per rule evaluated) read back
            self.add_guardrail(a)
        elif a.get(semconv.AUTH_OUTCOME) in REFUSALS:  # which limit, or (an older trace) which kind
            self.refusal = a.get(semconv.LIMIT_REFUSED) or a[semconv.AUTH_OUTCOME]

    def add_guardrail(self, a: Mapping[str, Any]) -> None:
        if (outcome := a.get(semconv.GUARDRAIL_OUTCOME)) is not None:
            rule = [a.get(semconv.GUARDRAIL_NAME), a.get(semconv.GUARDRAIL_STAGE), outcome]
            if self.guardrails is None:
                self.guardrails = [rule]
            else:
                self.guardrails.append(rule)

    def add_attempt(self, a: Mapping[str, Any], failed: bool) -> None:
        """An LLM or embedding span: one provider attempt."""
        self.attempts += 1
        self.stream = self.stream or bool(a.get(semconv.GEN_STREAM))
        self.model = self.model or a.get(semconv.GEN_REQUEST_MODEL) or a.get(semconv.LLM_MODEL)
        target = (a.get(semconv.ROUTE_PROVIDER), a.get(semconv.ROUTE_MODEL))
        if self.attempts > 1:
            if target == self.target:
                self.retries += 1
            else:
                self.fallbacks += 1
        self.target = target
        if not self.answered:
            self.operation, self.system = a.get(semconv.GEN_OPERATION), a.get(semconv.GEN_PROVIDER)
        if not failed:
            self.answered = True
            self.provider = (
                a.get(semconv.ROUTE_PROVIDER) or a.get(semconv.GEN_PROVIDER) or a.get(semconv.LLM_PROVIDER)
            )
            response_model = a.get(semconv.GEN_RESPONSE_MODEL) or a.get(semconv.LLM_MODEL)
            self.response_model = response_model or a.get(semconv.EMBEDDING_MODEL)
            self.finish_reason = a.get(semconv.LLM_FINISH) or _first(a.get(semconv.GEN_FINISH_REASONS))
        elif self.provider is None:
            self.provider = a.get(semconv.ROUTE_PROVIDER) or a.get(semconv.GEN_PROVIDER)
        self.tokens_in = _add(self.tokens_in, a.get(semconv.TOKENS_PROMPT, a.get(semconv.GEN_INPUT_TOKENS)))
        self.tokens_out = _add(
            self.tokens_out, a.get(semconv.TOKENS_COMPLETION, a.get(semconv.GEN_OUTPUT_TOKENS))
        )
        self.cost = _add(self.cost, a.get(semconv.COST_TOTAL))
        cached, reasoning = a.get(semconv.GEN_CACHE_READ), a.get(semconv.GEN_REASONING)
        if cached is not None or reasoning is not None:
            self.tokens_cached = _add(self.tokens_cached, cached)
            self.tokens_reasoning = _add(self.tokens_reasoning, reasoning)


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list | tuple) and values else None


def _add(total: Any, value: Any) -> Any:
    if value is None:
        return total
    return value if total is None else total + value
