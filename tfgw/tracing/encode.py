"""A finished request's spans as one OTLP/JSON trace file line: where the span shape is decided.

Runs off the request path: the trace log calls it on the event loop between requests, after the
answer went out (`tfgw.tracing.log`). Every LLM span carries both conventions (docs/spans.md):
OpenInference for Arize and Phoenix, OpenTelemetry GenAI (v1.41.1 names) for everything else.
Missing values are absent, never 0: a provider that sent no usage gives a span without token
counts.

With `exclude_request_data` the text of the conversation never reaches the file: message
content, tool call arguments, tool schemas, input.value and output.value are left out, while
roles, tool names, token counts, model, latency and status stay.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import orjson

from tfgw.tracing import otlp
from tfgw.tracing import semconv as sc
from tfgw.tracing.conventions import GENAI_TO_OI_PROVIDER, OI_TO_GENAI_PROVIDER
from tfgw.tracing.fold import StreamFold
from tfgw.tracing.rows import summarize_decoded
from tfgw.tracing.spans import Constant, LlmCall, RequestTrace, Span

__all__ = ["Encoder", "provider_identity"]

#: OpenInference leaves base64 images longer than this out (OPENINFERENCE_BASE64_IMAGE_MAX_LENGTH)
MAX_INLINE_IMAGE = 32_000
REDACTED = "__REDACTED__"

#: the host of a base URL (a suffix after a dot, or a glob) -> (llm.provider, gen_ai.provider.name)
KNOWN_HOSTS = {
    "openai.com": ("openai", "openai"),
    "anthropic.com": ("anthropic", "anthropic"),
    "openai.azure.com": ("azure", "azure.ai.openai"),
    "services.ai.azure.com": ("azure", "azure.ai.inference"),
    "inference.ai.azure.com": ("azure", "azure.ai.inference"),
    "cohere.com": ("cohere", "cohere"),
    "cohere.ai": ("cohere", "cohere"),
    "mistral.ai": ("mistralai", "mistral_ai"),
    "generativelanguage.googleapis.com": ("google", "gcp.gemini"),
    "*aiplatform.googleapis.com": ("google", "gcp.vertex_ai"),
    "bedrock-runtime.*.amazonaws.com": ("aws", "aws.bedrock"),
    "x.ai": ("xai", "x_ai"),
    "deepseek.com": ("deepseek", "deepseek"),
    "groq.com": ("groq", "groq"),
    "perplexity.ai": ("perplexity", "perplexity"),
    "moonshot.ai": ("moonshot", "moonshot_ai"),
    "moonshot.cn": ("moonshot", "moonshot_ai"),
    "fireworks.ai": ("fireworks", "fireworks"),
    "cerebras.ai": ("cerebras", "cerebras"),
    "together.xyz": ("together", "together"),
    "together.ai": ("together", "together"),
    "ollama.com": ("ollama", "ollama"),
}
OLLAMA_PORT = 11434
#: a provider kind -> (llm.provider, llm.system, gen_ai.provider.name) when neither `system` nor
#: the host names the provider. The built-in providers answer themselves: `tfgw`, a custom value.
KIND_IDENTITY = {
    "openai": ("openai", "openai", "openai"),
    "azure": ("azure", "openai", "azure.ai.openai"),
    "anthropic": ("anthropic", "anthropic", "anthropic"),
    "mock": ("tfgw", "tfgw", "tfgw"),
    "recorded": ("tfgw", "tfgw", "tfgw"),
}

GEN_PARAMS = {
    "temperature": sc.GEN_REQUEST_PARAMS["temperature"],
    "max_tokens": sc.GEN_REQUEST_PARAMS["max_tokens"],
    "max_completion_tokens": sc.GEN_REQUEST_PARAMS["max_tokens"],
    "top_p": sc.GEN_REQUEST_PARAMS["top_p"],
    "frequency_penalty": sc.GEN_REQUEST_PARAMS["frequency_penalty"],
    "presence_penalty": sc.GEN_REQUEST_PARAMS["presence_penalty"],
    "seed": sc.GEN_REQUEST_PARAMS["seed"],
}
NOT_PARAMS = ("messages", "tools", "functions", "input")
CONTEXT = (sc.SESSION_ID, sc.USER_ID, sc.METADATA)
_MARK = secrets.token_hex(8)  # `Encoder._constant_json`'s placeholders


def _encoded(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The attributes as OTLP `KeyValue`s; a `Constant`'s (the same on every request, such as a
    passed guardrail's) encoded once and that list shared by every line."""
    if type(attrs) is not Constant:
        return otlp.attributes(attrs)
    if attrs.encoded is None:
        attrs.encoded = otlp.attributes(attrs)
    return attrs.encoded


def provider_identity(kind: str, base_url: str, system: str | None = None) -> dict[str, Any]:
    """The provider attributes of every LLM span to one provider: computed once per provider.

    `llm.provider` and `gen_ai.provider.name` are the conventions' well-known names: from `system`
    (`[providers.X] system`, in either convention's spelling), else the base URL's host, else the
    kind. `llm.system` is the API family, as OpenInference's OpenAI instrumentor writes it.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    provider, family, gen = KIND_IDENTITY.get(kind, KIND_IDENTITY["openai"])
    if system:
        # either convention's spelling; a name both spell alike (fireworks, ollama, …) as it is
        provider = GENAI_TO_OI_PROVIDER.get(system, system)
        gen = OI_TO_GENAI_PROVIDER.get(system, system)
    elif known := _known_host(host, parts.port):
        provider, gen = known
    attrs: dict[str, Any] = {sc.LLM_PROVIDER: provider, sc.LLM_SYSTEM: family, sc.GEN_PROVIDER: gen}
    if host:
        attrs[sc.SERVER_ADDRESS] = host
        attrs[sc.SERVER_PORT] = parts.port or (443 if parts.scheme == "https" else 80)
    return attrs


def _known_host(host: str, port: int | None) -> tuple[str, str] | None:
    for pattern, ids in KNOWN_HOSTS.items():
        if "*" in pattern:
            if fnmatchcase(host, pattern):
                return ids
        elif host == pattern or host.endswith("." + pattern):
            return ids
    return ("ollama", "ollama") if port == OLLAMA_PORT else None


class Encoder:
    def __init__(self, project: str, exclude_request_data: bool = False) -> None:
        self.project = project
        self.resource = otlp.resource(project)
        self._resource = orjson.Fragment(orjson.dumps(self.resource))  # the same on every line
        self.content = not exclude_request_data
        self._identities: dict[tuple[str, str, str | None], dict[str, Any]] = {}

    def spans(self, trace: RequestTrace) -> list[dict[str, Any]]:
        return [span for span, _ in self._spans(trace)]

    def line(self, trace: RequestTrace) -> dict[str, Any]:
        """The trace's `ExportTraceServiceRequest`, ready for `orjson.dumps`."""
        return otlp.export_request(self.resource, self.spans(trace))

    def encode(self, trace: RequestTrace) -> tuple[dict[str, Any], dict[str, Any]]:
        """The trace's file line, for `orjson.dumps` only (what is the same on every line is in it
        as JSON already, an `orjson.Fragment`), and its `tfgw.tracing.rows` summary, made from the
        same attributes."""
        spans = self._spans(trace, fragments=True)
        line = otlp.export_request(self._resource, [span for span, _ in spans])
        return line, summarize_decoded(spans, 0, self.project)

    def _spans(self, trace: RequestTrace, fragments: bool = False) -> list[tuple[Any, dict[str, Any]]]:
        last_llm = None  # a loop, not `next(<generator>)`: closing a generator throws into it
        for span in trace.spans:  # the request is over: a stream's chunks are final now
            if span.llm is not None:
                last_llm = span.llm
                if isinstance(last_llm.response, StreamFold):
                    last_llm.response = last_llm.response.completion()
        # OpenInference context attributes go on every LLM span too, as its instrumentors put them
        context = {k: trace.root.attributes[k] for k in CONTEXT if k in trace.root.attributes}
        if sc.SESSION_ID in context:
            context[sc.GEN_CONVERSATION_ID] = context[sc.SESSION_ID]
        out: list[tuple[Any, dict[str, Any]]] = []
        trace_id = trace.trace_id
        for span in trace.spans:
            attrs = span.attributes  # as they are, but for the two spans that get more here
            if (
                type(attrs) is Constant
                and span.parent_id
                and not (span.events or span.status or span.encoded)
            ):
                out.append((self._constant(trace_id, span, attrs, fragments), attrs))  # a passed guardrail
                continue
            if span.llm is not None:
                attrs = dict(attrs)
                self._llm_attributes(span, span.llm, attrs)
                attrs.update(context)
            elif span is trace.root:
                attrs = dict(attrs)
                self._root_attributes(last_llm, attrs)
            out.append((self._span(trace_id, span, attrs), attrs))
        return out

    # -- spans -----------------------------------------------------------------------------------

    def _span(self, trace_id: str, span: Span, attrs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": span.span_id,
            "name": span.name,
            "kind": span.kind,
            "startTimeUnixNano": str(span.start),
            "endTimeUnixNano": str(span.end),
            "attributes": _encoded(attrs) if span.encoded is None else _encoded(attrs) + span.encoded,
        }
        if span.parent_id:
            out["parentSpanId"] = span.parent_id
        if span.events:
            out["events"] = [
                {"timeUnixNano": str(e.time), "name": e.name, "attributes": otlp.attributes(e.attributes)}
                for e in span.events
            ]
        status: dict[str, Any] = {"code": span.status} if span.status else {}
        if span.message and span.status == otlp.STATUS_ERROR:
            status["message"] = span.message
        out["status"] = status
        return out

    def _constant(self, trace_id: str, span: Span, attrs: Constant, fragment: bool) -> Any:
        """The span of `Constant` attributes (a passed guardrail's), made once and kept on them, with
        this request's ids and times put in: as JSON (an `orjson.Fragment`) for a file line."""
        if fragment:
            a, b, c, d, e, f = attrs.json or self._constant_json(span, attrs)
            parent = span.parent_id or ""
            parts = (a, trace_id, b, span.span_id, c, str(span.start), d, str(span.end), e, parent, f)
            return orjson.Fragment("".join(parts))  # a join copies; `%` would parse the whole template
        line = (attrs.span or self._constant_span(span, attrs)).copy()
        line["traceId"], line["spanId"], line["parentSpanId"] = trace_id, span.span_id, span.parent_id
        line["startTimeUnixNano"], line["endTimeUnixNano"] = str(span.start), str(span.end)
        return line

    def _constant_span(self, span: Span, attrs: Constant) -> dict[str, Any]:
        """`_span` of a span with `Constant` attributes, no events and no status, kept on them: its
        ids and times are what changes from request to request (and are set in a copy)."""
        attrs.span = self._span("", span, attrs)
        return attrs.span

    def _constant_json(self, span: Span, attrs: Constant) -> tuple[str, ...]:
        """`_constant_span` as JSON, kept on the attributes: the six pieces around its trace id,
        span id, start, end and parent span id, in the order `_span` writes them."""
        line = (attrs.span or self._constant_span(span, attrs)).copy()
        marks = [f"\x00{_MARK}{i}\x00" for i in range(5)]  # a random token: in no rule's name
        line["traceId"], line["spanId"], line["startTimeUnixNano"] = marks[:3]
        line["endTimeUnixNano"], line["parentSpanId"] = marks[3:]
        text, pieces = orjson.dumps(line).decode(), []
        for mark in marks:
            before, text = text.split(orjson.dumps(mark).decode()[1:-1], 1)
            pieces.append(before)
        attrs.json = (*pieces, text)
        return attrs.json

    def _root_attributes(self, call: LlmCall | None, attrs: dict[str, Any]) -> None:
        attrs[sc.OI_SPAN_KIND] = "CHAIN"
        if not self.content or call is None:
            return
        if call.operation == "chat":
            text = _last_user_text(call.request.get("messages"))
            if text is not None:
                attrs[sc.INPUT_VALUE] = text
                attrs[sc.INPUT_MIME] = "text/plain"
            choices = _answer(call).get("choices") or ()
            if choices:
                answer = (choices[0].get("message") or {}).get("content")
                if isinstance(answer, str):
                    attrs[sc.OUTPUT_VALUE] = answer
                    attrs[sc.OUTPUT_MIME] = "text/plain"
        else:
            raw = call.request.get("input")
            if isinstance(raw, str):
                attrs[sc.INPUT_VALUE] = raw
                attrs[sc.INPUT_MIME] = "text/plain"
            elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                attrs[sc.INPUT_VALUE] = orjson.dumps(raw).decode()
                attrs[sc.INPUT_MIME] = "application/json"

    def _identity(self, call: LlmCall) -> dict[str, Any]:
        key = (call.provider_kind, call.base_url, call.system)
        ids = self._identities.get(key)
        if ids is None:
            ids = self._identities[key] = provider_identity(*key)
        return ids

    def _llm_attributes(self, span: Span, call: LlmCall, attrs: dict[str, Any]) -> None:
        ids = self._identity(call)
        body = call.request
        response = _answer(call)
        embeddings = call.operation == "embeddings"

        attrs[sc.OI_SPAN_KIND] = "EMBEDDING" if embeddings else "LLM"
        attrs[sc.GEN_OPERATION] = call.operation
        attrs[sc.GEN_PROVIDER] = ids[sc.GEN_PROVIDER]
        attrs[sc.GEN_REQUEST_MODEL] = call.model
        if sc.SERVER_ADDRESS in ids:
            attrs[sc.SERVER_ADDRESS] = ids[sc.SERVER_ADDRESS]
            attrs[sc.SERVER_PORT] = ids[sc.SERVER_PORT]
        answered = response.get("model")
        if answered:
            attrs[sc.GEN_RESPONSE_MODEL] = answered
        params = {k: v for k, v in body.items() if k not in NOT_PARAMS}
        params["model"] = call.model
        if embeddings:
            attrs[sc.EMBEDDING_MODEL] = answered or call.model
            attrs[sc.EMBEDDING_PARAMS] = orjson.dumps(params).decode()
            if self.content:
                raw = body.get("input")
                for i, text in enumerate([raw] if isinstance(raw, str) else raw or ()):
                    if isinstance(text, str):
                        attrs[f"{sc.EMBEDDINGS}.{i}.embedding.text"] = text
        else:
            attrs[sc.LLM_MODEL] = answered or call.model
            attrs[sc.LLM_REQUEST_MODEL] = call.model
            if answered:
                attrs[sc.LLM_RESPONSE_MODEL] = answered
            attrs[sc.LLM_PROVIDER] = ids[sc.LLM_PROVIDER]
            attrs[sc.LLM_SYSTEM] = ids[sc.LLM_SYSTEM]
            attrs[sc.LLM_PARAMS] = orjson.dumps(params).decode()
            self._request_params(body, attrs)
            self._messages(sc.LLM_INPUT, body.get("messages") or (), attrs)
            if self.content:
                for i, tool in enumerate(body.get("tools") or ()):
                    attrs[f"{sc.LLM_TOOLS}.{i}.tool.json_schema"] = orjson.dumps(tool).decode()
            self._output(response, attrs)
            if call.stream:
                attrs[sc.GEN_STREAM] = True
                if call.first_chunk:
                    attrs[sc.GEN_TTFC] = (call.first_chunk - span.start) / 1e9
        if response.get("id"):
            attrs[sc.GEN_RESPONSE_ID] = response["id"]
        self._usage(response.get("usage"), call, attrs)
        if self.content:
            attrs[sc.INPUT_VALUE] = orjson.dumps(call.client_request or body).decode()
            attrs[sc.INPUT_MIME] = "application/json"
            if response and not embeddings:
                if call.response_body is not None:
                    attrs[sc.OUTPUT_VALUE] = call.response_body.decode(errors="replace")
                else:
                    attrs[sc.OUTPUT_VALUE] = orjson.dumps(response).decode()
                attrs[sc.OUTPUT_MIME] = "application/json"
        _route(call, attrs)

    def _request_params(self, body: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        for key, attr in GEN_PARAMS.items():
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[attr] = value
        n = body.get("n")
        if isinstance(n, int) and n != 1:
            attrs[sc.GEN_REQUEST_PARAMS["n"]] = n
        stop = body.get("stop")
        if isinstance(stop, str):
            attrs[sc.GEN_STOP_SEQUENCES] = [stop]
        elif isinstance(stop, list) and stop:
            attrs[sc.GEN_STOP_SEQUENCES] = [str(s) for s in stop]

    def _messages(self, prefix: str, messages: Any, attrs: dict[str, Any]) -> None:
        for i, message in enumerate(messages):
            if isinstance(message, Mapping):
                self._message(f"{prefix}.{i}.message.", message, attrs)

    def _message(self, p: str, message: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        attrs[p + "role"] = message.get("role") or "assistant"
        content = message.get("content")
        if self.content:
            if isinstance(content, str):
                attrs[p + "content"] = content
            elif isinstance(content, list):
                self._parts(p, content, attrs)
        if message.get("name"):
            attrs[p + "name"] = message["name"]
        if message.get("tool_call_id"):
            attrs[p + "tool_call_id"] = message["tool_call_id"]
        calls = message.get("tool_calls")
        for t, call in enumerate(calls if isinstance(calls, list) else ()):
            if not isinstance(call, Mapping):
                continue
            q = f"{p}tool_calls.{t}.tool_call."
            function = call.get("function")
            function = function if isinstance(function, Mapping) else {}
            attrs[q + "id"] = call.get("id")
            attrs[q + "function.name"] = function.get("name")
            if self.content:
                attrs[q + "function.arguments"] = function.get("arguments")

    def _parts(self, prefix: str, parts: list[Any], attrs: dict[str, Any]) -> None:
        for j, part in enumerate(parts):
            if not isinstance(part, Mapping):
                continue
            q = f"{prefix}contents.{j}.message_content."
            kind = part.get("type")
            if kind == "text":
                attrs[q + "type"] = "text"
                attrs[q + "text"] = part.get("text")
            elif kind == "image_url":
                url = (part.get("image_url") or {}).get("url")
                attrs[q + "type"] = "image"
                if isinstance(url, str):
                    too_big = url.startswith("data:") and len(url) > MAX_INLINE_IMAGE
                    attrs[q + "image.image.url"] = REDACTED if too_big else url
            elif kind:
                attrs[q + "type"] = str(kind)

    def _output(self, response: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        finish = []
        for i, choice in enumerate(response.get("choices") or ()):
            self._message(f"{sc.LLM_OUTPUT}.{i}.message.", choice.get("message") or {}, attrs)
            if choice.get("finish_reason"):
                finish.append(choice["finish_reason"])
        if finish:
            attrs[sc.LLM_FINISH] = finish[0]
            attrs[sc.GEN_FINISH_REASONS] = finish

    def _usage(self, usage: Any, call: LlmCall, attrs: dict[str, Any]) -> None:
        if not isinstance(usage, Mapping):
            return
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        total = _int(usage.get("total_tokens"))
        if total is None and prompt is not None and completion is not None:
            total = prompt + completion
        for key, value in (
            (sc.TOKENS_PROMPT, prompt),
            (sc.GEN_INPUT_TOKENS, prompt),
            (sc.TOKENS_COMPLETION, completion),
            (sc.GEN_OUTPUT_TOKENS, completion),
            (sc.TOKENS_TOTAL, total),
        ):
            if value is not None:
                attrs[key] = value
        cached = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        if cached is not None:
            attrs[sc.TOKENS_CACHE_READ] = cached
            attrs[sc.GEN_CACHE_READ] = cached
        written = _int(usage.get("cache_creation_input_tokens"))
        if written is not None:
            attrs[sc.TOKENS_CACHE_WRITE] = written
            attrs[sc.GEN_CACHE_CREATION] = written
        reasoning = _int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
        if reasoning is not None:
            attrs[sc.TOKENS_REASONING] = reasoning
            attrs[sc.GEN_REASONING] = reasoning
        price = call.price
        if price is not None and (prompt is not None or completion is not None):
            # USD, rounded to a millionth of a cent so sums read as prices, not float noise
            cost_in = (prompt or 0) * price.input_per_mtok / 1e6
            cost_out = (completion or 0) * price.output_per_mtok / 1e6
            attrs[sc.COST_PROMPT] = round(cost_in, 10)
            attrs[sc.COST_COMPLETION] = round(cost_out, 10)
            attrs[sc.COST_TOTAL] = round(cost_in + cost_out, 10)


def _route(call: LlmCall, attrs: dict[str, Any]) -> None:
    """Which provider (by its config name), model and attempt the span is."""
    attrs[sc.ROUTE_PROVIDER] = call.provider
    attrs[sc.ROUTE_MODEL] = call.model
    attrs[sc.ROUTE_ATTEMPT] = call.attempt
    if call.fallback_reason:
        attrs[sc.ROUTE_FALLBACK_REASON] = call.fallback_reason


def _answer(call: LlmCall) -> Mapping[str, Any]:
    response = call.response
    return response if isinstance(response, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _last_user_text(messages: Any) -> str | None:
    for message in reversed(messages or ()):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
                )
    return None
