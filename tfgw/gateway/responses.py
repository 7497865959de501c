"""OpenAI's Responses API: `POST /v1/responses` (JSON and SSE), to any model.

Every provider takes chat-completions calls, so a Responses request is translated to one and its
answer back (`tfgw.formats.responses`); the Anthropic adapter takes it on from there. The span is
made of the chat-completions form of the call, with the Responses bodies as `input.value` and
`output.value`. Errors are OpenAI's shape, as on the other OpenAI routes (docs/http.md, "OpenAI
Responses").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from quart import Quart, Response

from tfgw.formats import responses as translate
from tfgw.gateway import fields
from tfgw.gateway.policy import admit_and_guard
from tfgw.gateway.stages import (
    RESPONSES,
    ChatForm,
    answer,
    authenticate,
    request_body,
    request_span,
    resolve,
    traced_post,
)
from tfgw.providers.base import Call, Provider, Reply, Stream, takes_responses

if TYPE_CHECKING:
    from tfgw.gateway.app import GatewayState

__all__ = ["PATH", "routes"]

PATH = "/v1/responses"


def routes(app: Quart, state: GatewayState) -> None:
    @traced_post(app, state.routes, PATH)
    async def create_response() -> Response:
        rt, trace = state.begin(f"POST {PATH}")
        with request_span(trace):
            key = authenticate(rt, trace)
            body = await request_body(rt, trace)
            fields.check(body, fields.RESPONSES, fields.responses_parts)
            body, account = await admit_and_guard(rt, trace, key, "responses", body)
            chat = _Responses(body, translate.to_chat_request)
            attempts = resolve(rt, trace, body)
            return await answer(
                rt, trace, key, attempts, body, chat, wire=RESPONSES, view=chat.view, account=account
            )


class _Responses(ChatForm):
    """A provider with the Responses API takes the body as it is; any other, its chat form."""

    async def create(self, provider: Provider, call: Call) -> Reply:
        if takes_responses(provider):
            return await provider.responses(call)
        reply = await provider.chat(self.chat_call(call))
        return Reply(orjson.dumps(translate.to_response(reply.data, self.body)), reply.data)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        if takes_responses(provider):
            return await provider.open_responses(call)
        stream = await provider.open_stream(self.chat_call(call))
        return translate.ResponsesStream(stream, self.body)
