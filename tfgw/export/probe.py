"""`tfgw otel test`: one synthetic LLM trace sent straight to a target, and the backend's verdict.

The trace is built by the gateway's own span code (a chat call with usage, cost and a streamed
answer), so what is tested is what the gateway sends, through the same encoder, sender and retry
rules as the exporter. Retryable failures are retried until `timeout`; the verdict is accepted only
if every span was.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from tfgw.config import Price
from tfgw.export import encode, send
from tfgw.export.targets import ResolvedTarget
from tfgw.retry import Backoff
from tfgw.tracing import semconv as sc
from tfgw.tracing.encode import Encoder
from tfgw.tracing.spans import LlmCall, RequestTrace

__all__ = ["ProbeResult", "probe", "synthetic_line"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    accepted: bool
    spans: int
    status: str | None
    message: str | None
    latency_ms: float  # the last attempt's
    attempts: int
    trace_id: str
    #: accepted, but the answer was not an OTLP one (`send.SendResult.warning`)
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "spans": self.spans,
            "status": self.status,
            "message": self.message,
            "latency_ms": round(self.latency_ms, 1),
            "attempts": self.attempts,
            "trace_id": self.trace_id,
            "warning": self.warning,
        }


def synthetic_line(project: str) -> tuple[str, dict[str, Any]]:
    """`(trace id, trace file line)` of one made-up chat request, as the gateway records one."""
    trace = RequestTrace("POST /v1/chat/completions", lambda _: None)
    root = trace.root.attributes
    root.update(
        {sc.HTTP_METHOD: "POST", sc.URL_PATH: "/v1/chat/completions", sc.MODEL_REQUESTED: "tfgw-test"}
    )
    trace.child("auth").attributes[sc.AUTH_OUTCOME] = "ok"
    body = {"model": "tfgw-test", "messages": [{"role": "user", "content": "Is this trace arriving?"}]}
    span = trace.llm(
        LlmCall(
            operation="chat",
            provider="tfgw-test",
            provider_kind="openai",
            base_url="https://api.openai.com/v1",
            model="gpt-4o-mini",
            alias="tfgw-test",
            attempt=1,
            request=body,
            price=Price(input_per_mtok=0.15, output_per_mtok=0.6),
            response={
                "id": "chatcmpl-tfgw-otel-test",
                "model": "gpt-4o-mini",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Yes."}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
            },
        )
    )
    span.close()
    root[sc.HTTP_STATUS] = 200
    trace.finish()
    return trace.trace_id, Encoder(project).line(trace)


def probe(target: ResolvedTarget, timeout: float = 30.0) -> ProbeResult:
    target = dataclasses.replace(target, timeout=min(target.timeout, timeout))
    trace_id, line = synthetic_line(target.project)
    (batch,) = list(encode.batches([encode.prepare(line, target)], target.protocol))
    sender = send.sender_for(target)
    try:
        delivery = send.deliver(sender, batch, Backoff(cap=5.0), deadline=time.monotonic() + timeout)
    finally:
        sender.close()
    result, attempts = delivery.result, delivery.attempts
    accepted = result.outcome == "accepted" and result.rejected_spans == 0
    message = result.message
    if result.outcome == "retry":
        message = f"still failing after {timeout:g} s: {message}"
    elif result.outcome == "accepted" and result.rejected_spans:
        message = f"{result.rejected_spans} of {batch.spans} spans rejected: {message}"
    return ProbeResult(
        accepted, batch.spans, result.status, message, result.latency_ms, attempts, trace_id, result.warning
    )
