"""The traced POST routes on bare ASGI, in front of the Quart app, which serves everything else.

Quart serves a request with two tasks (one reading the body and waiting for the client to go away,
one handling it, raced by `asyncio.wait`), an app and a request context, its URL map, its
before- and after-request hooks and signals: ~540,000 instructions a request under callgrind, a
fifth of a traced chat completion (bench/README.md, "Where tfgw's excess goes"). The routes that
carry the load (`stages.traced_post`: chat completions, embeddings, `/v1/messages` and its
`count_tokens`, `/v1/responses`) are served here instead, by the same handlers: the request read
from the scope (`incoming.Incoming`), the handler awaited in the connection's own task, and its
`Response` sent as Quart sends one, with the same error answers (`app.error_response`) and trace
headers (`app.with_trace_headers`). A client that goes away once its body has come cancels the
request, as in Quart (`Incoming` watches for it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from quart import Quart, Response
from quart.utils import encode_headers
from quart.wrappers.response import DataBody

from tfgw.gateway.app import error_response, with_trace_headers
from tfgw.gateway.incoming import Incoming, Receive
from tfgw.gateway.stages import Handler, serving

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tfgw.gateway.app import GatewayState

    Send = Callable[[dict[str, Any]], Awaitable[None]]

__all__ = ["Front"]


class Front:
    """The ASGI app `tfgw serve` runs: `state.routes` here, the rest (probes, /metrics, /v1/models,
    the lifespan) through to `app`."""

    def __init__(self, app: Quart, state: GatewayState) -> None:
        self.app = app
        self.state = state
        server = state.initial.server  # as the app's MAX_CONTENT_LENGTH and BODY_TIMEOUT
        self.max_body, self.body_timeout = server.max_body_bytes, server.body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.state.routes.get(scope["path"])
            if handler is not None:
                await self.serve(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    async def serve(self, handler: Handler, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        incoming = Incoming(scope, receive, self.max_body, self.body_timeout)
        serving(incoming)
        try:
            try:
                response = await handler()
            except Exception as exc:
                response = error_response(exc, self.state.initial)  # the app's handlers' settings
            await _send(with_trace_headers(response), send)
        except asyncio.CancelledError:
            if not incoming.gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the request's own cancellation: the connection's task goes on
        finally:
            incoming.answered()


async def _send(response: Response, send: Send) -> None:
    """`response` as Quart's `ASGIHTTPConnection` sends one; a whole body in one message."""
    headers = encode_headers(response.headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    body = response.response
    if type(body) is DataBody:
        await send({"type": "http.response.body", "body": body.data, "more_body": False})
        return
    async with body as chunks:
        async for data in chunks:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
