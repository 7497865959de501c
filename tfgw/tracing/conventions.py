"""Which convention each attribute key tfgw writes belongs to, and which values the other
convention carries too: the one place that says what an export target receiving a single
convention can go without (`tfgw.export.encode.prepare` applies it; docs/export.md#conventions).

Every key belongs to one of four:

- `openinference`: OpenInference (Arize, Phoenix): `openinference.*`, `llm.*`, `embedding.*`,
  `input.*`, `output.*`, the context attributes `session.id`, `user.id`, `metadata`, `tag.tags`,
  and the span event `First Token Stream Event`.
- `gen_ai`: OpenTelemetry GenAI (v1.41.1 names): `gen_ai.*`.
- `shared`: the general OpenTelemetry keys every backend reads (`service.*`, `http.*`, `url.*`,
  `server.*`, `error.*`, `exception.*` and the `exception` event), and any key of no convention.
- `tfgw`: tfgw's own, `tfgw.*`.

Only `openinference` and `gen_ai` keys are ever left out, and one of them only where `carried()`
finds its value in the other convention's attributes on the same span: the same token count, the
same model, the first of the finish reasons, the parameters `llm.invocation_parameters` holds.
What one convention has no name for stays for every target: cost and the total token count
(`llm.cost.*`, `llm.token_count.total`: GenAI has neither), `user.id`, `metadata`, messages and
`input.value`/`output.value` (tfgw writes no `gen_ai.*.messages`), `gen_ai.operation.name`,
`gen_ai.response.id`, and a provider name that the other convention spells otherwise.

`carried()` works on plain values (`tfgw.tracing.otlp.decode_value`): `get(key)` is the span's
value of `key`, None when absent; a span event is looked up by its name and its value is its
time after the span's start, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import orjson

from tfgw.config_otel import CONVENTIONS
from tfgw.tracing import semconv as sc

__all__ = [
    "CARRIED",
    "CONVENTIONS",
    "GEN_AI",
    "KEPT_BY_KIND",
    "OPENINFERENCE",
    "SHARED",
    "TFGW",
    "Get",
    "carried",
    "convention",
    "event_convention",
    "leavable",
    "left_out",
]

#: the conventions a target can receive (`[otel.targets.X] conventions`), in their listed order
OPENINFERENCE, GEN_AI = CONVENTIONS
SHARED = "shared"
TFGW = "tfgw"

#: what a kind of export target keeps whatever conventions it receives: Arize renders (and
#: Phoenix classifies) a span by its `openinference.span.kind`
KEPT_BY_KIND: Mapping[str, tuple[str, ...]] = MappingProxyType({"arize": (sc.OI_SPAN_KIND,)})

Get = Callable[[str], Any]
Rule = Callable[[Any, Get], bool]

_OI_KEYS = frozenset({sc.SESSION_ID, sc.USER_ID, sc.METADATA, "tag.tags"})
_OI_PREFIXES = (
    "openinference.", "llm.", "embedding.", "input.", "output.", "retrieval.", "reranker.",
    "document.", "tool.", "tool_call.", "agent.", "graph.", "prompt.", "message.",
)  # fmt: skip


@lru_cache(maxsize=16384)
def convention(key: str) -> str:
    """The convention of an attribute key: openinference, gen_ai, shared or tfgw."""
    if key.startswith("tfgw."):
        return TFGW
    if key.startswith("gen_ai."):
        return GEN_AI
    if key in _OI_KEYS or key.startswith(_OI_PREFIXES):
        return OPENINFERENCE
    return SHARED


def event_convention(name: str) -> str:
    """The convention of a span event: `First Token Stream Event` is OpenInference's."""
    if name == sc.FIRST_TOKEN_EVENT:
        return OPENINFERENCE
    return GEN_AI if name.startswith("gen_ai.") else SHARED


# -- values the other convention carries ---------------------------------------------------------

#: `llm.provider` -> `gen_ai.provider.name` where the two conventions spell a provider otherwise
#: (Phoenix's GenAI conversion reads them so); any other name is spelled the same in both
OI_TO_GENAI_PROVIDER = {
    "mistralai": "mistral_ai",
    "xai": "x_ai",
    "moonshot": "moonshot_ai",
    "azure": "azure.ai.openai",
    "aws": "aws.bedrock",
    "google": "gcp.gen_ai",
}
#: `gen_ai.provider.name` -> `llm.provider`: more GenAI names than one are one OpenInference name
GENAI_TO_OI_PROVIDER = {gen: oi for oi, gen in OI_TO_GENAI_PROVIDER.items()} | {
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
}
#: `gen_ai.provider.name` -> the `llm.system` (the API family) it implies
GENAI_TO_OI_SYSTEM = {
    "openai": "openai",
    "azure.ai.openai": "openai",
    "anthropic": "anthropic",
    "tfgw": "tfgw",
}
#: `gen_ai.operation.name` -> `openinference.span.kind` (Phoenix's GenAI conversion)
OPERATION_KINDS = {
    "chat": "LLM",
    "text_completion": "LLM",
    "generate_content": "LLM",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "retrieval": "RETRIEVER",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}
#: a field of `llm.invocation_parameters` -> the GenAI attribute that holds it
PARAMETERS = {
    "model": sc.GEN_REQUEST_MODEL,
    "stream": sc.GEN_STREAM,
    "stop": sc.GEN_STOP_SEQUENCES,
    **sc.GEN_REQUEST_PARAMS,
}
#: what an absent GenAI attribute means for these fields (`n` is written only when it is not 1)
_ABSENT_MEANS = {"n": 1, "stream": False}
_TTFC_SLACK_S = 1e-6
_PARAMS = (sc.LLM_PARAMS, sc.EMBEDDING_PARAMS)


def _equal(a: Any, b: Any) -> bool:
    return a is not None and a == b and isinstance(a, bool) is isinstance(b, bool)


@lru_cache(maxsize=1024)
def _json_object(text: Any) -> Mapping[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _stop_list(value: Any) -> Any:
    """`stop` as GenAI writes it: always a list, never an empty one."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value] or None
    return value


def _is(other: str) -> Rule:
    return lambda value, get: _equal(get(other), value)


def _any(*rules: Rule) -> Rule:
    return lambda value, get: any(rule(value, get) for rule in rules)


def _param(*fields: str) -> Rule:
    """Carried by a field of the invocation parameters (as GenAI writes it)."""

    def rule(value: Any, get: Get) -> bool:
        for key in _PARAMS:
            params = _json_object(get(key)) or {}
            for name in fields:
                given = params.get(name)
                if _equal(_stop_list(given) if name == "stop" else given, value):
                    return True
        return False

    return rule


def _parameters(value: Any, get: Get) -> bool:
    """Invocation parameters are carried when GenAI holds every one of them."""
    params = _json_object(value)
    if params is None:
        return False
    for name, given in params.items():
        attribute = PARAMETERS.get(name)
        if attribute is None:
            return False
        have = get(attribute)
        given = _stop_list(given) if name == "stop" else given
        if have is None and (given is None or _equal(_ABSENT_MEANS.get(name), given)):
            continue  # not set, or set to what GenAI's absence means
        if not _equal(have, given):
            return False
    return True


def _span_kind(value: Any, get: Get) -> bool:
    operation = get(sc.GEN_OPERATION)
    return isinstance(operation, str) and OPERATION_KINDS.get(operation) == value


def _oi_provider(value: Any, get: Get) -> bool:
    gen = get(sc.GEN_PROVIDER)
    return isinstance(gen, str) and GENAI_TO_OI_PROVIDER.get(gen, gen) == value


def _oi_system(value: Any, get: Get) -> bool:
    gen = get(sc.GEN_PROVIDER)
    return isinstance(gen, str) and GENAI_TO_OI_SYSTEM.get(gen) == value


def _gen_provider(value: Any, get: Get) -> bool:
    oi = get(sc.LLM_PROVIDER)
    return isinstance(oi, str) and isinstance(value, str) and OI_TO_GENAI_PROVIDER.get(oi, oi) == value


def _first_finish(value: Any, get: Get) -> bool:
    reasons = get(sc.GEN_FINISH_REASONS)
    return isinstance(reasons, list) and bool(reasons) and _equal(reasons[0], value)


def _finishes(value: Any, get: Get) -> bool:
    return _equal([get(sc.LLM_FINISH)], value) and get(sc.LLM_FINISH) is not None


def _close_to(other: str) -> Rule:
    def rule(value: Any, get: Get) -> bool:
        have = get(other)
        numbers = isinstance(have, int | float) and isinstance(value, int | float)
        return numbers and abs(have - value) <= _TTFC_SLACK_S

    return rule


#: OpenInference's request and response model names (the span encoder writes them with the model)
LLM_REQUEST_MODEL = "llm.request.model_name"
LLM_RESPONSE_MODEL = "llm.response.model_name"

#: every key (or span event) that may be left out, and where its value is in the other convention:
#: the same value under one of a tuple of keys, or a rule that finds it
CARRIED: Mapping[str, tuple[str, ...] | Rule] = {
    # OpenInference, carried by GenAI
    sc.OI_SPAN_KIND: _span_kind,
    sc.LLM_MODEL: (sc.GEN_RESPONSE_MODEL, sc.GEN_REQUEST_MODEL),
    LLM_REQUEST_MODEL: (sc.GEN_REQUEST_MODEL,),
    LLM_RESPONSE_MODEL: (sc.GEN_RESPONSE_MODEL,),
    sc.EMBEDDING_MODEL: (sc.GEN_RESPONSE_MODEL, sc.GEN_REQUEST_MODEL),
    sc.LLM_PROVIDER: _oi_provider,
    sc.LLM_SYSTEM: _oi_system,
    sc.LLM_PARAMS: _parameters,
    sc.EMBEDDING_PARAMS: _parameters,
    sc.LLM_FINISH: _first_finish,
    sc.TOKENS_PROMPT: (sc.GEN_INPUT_TOKENS,),
    sc.TOKENS_COMPLETION: (sc.GEN_OUTPUT_TOKENS,),
    sc.TOKENS_CACHE_READ: (sc.GEN_CACHE_READ,),
    sc.TOKENS_CACHE_WRITE: (sc.GEN_CACHE_CREATION,),
    sc.TOKENS_REASONING: (sc.GEN_REASONING,),
    sc.SESSION_ID: (sc.GEN_CONVERSATION_ID,),
    sc.FIRST_TOKEN_EVENT: _close_to(sc.GEN_TTFC),
    # GenAI, carried by OpenInference
    sc.GEN_PROVIDER: _gen_provider,
    sc.GEN_REQUEST_MODEL: _any(_is(LLM_REQUEST_MODEL), _param("model")),
    sc.GEN_RESPONSE_MODEL: (LLM_RESPONSE_MODEL, sc.LLM_MODEL, sc.EMBEDDING_MODEL),
    sc.GEN_FINISH_REASONS: _finishes,
    sc.GEN_INPUT_TOKENS: (sc.TOKENS_PROMPT,),
    sc.GEN_OUTPUT_TOKENS: (sc.TOKENS_COMPLETION,),
    sc.GEN_CACHE_READ: (sc.TOKENS_CACHE_READ,),
    sc.GEN_CACHE_CREATION: (sc.TOKENS_CACHE_WRITE,),
    sc.GEN_REASONING: (sc.TOKENS_REASONING,),
    sc.GEN_STREAM: _param("stream"),
    sc.GEN_TTFC: _close_to(sc.FIRST_TOKEN_EVENT),
    sc.GEN_STOP_SEQUENCES: _param("stop"),
    **{attr: _param(*(f for f, a in sc.GEN_REQUEST_PARAMS.items() if a == attr))
       for attr in dict.fromkeys(sc.GEN_REQUEST_PARAMS.values())},
    sc.GEN_CONVERSATION_ID: (sc.SESSION_ID,),
}  # fmt: skip


def _convention_of(key: str) -> str:
    return OPENINFERENCE if key == sc.FIRST_TOKEN_EVENT else convention(key)


@lru_cache(maxsize=64)
def leavable(conventions: tuple[str, ...], keep: tuple[str, ...] = ()) -> frozenset[str]:
    """The keys (and span event names) a target receiving `conventions` goes without where
    `carried()` says their value reaches it another way; `keep` are kept whatever."""
    return frozenset(key for key in CARRIED if key not in keep and _convention_of(key) not in conventions)


def carried(key: str, value: Any, get: Get) -> bool:
    """Whether the span's `value` of `key` is also in the other convention's attributes (`get`)."""
    rule = CARRIED.get(key)
    if isinstance(rule, tuple):
        return any(_equal(get(other), value) for other in rule)
    return rule is not None and rule(value, get)


def left_out(conventions: tuple[str, ...], keep: tuple[str, ...] = ()) -> list[str]:
    """`leavable()` in table order, for display."""
    found = leavable(tuple(conventions), keep)
    return [key for key in CARRIED if key in found]
