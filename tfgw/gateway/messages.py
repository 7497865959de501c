"""Anthropic's Messages API: `POST /v1/messages` (JSON and SSE) and `/v1/messages/count_tokens`.

A model whose provider is Anthropic gets the client's body as it is (with the provider's model
name, and the client's `anthropic-version` and `anthropic-beta`), and the client gets the
provider's bytes back untouched, error events included. Any other provider is called with the
chat-completions form of the request and its answer translated back (`tfgw.formats.messages`).
Either way the span is made of the chat-completions view of the call, so it carries the same
attributes as a chat completion. Errors are Anthropic-shaped (docs/http.md, "Anthropic Messages").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from quart import Quart, Response

from tfgw.errors import BadRequestError
from tfgw.formats import messages as translate
from tfgw.formats.messages import MessagesStream
from tfgw.gateway import fields
from tfgw.gateway.policy import admit_and_guard
from tfgw.gateway.stages import (
    ANTHROPIC,
    JSON,
    ChatForm,
    answer,
    authenticate,
    client_headers,
    request_body,
    request_span,
    resolve,
    traced_post,
)
from tfgw.providers.base import Call, NativeMessages, Provider, Reply, Stream
from tfgw.tracing import semconv as sc
from tfgw.tracing.otlp import KIND_CLIENT

if TYPE_CHECKING:
    from tfgw.gateway.app import GatewayState

__all__ = ["PREFIX", "model_list", "routes"]

PREFIX = "/v1/messages"
#: the client's headers an Anthropic provider gets too
PASSED_ON = ("anthropic-version", "anthropic-beta")


def routes(app: Quart, state: GatewayState) -> None:
    @traced_post(app, state.routes, PREFIX)
    async def create_message() -> Response:
        rt, trace = state.begin(f"POST {PREFIX}")
        with request_span(trace):
            key = authenticate(rt, trace)
            body = await request_body(rt, trace)
            fields.check(body, fields.MESSAGES, fields.messages_parts)
            body, account = await admit_and_guard(rt, trace, key, "messages", body)
            chat = _Messages(body, translate.to_chat_request)
            attempts = resolve(rt, trace, body)
            return await answer(
                rt,
                trace,
                key,
                attempts,
                body,
                chat,
                wire=ANTHROPIC,
                view=chat.view,
                headers=_passed_on(),
                account=account,
            )

    @traced_post(app, state.routes, f"{PREFIX}/count_tokens")
    async def count_tokens() -> Response:
        rt, trace = state.begin(f"POST {PREFIX}/count_tokens")
        with request_span(trace):
            authenticate(rt, trace)
            body = await request_body(rt, trace)
            attempt = resolve(rt, trace, body)[0]
            provider = attempt.provider
            if not isinstance(provider, NativeMessages):
                raise BadRequestError(
                    f"model {body.get('model')!r} is served by provider {provider.name!r} (kind"
                    f" {provider.settings.kind!r}), which cannot count tokens: only anthropic providers can",
                    param="model",
                )
            span = trace.child(f"count_tokens {attempt.model}", KIND_CLIENT)
            try:
                reply = await provider.count_tokens(Call(attempt.model, body, attempt.timeout, _passed_on()))
            except BaseException as exc:
                span.fail(exc)
                raise
            finally:
                span.close()
            trace.root.attributes[sc.HTTP_STATUS] = 200
            trace.finish()
            return Response(reply.body, content_type=JSON)


class _Messages(ChatForm):
    """An Anthropic provider takes the body as it is; any other, its chat-completions form."""

    async def create(self, provider: Provider, call: Call) -> Reply:
        if isinstance(provider, NativeMessages):
            return await provider.messages(call)
        reply = await provider.chat(self.chat_call(call))
        message = translate.to_message(reply.data, call.model)
        return Reply(orjson.dumps(message), reply.data)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        if isinstance(provider, NativeMessages):
            return await provider.open_messages(call)
        return MessagesStream(await provider.open_stream(self.chat_call(call)), call.model)


def _passed_on() -> dict[str, str]:
    headers = client_headers()
    return {name: value for name in PASSED_ON if (value := headers.get(name))}


def model_list(names: list[str]) -> dict[str, Any]:
    """`GET /v1/models` as Anthropic's API answers it."""
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
        for name in names
    ]
    first, last = (names[0], names[-1]) if names else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}
