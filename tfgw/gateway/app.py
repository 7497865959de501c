"""The Quart app factory and the OpenAI-compatible routes.

Handlers are thin: authenticate, read the body, resolve the model, call through the router, send
the answer. Every `TfgwError` (and every HTTP error Quart raises itself) leaves through one handler
as OpenAI's error shape.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from tfgw import __version__
from tfgw.config import Settings
from tfgw.errors import BadRequestError, PayloadTooLargeError, TfgwError
from tfgw.gateway.auth import KeyRing
from tfgw.gateway.routing import Router
from tfgw.providers import Provider, Stream, build_providers, create_session

__all__ = ["GatewayState", "create_app"]

log = logging.getLogger("tfgw.gateway")

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class GatewayState:
    """Everything a request needs; made by the app factory, filled in when serving starts."""

    settings: Settings
    keys: KeyRing
    session: aiohttp.ClientSession | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    router: Router | None = None

    async def start(self) -> None:
        self.session = create_session()
        self.providers = build_providers(self.settings.providers, self.session, self.settings.secrets())
        self.router = Router(self.settings, self.providers)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()


def create_app(settings: Settings) -> Quart:
    app = Quart("tfgw")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.server.max_body_bytes,
        RESPONSE_TIMEOUT=None,  # streams last as long as the provider streams
        BODY_TIMEOUT=60,
    )
    state = GatewayState(settings, KeyRing(settings.keys))
    app.extensions["tfgw"] = state
    app.before_serving(state.start)
    app.after_serving(state.stop)

    @app.errorhandler(TfgwError)
    async def tfgw_error(exc: TfgwError) -> Response:
        return Response(exc.body(), status=exc.status, headers=exc.headers(), content_type=JSON)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return await tfgw_error(_too_large(settings))
        error = TfgwError(exc.description or exc.name)
        body = orjson.loads(error.body())
        body["error"].update(type="invalid_request_error", code=exc.name.lower().replace(" ", "_"))
        return Response(orjson.dumps(body), status=exc.code or 500, content_type=JSON)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while serving %s %s", request.method, request.path)
        return await tfgw_error(TfgwError("The gateway hit an unexpected error; see its log."))

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = state.router is not None
        body = {
            "status": "ready" if ready else "starting",
            "version": __version__,
            "models": len(settings.models),
        }
        return Response(orjson.dumps(body), status=200 if ready else 503, content_type=JSON)

    @app.get("/v1/models")
    async def models() -> Response:
        state.keys.authenticate(request.headers.get("authorization"))
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "tfgw"} for name in settings.models]
        return Response(orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        key = state.keys.authenticate(request.headers.get("authorization"))
        body = await _json_body(settings)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise BadRequestError("'messages' must be a non-empty array", param="messages")
        assert state.router is not None
        attempts = state.router.resolve(body.get("model"))
        if body.get("stream"):
            stream = await state.router.call(attempts, body, lambda p, c: p.open_stream(c))
            return Response(_relay(stream), content_type="text/event-stream", headers=SSE_HEADERS)
        reply = await state.router.call(attempts, body, lambda p, c: p.chat(c))
        state.keys.spend_tokens(key, _total_tokens(reply.data))
        return Response(reply.body, content_type=JSON)

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        key = state.keys.authenticate(request.headers.get("authorization"))
        body = await _json_body(settings)
        if "input" not in body:
            raise BadRequestError("'input' is required", param="input")
        assert state.router is not None
        attempts = state.router.resolve(body.get("model"))
        reply = await state.router.call(attempts, body, lambda p, c: p.embeddings(c))
        state.keys.spend_tokens(key, _total_tokens(reply.data))
        return Response(reply.body, content_type=JSON)

    return app


def _too_large(settings: Settings) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Request body is larger than the gateway's limit of {settings.server.max_body_bytes} bytes."
    )


async def _json_body(settings: Settings) -> dict[str, Any]:
    length = request.content_length
    if length is not None and length > settings.server.max_body_bytes:
        raise _too_large(settings)
    raw = await request.get_data(cache=False)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return body


async def _relay(stream: Stream) -> AsyncIterator[bytes]:
    """Send the provider's frames on as they come; a client that goes away closes the upstream."""
    try:
        async for frame in stream:
            yield frame
    except TfgwError as exc:
        # the status line is gone already: tell the client in the stream, as OpenAI does
        yield b"data: " + exc.body() + b"\n\n"
    finally:
        await stream.aclose()


def _total_tokens(data: dict[str, Any]) -> int:
    usage = data.get("usage")
    return int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
