"""OpenAI's Responses API: `POST /v1/responses` (JSON and SSE), to any model.

Every provider takes chat-completions calls, so a Responses request is translated to one and its
answer back (`tfgw.formats.responses`); the Anthropic adapter takes it on from there. The span is
made of the chat-completions form of the call, with the Responses bodies as `input.value` and
`output.value`. Errors are OpenAI's shape, as on the other OpenAI routes (docs/http.md, "OpenAI
Responses").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from quart import Quart, Response

from tfgw.errors import BadRequestError
from tfgw.formats import responses as translate
from tfgw.gateway.stages import (
    RESPONSES,
    authenticate,
    call_provider,
    relay,
    request_body,
    request_span,
    resolve,
    respond,
    total_tokens,
)
from tfgw.providers.base import Call, Provider, Reply, Stream, takes_responses

if TYPE_CHECKING:
    from tfgw.gateway.app import GatewayState

__all__ = ["PATH", "routes"]

PATH = "/v1/responses"


def routes(app: Quart, state: GatewayState, sse_headers: dict[str, str]) -> None:
    @app.post(PATH)
    async def create_response() -> Response:
        trace = state.begin(f"POST {PATH}")
        with request_span(trace):
            key = authenticate(state, trace)
            body = await request_body(state, trace)
            chat = _Translation(body)
            attempts = resolve(state, trace, body)
            if body.get("stream"):
                span, stream = await call_provider(
                    state, trace, attempts, body, "chat", chat.open_stream, view=chat.view
                )
                frames = relay(state, trace, span, stream, key, RESPONSES)
                return Response(frames, content_type="text/event-stream", headers=sse_headers)
            send = chat.create
            span, reply = await call_provider(state, trace, attempts, body, "chat", send, view=chat.view)
            state.keys.spend_tokens(key, total_tokens(reply.data.get("usage")))
            return respond(trace, span, reply)


class _Translation:
    """One request's chat-completions form: what a provider without the Responses API is called
    with, and what the span is made of. What only a provider with the Responses API can take
    (previous_response_id, built-in tools) is refused only when the call reaches one without it."""

    __slots__ = ("body", "error", "request", "view")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.error: BadRequestError | None = None
        try:
            self.request = self.view = translate.to_chat_request(body)
        except BadRequestError as exc:  # malformed is refused here; the rest, by a chat provider
            self.view = translate.to_chat_request(body, strict=False)
            self.request, self.error = self.view, exc

    async def create(self, provider: Provider, call: Call) -> Reply:
        if takes_responses(provider):
            return await provider.responses(call)
        reply = await provider.chat(self._chat_call(call))
        return Reply(orjson.dumps(translate.to_response(reply.data, self.body)), reply.data)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        if takes_responses(provider):
            return await provider.open_responses(call)
        stream = await provider.open_stream(self._chat_call(call))
        return translate.ResponsesStream(stream, self.body)

    def _chat_call(self, call: Call) -> Call:
        if self.error is not None:
            raise self.error
        return replace(call, body=self.request)
