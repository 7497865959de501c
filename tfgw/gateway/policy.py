"""The policy stages of a request: what happens between authentication and the provider, and after
its answer, in a fixed order (docs/policy.md):

1. **admitted**: the key's limits and budgets (`tfgw.gateway.stages.authenticate` and `admit`);
2. **transformed**: the input guardrails (`admit_and_guard`) block the request (400) or redact the
   body before the router, the cache, the provider or any span sees it;
3. **routed**: `model.resolve`;
4. **answered**: from the response cache when the model has one and the same request was answered
   before (`Answering.cached`), else by the provider, the answer through the output guardrails
   (`Answering.answer` for a whole answer, `Answering.frames` for a stream);
5. **accounted**: the key's tokens and spend settled, the answer cached (`Answering.ended`).

Everything is in memory: no call leaves the gateway but the provider call. A request that no rule,
cache or limit applies to gets no `Answering` at all (None), so policy costs it one look-up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from tfgw.config import CacheSettings, KeySettings
from tfgw.errors import GuardrailError, RateLimitError
from tfgw.policy import texts
from tfgw.policy.cache import Cached, StreamRecorder, pieces, request_key
from tfgw.policy.guardrails import OutputGuard, RuleSet, Verdict
from tfgw.policy.limits import Admission, Limits
from tfgw.policy.shared import SharedLimits
from tfgw.providers.base import Reply
from tfgw.tracing import semconv as sc
from tfgw.tracing.fold import StreamFold
from tfgw.tracing.otlp import KIND_INTERNAL, STATUS_ERROR
from tfgw.tracing.semconv import (
    BUDGET_DAY_REMAINING,
    BUDGET_MONTH_REMAINING,
    LIMIT_RPM_REMAINING,
    LIMIT_TPM_REMAINING,
)
from tfgw.tracing.spans import RequestTrace, Span, new_span_id

if TYPE_CHECKING:
    from tfgw.gateway.live import Runtime

__all__ = ["ZERO_USAGE", "Account", "Answering", "admit", "admit_and_guard", "rules_for"]

#: the usage a cached answer's span carries: no provider was called
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
JSON = "application/json"
SEP = b"\n\n"


def rules_for(rt: Runtime, body: Mapping[str, Any]) -> RuleSet | None:
    """The guardrails of the model a body asks for, or None (the common case: one dict look-up)."""
    model = body.get("model")
    return rt.guardrails.for_model(model) if rt.guardrails.rules and isinstance(model, str) else None


#: the fields of a body that bound the tokens of its answer, by API
MAX_TOKENS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


async def admit_and_guard(
    rt: Runtime, trace: RequestTrace, key: KeySettings | None, api: str, body: dict[str, Any]
) -> tuple[dict[str, Any], Account | None]:
    """The first two stages: the request admitted (`admit`), then its body through the input
    guardrails: the same body, a redacted copy, or `GuardrailError`, one `guardrail` span per rule
    evaluated. A chat body's texts are read once for both (the tpm estimate and
    the rules); a request neither applies to costs two look-ups."""
    limited = key is not None and key.name in rt.limited and rt.limits is not None
    rules = rules_for(rt, body)
    if rules is not None and not rules.input:
        rules = None
    if not limited and rules is None:
        return body, None
    plain = texts.plain_texts(api, body) if rules is not None or (key is not None and key.tpm) else None
    account = await admit(rt, trace, key, api, body, plain) if limited else None
    if rules is not None:
        body = _guarded(trace, rules, api, body, plain)
    return body, account


async def admit(
    rt: Runtime,
    trace: RequestTrace,
    key: KeySettings | None,
    api: str,
    body: Mapping[str, Any],
    plain: list[str] | None = None,
) -> Account | None:
    """Count the request against its key's limits and budgets (429 when it is over one, with
    `Retry-After`), or None when the key has none; the decision and what remains go on `auth`.
    With a NATS bus they are counted with every other gateway's (`tfgw.policy.shared`). `plain`:
    the body's `texts.plain_texts`, when read already."""
    limits = rt.limits
    if key is None or limits is None or key.name not in rt.limited:
        return None
    spans = trace.spans  # `authenticate` made `auth` right after the root
    span = (
        spans[1] if len(spans) > 1 and spans[1].name == "auth" else next(s for s in spans if s.name == "auth")
    )
    estimate = _estimate(api, body, plain) if key.tpm else 0
    shared = rt.shared
    try:
        if shared is None:
            admission = limits.admit(key, estimate)
        else:
            admission = await shared.admit(key, estimate)
    except RateLimitError as exc:
        span.attributes[sc.AUTH_OUTCOME] = "over_budget" if exc.code == "budget_exceeded" else "rate_limited"
        span.attributes[sc.LIMIT_REFUSED] = exc.limit
        span.fail(exc)
        span.end = span.events[-1].time  # `auth` was closed before the limits: it lasts to the refusal
        raise
    account = Account(limits if shared is None else shared, admission, span)
    trace.at_finish = account.settle  # a request that ends without an answer: no tokens, no cost
    return account


def _estimate(api: str, body: Mapping[str, Any], plain: list[str] | None = None) -> int:
    """The tokens a request may use, before it is answered: its text at four characters a token,
    and the most it lets the answer have."""
    found = plain if plain is not None else texts.plain_texts(api, body)
    chars = sum(map(len, found if found is not None else texts.request_texts(api, body)))
    if _MAX_TOKENS.isdisjoint(body):
        return chars // 4
    for name in MAX_TOKENS:
        if isinstance(most := body.get(name), int):
            return chars // 4 + most
    return chars // 4


_MAX_TOKENS = frozenset(MAX_TOKENS)


class Account:
    """An admitted request's limits and budgets: settled once, with the tokens and the cost of its
    answer, or with none when the request ends without one (blocked, refused, failed: when its
    trace finishes), what remains then written on the `auth` span."""

    __slots__ = ("admission", "limits", "span")

    def __init__(self, limits: Limits | SharedLimits, admission: Admission, span: Span) -> None:
        self.limits, self.admission, self.span = limits, admission, span

    def settle(self, usage: Any = None, price: Any = None) -> None:
        a = self.admission
        if a.settled:
            return
        tokens = cost = 0
        if type(usage) is dict or isinstance(usage, Mapping):
            prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
            tokens = usage.get("total_tokens") or prompt + completion
            if price is not None:
                cost = (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6
        self.limits.settle(a, int(tokens), cost)
        self.record()

    def record(self) -> None:
        """Each configured limit and budget, and what remains of it, on `auth` (once, settled),
        written as OTLP `KeyValue`s: the key's limits encoded once (`Rules.encoded`), what remains
        here (an int, or for a budget a float: what `otlp.attributes` would write)."""
        a = self.admission
        rpm, tpm, day, month = a.rules.encoded  # None where not configured
        rpm_left, tpm_left, day_left, month_left = a.remaining()
        out: list[dict[str, Any]] = []
        if rpm is not None:
            out += rpm, {"key": LIMIT_RPM_REMAINING, "value": {"intValue": str(rpm_left)}}
        if tpm is not None:
            out += tpm, {"key": LIMIT_TPM_REMAINING, "value": {"intValue": str(tpm_left)}}
        if day is not None:
            out += day, {"key": BUDGET_DAY_REMAINING, "value": {"doubleValue": day_left}}
        if month is not None:
            out += month, {"key": BUDGET_MONTH_REMAINING, "value": {"doubleValue": month_left}}
        self.span.encoded = out


def _guarded(
    trace: RequestTrace, rules: RuleSet, api: str, body: dict[str, Any], plain: list[str] | None
) -> dict[str, Any]:
    start = time.time_ns()
    try:
        body, verdicts = rules.check_input(api, body, plain)
    except GuardrailError as exc:
        verdict_spans(trace, exc.verdicts, start)
        raise
    verdict_spans(trace, verdicts, start)
    return body


def verdict_spans(
    trace: RequestTrace, verdicts: Iterable[Verdict], start: int, parent: Span | None = None
) -> None:
    """A `guardrail` span (OpenInference kind GUARDRAIL) for each verdict: the rule, the stage, the
    action, the outcome, how many matches and of which patterns; never the matched text."""
    end = time.time_ns()
    parent_id, spans = (parent or trace.root).span_id, trace.spans
    for verdict in verdicts:
        name = f"guardrail {verdict.rule}"
        if verdict.attributes is not None:  # a pass: the rule's attributes, encoded once
            spans.append(Span(name, KIND_INTERNAL, new_span_id(), parent_id, start, end, verdict.attributes))
            continue
        span = Span(name, KIND_INTERNAL, new_span_id(), parent_id, start, end)
        spans.append(span)
        span.attributes = a = {
            sc.OI_SPAN_KIND: "GUARDRAIL",
            sc.GUARDRAIL_NAME: verdict.rule,
            sc.GUARDRAIL_STAGE: verdict.stage,
            sc.GUARDRAIL_ACTION: verdict.action,
            sc.GUARDRAIL_OUTCOME: verdict.outcome,
            sc.GUARDRAIL_MATCHES: verdict.matches,
        }
        if verdict.patterns:
            a[sc.GUARDRAIL_PATTERNS] = list(verdict.patterns)
        if verdict.outcome == "blocked":
            span.status, span.message = STATUS_ERROR, f"blocked by guardrail {verdict.rule!r}"
            a[sc.ERROR_TYPE] = GuardrailError.code


class Answering:
    """The policy of one request from its provider call on: the output rules of its model, its
    cache entry (looked up, then stored), and what the trace says of both."""

    __slots__ = ("api", "cache", "hit", "key", "recorder", "rt", "rules", "trace", "ttl")

    def __init__(
        self,
        rt: Runtime,
        trace: RequestTrace,
        api: str,
        rules: RuleSet | None,
        cache: CacheSettings | None,
        key: bytes | None,
        bypass: bool,
    ) -> None:
        self.rt, self.trace, self.api = rt, trace, api
        self.rules = rules if rules is not None and rules.output else None
        self.cache, self.key = cache, key
        self.ttl = cache.ttl if cache is not None else 0.0
        self.hit: Cached | None = None
        self.recorder: StreamRecorder | None = None
        if key is not None:
            self.hit = None if bypass else rt.cache.get(key)
            trace.root.attributes[sc.CACHE_HIT] = self.hit is not None

    @classmethod
    def of(
        cls,
        rt: Runtime,
        trace: RequestTrace,
        api: str,
        body: Mapping[str, Any],
        key: KeySettings | None,
        headers: Mapping[str, str],
    ) -> Answering | None:
        """The request's policy after routing, or None when no output rule and no cache applies."""
        rules = rules_for(rt, body) if api != "embeddings" else None  # embeddings answer no text
        alias = rt.settings.models.get(body.get("model"))  # type: ignore[arg-type]
        cache = alias.cache if alias is not None else None
        if cache is None and (rules is None or not rules.output):
            return None
        cache_key = request_key(api, body, key.name if key else None, cache) if cache is not None else None
        bypass = "no-cache" in headers.get("cache-control", "")
        return cls(rt, trace, api, rules, cache, cache_key, bypass)

    # -- a whole answer -------------------------------------------------------------------------

    def answer(self, span: Span, reply: Reply) -> Reply:
        """The provider's whole answer through the output rules (a redacted answer, or
        `GuardrailError` with the span's answer redacted), then cached."""
        if self.rules is not None:
            start = time.time_ns()
            view = self._redacted_view(reply.data)
            assert span.llm is not None
            span.llm.response = view
            try:
                answer, verdicts = self.rules.check_output(self.api, orjson.loads(reply.body))
            except GuardrailError as exc:
                verdict_spans(self.trace, exc.verdicts, start)
                raise
            verdict_spans(self.trace, verdicts, start)
            body = reply.body if all(v.outcome == "pass" for v in verdicts) else orjson.dumps(answer)
            reply = Reply(body, view)
        if self.key is not None:
            self._store(reply.body, False, reply.data, span)
        return reply

    # -- a stream -------------------------------------------------------------------------------

    def stream_guard(self) -> StreamPolicy | None:
        """What a stream's frames go through on their way out, or None."""
        guard = self.rules.stream(self.api) if self.rules is not None else None
        if self.key is not None:
            self.recorder = StreamRecorder(self.rt.cache.entry_limit)
        if guard is None and self.recorder is None:
            return None
        return StreamPolicy(self, guard)

    # -- from the cache -------------------------------------------------------------------------

    def cached_view(self) -> dict[str, Any]:
        assert self.hit is not None
        view = dict(self.hit.view) if self.hit.view is not None else {"choices": []}
        view["usage"] = ZERO_USAGE
        return view

    async def replay(self, on_end: Callable[[], None]) -> AsyncIterator[bytes]:
        """A cached stream sent again, in event-aligned pieces; `on_end()` once it went out (or not)."""
        assert self.hit is not None
        try:
            for piece in pieces(self.hit.body):
                yield piece
        finally:
            on_end()

    # -- inside ---------------------------------------------------------------------------------

    def _redacted_view(self, view: Mapping[str, Any]) -> dict[str, Any]:
        """The chat-completions view of an answer (what the span holds) with every output rule's
        matches redacted, blocking ones too: a span never holds what a rule looks for."""
        assert self.rules is not None
        out = dict(view)
        for rule in self.rules.output:
            out = texts.rewrite_answer("chat", out, rule.redact)
        return out

    def _store(self, body: bytes, stream: bool, view: Mapping[str, Any], span: Span) -> None:
        assert self.key is not None and span.llm is not None
        call = span.llm
        entry = Cached(
            body=body,
            stream=stream,
            content_type="text/event-stream" if stream else JSON,
            usage=view.get("usage"),
            model=call.model,
            provider=call.provider,
            stored_at=time.time(),
            view=view,
        )
        self.rt.cache.put(self.key, entry, self.ttl)


class StreamPolicy:
    """A stream's frames through the output rules (`OutputGuard`, fed whole events) and into the
    cache's recorder; `ended` when the stream ended as it should."""

    __slots__ = ("answering", "guard", "rest")

    def __init__(self, answering: Answering, guard: OutputGuard | None) -> None:
        self.answering = answering
        self.guard = guard
        self.rest = b""

    def frames(self, data: bytes) -> bytes:
        """What of `data` goes out now: its whole events, guarded (the rest waits for the next)."""
        if self.guard is not None:
            data = self.rest + data
            cut = data.rfind(SEP) + 2
            if cut == 1:
                self.rest = data
                return b""
            self.rest = data[cut:]
            data = self.guard.feed(data[:cut])
        recorder = self.answering.recorder
        if recorder is not None and data:
            recorder.add(data)
        return data

    def flush(self) -> bytes:
        """What was held when the upstream ended (an event without its blank line)."""
        rest, self.rest = self.rest, b""
        out = self.guard.feed(rest) if self.guard is not None and rest else rest
        if out and self.answering.recorder is not None:
            self.answering.recorder.add(out)
        return out

    def ended(self, span: Span, fold: StreamFold, ok: bool) -> None:
        """The stream is over: the span's answer redacted, the verdicts on the trace, the stream
        cached if it ended as it should."""
        answering = self.answering
        call = span.llm
        assert call is not None
        view = fold.completion()
        if answering.rules is not None:
            view = answering._redacted_view(view)
        call.response = view  # what the encoder would fold it to again: the fold is final now
        if self.guard is not None:
            verdict_spans(answering.trace, self.guard.verdicts, span.start)
        recorder = answering.recorder
        if ok and recorder is not None and answering.key is not None:
            entry = recorder.result(
                usage=view.get("usage"), model=call.model, provider=call.provider, view=view
            )
            if entry is not None:
                answering.rt.cache.put(answering.key, entry, answering.ttl)
