"""Every metric tfgw exports, once: its OpenTelemetry name (what an OTLP target gets), its
Prometheus name (what `GET /metrics` shows), its kind, unit and labels, and where its value comes
from. docs/metrics.md has the same table; a test holds the two together.

OpenTelemetry GenAI metric names and buckets are v1.41.1's (`gen-ai-metrics.md`). The per-key
label is never on a histogram: 200 models x 50 keys x 14 buckets would be 140,000 series for one
metric; the counters carry it instead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOG", "COUNTER", "GAUGE", "HISTOGRAM", "Metric", "by_name"]

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"

#: gen_ai.client.operation.duration and the chunk timings: 0.01 s doubled up to 81.92 s
TIME_BUCKETS = tuple(0.01 * 2**i for i in range(14))
#: gen_ai.client.token.usage: powers of 4 from 1 to 67,108,864
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))

GENAI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: a cheap dict key
class Metric:
    name: str  # OpenTelemetry
    prometheus: str
    kind: str
    unit: str
    labels: tuple[str, ...]  # OpenTelemetry attribute names; `.` becomes `_` in Prometheus
    help: str
    source: str
    buckets: tuple[float, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.replace(".", "_") for label in self.labels)


_ROWS = "rows"
_EXPORT = "the exporter's thread for the target"

DURATION = Metric(
    "gen_ai.client.operation.duration", "gen_ai_client_operation_duration_seconds", HISTOGRAM, "s",
    (*GENAI, "error.type"), "Duration of GenAI operations as the gateway served them, all attempts",
    "rows: `duration_ms`, requests with an attempt", TIME_BUCKETS,
)  # fmt: skip
TOKEN_USAGE = Metric(
    "gen_ai.client.token.usage", "gen_ai_client_token_usage", HISTOGRAM, "{token}",
    (*GENAI, "gen_ai.token.type"), "Tokens per GenAI operation, input and output",
    "rows: `tokens_in`, `tokens_out`", TOKEN_BUCKETS,
)  # fmt: skip
TIME_TO_FIRST_CHUNK = Metric(
    "gen_ai.client.operation.time_to_first_chunk", "gen_ai_client_operation_time_to_first_chunk_seconds",
    HISTOGRAM, "s", GENAI, "Time from the request's arrival to the first chunk sent, streams",
    "rows: `ttft_ms`", TIME_BUCKETS,
)  # fmt: skip
TIME_PER_OUTPUT_CHUNK = Metric(
    "gen_ai.client.operation.time_per_output_chunk",
    "gen_ai_client_operation_time_per_output_chunk_seconds", HISTOGRAM, "s", GENAI,
    "Time between chunks after the first, streams", "rows: (`duration_ms` - `ttft_ms`) / (`chunks` - 1)",
    TIME_BUCKETS,
)  # fmt: skip
REQUESTS = Metric(
    "tfgw.requests", "tfgw_requests_total", COUNTER, "{request}",
    ("route", "model", "provider", "key", "status", "code"), "Requests served",
    "rows: `route`, `model`, `provider`, `key`, `status`, `http_status`",
)  # fmt: skip
TOKENS = Metric(
    "tfgw.tokens", "tfgw_tokens_total", COUNTER, "{token}", ("model", "provider", "key", "type"),
    "Tokens by type: input, output, cached (input), reasoning (output)",
    "rows: `tokens_in`, `tokens_out`, `tokens_cached`, `tokens_reasoning`",
)  # fmt: skip
COST = Metric(
    "tfgw.cost", "tfgw_cost_usd_total", COUNTER, "USD", ("model", "provider", "key"),
    "Spend at the models' price", "rows: `cost`",
)  # fmt: skip
RETRIES = Metric(
    "tfgw.retries", "tfgw_retries_total", COUNTER, "{attempt}", ("model", "provider"),
    "Attempts of the same target again after a retryable failure", "rows: `retries`",
)  # fmt: skip
FALLBACKS = Metric(
    "tfgw.fallbacks", "tfgw_fallbacks_total", COUNTER, "{attempt}", ("model", "provider"),
    "Attempts of another target after a failure", "rows: `fallbacks`",
)  # fmt: skip
CACHE = Metric(
    "tfgw.cache.lookups", "tfgw_cache_lookups_total", COUNTER, "{request}", ("model", "result"),
    "Requests to a model with `cache`: result hit (answered from the cache) or miss", "rows: `cache_hit`",
)  # fmt: skip
GUARDRAILS = Metric(
    "tfgw.guardrail.evaluations", "tfgw_guardrail_evaluations_total", COUNTER, "{evaluation}",
    ("rule", "stage", "outcome"), "Guardrail rules evaluated, by outcome: pass, redacted, blocked",
    "rows: `guardrails`",
)  # fmt: skip
REFUSALS = Metric(
    "tfgw.refusals", "tfgw_refusals_total", COUNTER, "{request}", ("key", "reason"),
    "Requests refused by a key's limit (rpm, tpm, budget_usd_day, budget_usd_month)", "rows: `refusal`",
)  # fmt: skip
SPANS_WRITTEN = Metric(
    "tfgw.spans.written", "tfgw_spans_written_total", COUNTER, "{span}", (),
    "Spans the gateway wrote to the trace log", "rows: `spans`",
)  # fmt: skip
TRACE_LOG_DROPPED = Metric(
    "tfgw.trace_log.dropped", "tfgw_trace_log_dropped_traces_total", COUNTER, "{trace}", ("reason",),
    "Traces the gateway's trace log dropped: backlog (too many waiting), write_failed, encode_error",
    "`.writers/<pid>.json`",
)  # fmt: skip
EXPORT_DELIVERED = Metric(
    "tfgw.export.delivered", "tfgw_export_delivered_spans_total", COUNTER, "{span}", ("target",),
    "Spans a target accepted", _EXPORT,
)  # fmt: skip
EXPORT_REJECTED = Metric(
    "tfgw.export.rejected", "tfgw_export_rejected_spans_total", COUNTER, "{span}", ("target",),
    "Spans a target refused for good, in part or whole, or that could not be sent to it", _EXPORT,
)  # fmt: skip
EXPORT_ATTEMPTS = Metric(
    "tfgw.export.attempts", "tfgw_export_attempts_total", COUNTER, "{request}", ("target",),
    "Export requests sent to a target, whatever it answered (retries included)", _EXPORT,
)  # fmt: skip
EXPORT_RETRIES = Metric(
    "tfgw.export.retries", "tfgw_export_retries_total", COUNTER, "{request}", ("target",),
    "Export requests to a target that failed with a retryable error (their batch is sent again)", _EXPORT,
)  # fmt: skip
EXPORT_DROPPED = Metric(
    "tfgw.export.dropped", "tfgw_export_dropped_spans_total", COUNTER, "{span}", ("target",),
    "Spans retention deleted before a target had them", "`.cursors/dropped.jsonl`",
)  # fmt: skip
EXPORT_PENDING = Metric(
    "tfgw.export.pending", "tfgw_export_pending_bytes", GAUGE, "By", ("target",),
    "Bytes of the trace log a target has not had yet", _EXPORT,
)  # fmt: skip
EXPORT_LAG = Metric(
    "tfgw.export.lag", "tfgw_export_lag_seconds", GAUGE, "s", ("target",),
    "Age of the newest span of the batch a target is sending (0 when it is idle)", _EXPORT,
)  # fmt: skip

CATALOG: tuple[Metric, ...] = (
    DURATION, TOKEN_USAGE, TIME_TO_FIRST_CHUNK, TIME_PER_OUTPUT_CHUNK, REQUESTS, TOKENS, COST, RETRIES,
    FALLBACKS, CACHE, GUARDRAILS, REFUSALS, SPANS_WRITTEN, TRACE_LOG_DROPPED, EXPORT_DELIVERED,
    EXPORT_REJECTED, EXPORT_ATTEMPTS, EXPORT_RETRIES, EXPORT_DROPPED, EXPORT_PENDING, EXPORT_LAG,
)  # fmt: skip
#: the metrics that come from the export targets, not the rows
EXPORT = (
    EXPORT_DELIVERED, EXPORT_REJECTED, EXPORT_ATTEMPTS, EXPORT_RETRIES, EXPORT_DROPPED, EXPORT_PENDING,
    EXPORT_LAG,
)  # fmt: skip


def by_name() -> dict[str, Metric]:
    """Every metric by its Prometheus name."""
    return {m.prometheus: m for m in CATALOG}
