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

from tfgw.formats import responses as translate
from tfgw.gateway.stages import (
    authenticate,
    call_provider,
    relay,
    request_body,
    request_span,
    resolve,
    respond,
    total_tokens,
)
from tfgw.providers.base import Call, Provider, Reply, Stream

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
                    state, trace, attempts, body, "chat", chat.open_stream, view=chat.request
                )
                frames = relay(state, trace, span, stream, key)
                return Response(frames, content_type="text/event-stream", headers=sse_headers)
            send = chat.create
            span, reply = await call_provider(state, trace, attempts, body, "chat", send, view=chat.request)
            state.keys.spend_tokens(key, total_tokens(reply.data.get("usage")))
            return respond(trace, span, reply)


class _Translation:
    """One request's chat-completions form, and the provider calls made with it."""

    __slots__ = ("body", "request")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.request = translate.to_chat_request(body)

    async def create(self, provider: Provider, call: Call) -> Reply:
        reply = await provider.chat(replace(call, body=self.request))
        return Reply(orjson.dumps(translate.to_response(reply.data, self.body)), reply.data)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        stream = await provider.open_stream(replace(call, body=self.request))
        return translate.ResponsesStream(stream, self.body)
