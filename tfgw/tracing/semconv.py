"""Every span attribute key tfgw writes, in one place: OpenInference (Arize) and OpenTelemetry GenAI
(v1.41.1 names) side by side, so each LLM span reads right in both kinds of backend.

The versions the names are pinned to: OpenTelemetry semantic conventions v1.41.1 (GenAI and the
general keys: the last release of `open-telemetry/semantic-conventions` that holds GenAI; its
schema is `SCHEMA_URL`, written on every resource and scope) and OpenInference's semantic
conventions 0.1.32. docs/attributes.md lists every key with its convention and version.
"""

from __future__ import annotations

#: the `schemaUrl` of every resource and scope tfgw writes: the conventions release of its names
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.1"

# -- resource ----------------------------------------------------------------------------------
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
PROJECT_NAME = "openinference.project.name"

# -- HTTP and general --------------------------------------------------------------------------
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# -- OpenInference -----------------------------------------------------------------------------
OI_SPAN_KIND = "openinference.span.kind"
SESSION_ID = "session.id"
USER_ID = "user.id"
METADATA = "metadata"
INPUT_VALUE = "input.value"
INPUT_MIME = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME = "output.mime_type"
LLM_MODEL = "llm.model_name"
LLM_REQUEST_MODEL = "llm.request.model_name"
LLM_RESPONSE_MODEL = "llm.response.model_name"
LLM_PROVIDER = "llm.provider"
LLM_SYSTEM = "llm.system"
LLM_PARAMS = "llm.invocation_parameters"
LLM_INPUT = "llm.input_messages"
LLM_OUTPUT = "llm.output_messages"
LLM_TOOLS = "llm.tools"
LLM_FINISH = "llm.finish_reason"
TOKENS_PROMPT = "llm.token_count.prompt"
TOKENS_COMPLETION = "llm.token_count.completion"
TOKENS_TOTAL = "llm.token_count.total"
TOKENS_CACHE_READ = "llm.token_count.prompt_details.cache_read"
TOKENS_CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
TOKENS_REASONING = "llm.token_count.completion_details.reasoning"
COST_PROMPT = "llm.cost.prompt"
COST_COMPLETION = "llm.cost.completion"
COST_TOTAL = "llm.cost.total"
EMBEDDING_MODEL = "embedding.model_name"
EMBEDDING_PARAMS = "embedding.invocation_parameters"
EMBEDDINGS = "embedding.embeddings"
FIRST_TOKEN_EVENT = "First Token Stream Event"

# -- OpenTelemetry GenAI -----------------------------------------------------------------------
GEN_OPERATION = "gen_ai.operation.name"
GEN_PROVIDER = "gen_ai.provider.name"
GEN_REQUEST_MODEL = "gen_ai.request.model"
GEN_RESPONSE_MODEL = "gen_ai.response.model"
GEN_RESPONSE_ID = "gen_ai.response.id"
GEN_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
GEN_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
GEN_REASONING = "gen_ai.usage.reasoning.output_tokens"
GEN_STREAM = "gen_ai.request.stream"
GEN_TTFC = "gen_ai.response.time_to_first_chunk"
GEN_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}
GEN_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_CONVERSATION_ID = "gen_ai.conversation.id"

# -- tfgw's own --------------------------------------------------------------------------------
KEY_NAME = "tfgw.key.name"
AUTH_OUTCOME = "tfgw.auth.outcome"
MODEL_REQUESTED = "tfgw.model.requested"
ROUTE_PROVIDER = "tfgw.route.provider"
ROUTE_MODEL = "tfgw.route.model"
ROUTE_ATTEMPT = "tfgw.route.attempt"
ROUTE_FALLBACK_REASON = "tfgw.route.fallback_reason"
ROUTE_FALLBACKS = "tfgw.route.fallbacks"
STREAM_CHUNKS = "tfgw.stream.chunks"
STREAM_CANCELLED = "tfgw.stream.cancelled"
STREAM_TTFT = "tfgw.stream.time_to_first_token_ms"
OVERHEAD_MS = "tfgw.overhead_ms"

# -- routing: what `model.resolve` decided (tfgw.gateway.routing.plan_attributes) -----------------
ROUTE_STRATEGY = "tfgw.route.strategy"
ROUTE_CANDIDATES = "tfgw.route.candidates"
ROUTE_SKIPPED = "tfgw.route.skipped"
ROUTE_FALLBACK_SOURCES = "tfgw.route.fallback_sources"
ROUTE_ALL_UNHEALTHY = "tfgw.route.all_unhealthy"

# -- policy: guardrails and the response cache (tfgw.gateway.policy) ----------------------------
GUARDRAIL_NAME = "tfgw.guardrail.name"
GUARDRAIL_STAGE = "tfgw.guardrail.stage"
GUARDRAIL_ACTION = "tfgw.guardrail.action"
GUARDRAIL_OUTCOME = "tfgw.guardrail.outcome"
GUARDRAIL_MATCHES = "tfgw.guardrail.matches"
GUARDRAIL_PATTERNS = "tfgw.guardrail.patterns"
CACHE_HIT = "tfgw.cache.hit"
CACHE_AGE = "tfgw.cache.age_s"

# -- limits and budgets of a key, on `auth` (tfgw.gateway.policy.Account) ------------------------
LIMIT_REFUSED = "tfgw.limit.refused"  # rpm | tpm | budget_usd_day | budget_usd_month
LIMIT_RPM = "tfgw.limit.rpm"
LIMIT_RPM_REMAINING = "tfgw.limit.rpm_remaining"
LIMIT_TPM = "tfgw.limit.tpm"
LIMIT_TPM_REMAINING = "tfgw.limit.tpm_remaining"
BUDGET_DAY = "tfgw.budget.day_usd"
BUDGET_DAY_REMAINING = "tfgw.budget.day_remaining_usd"
BUDGET_MONTH = "tfgw.budget.month_usd"
BUDGET_MONTH_REMAINING = "tfgw.budget.month_remaining_usd"
