"""The Quart app factory, the probes and the OpenAI-compatible routes.

Handlers are thin: authenticate, read the body, resolve the model, call through the router, send
the answer (`tfgw.gateway.stages`). Every `TfgwError` (and every HTTP error Quart raises itself)
leaves through one handler, in the error shape of the API the route speaks: Anthropic's under
`/v1/messages` (`tfgw.gateway.messages`), OpenAI's everywhere else.

Each stage is its own span of the request's trace (docs/spans.md, "Spans of one request"): the root
SERVER span, `auth`, `model.resolve`, one CLIENT span per provider attempt and `stream`. Spans are
plain records here; after the answer the trace log encodes them on the event loop between
requests and its writer thread appends them to the log (`tfgw.tracing.log`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from quart import Quart, Response, g, request
from werkzeug.exceptions import HTTPException

from tfgw import __version__
from tfgw.config import Settings
from tfgw.errors import BadRequestError, TfgwError
from tfgw.formats.messages import ERROR_TYPES as ANTHROPIC_ERROR_TYPES
from tfgw.gateway import messages, responses
from tfgw.gateway.auth import KeyRing
from tfgw.gateway.routing import Router
from tfgw.gateway.stages import (
    ANTHROPIC,
    JSON,
    OPENAI,
    Wire,
    answer,
    authenticate,
    call_provider,
    client_headers,
    request_body,
    request_span,
    resolve,
    respond,
    too_large,
    total_tokens,
)
from tfgw.providers import Provider, Stream, build_providers, create_session
from tfgw.providers.base import Call, Reply
from tfgw.tracing import semconv as sc
from tfgw.tracing.exports import NO_EXPORTS, Exports
from tfgw.tracing.log import TraceLog
from tfgw.tracing.spans import RequestTrace

__all__ = ["GatewayState", "create_app"]

log = logging.getLogger("tfgw.gateway")


@dataclass(slots=True)
class GatewayState:
    """Everything a request needs; made by the app factory, filled in when serving starts."""

    settings: Settings
    keys: KeyRing
    session: aiohttp.ClientSession | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    router: Router | None = None
    trace_log: TraceLog | None = None
    #: the export targets, from `tfgw serve`: retention keeps what they have not had yet
    exports: Exports = NO_EXPORTS

    async def start(self) -> None:
        self.session = create_session()
        self.providers = build_providers(self.settings.providers, self.session, self.settings.secrets())
        self.router = Router(self.settings, self.providers)
        if self.settings.tracing.enabled:
            self.trace_log = TraceLog(self.settings.tracing, targets=self.exports.targets)
            self.trace_log.start()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.trace_log is not None:
            self.trace_log.close()

    def begin(self, name: str) -> RequestTrace:
        """The trace of the request being handled, with the caller's context from its headers."""
        headers = client_headers()
        trace = RequestTrace(name, self._sink, headers.get("traceparent"))
        g.tfgw_trace = trace
        root = trace.root.attributes
        root[sc.HTTP_METHOD] = request.method
        root[sc.URL_PATH] = request.path
        if session := headers.get("x-tfgw-session-id"):
            root[sc.SESSION_ID] = session
        if user := headers.get("x-tfgw-user-id"):
            root[sc.USER_ID] = user
        return trace

    def _sink(self, trace: RequestTrace) -> None:
        if self.trace_log is not None:
            self.trace_log.submit(trace)


def create_app(settings: Settings, *, exports: Exports = NO_EXPORTS) -> Quart:
    """The app for `settings`; `exports` is what `tfgw serve` made of the export targets (the names
    the trace log's retention respects, and their status for /readyz)."""
    app = Quart("tfgw")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.server.max_body_bytes,
        RESPONSE_TIMEOUT=None,  # streams last as long as the provider streams
        BODY_TIMEOUT=60,
    )
    state = GatewayState(settings, KeyRing(settings.keys), exports=exports)
    app.extensions["tfgw"] = state
    app.before_serving(state.start)
    app.after_serving(state.stop)
    _error_handlers(app, settings)
    _probe_routes(app, state)
    _openai_routes(app, state)
    messages.routes(app, state)
    responses.routes(app, state)
    return app


def wire() -> Wire:
    """The API the request being handled speaks, by its path."""
    return ANTHROPIC if request.path.startswith(messages.PREFIX) else OPENAI


def _error_handlers(app: Quart, settings: Settings) -> None:
    """Every error leaves in the route's API's error shape; every answer to a traced request names
    its trace."""

    @app.errorhandler(TfgwError)
    async def tfgw_error(exc: TfgwError) -> Response:
        body = wire().error_body(exc)
        return Response(body, status=exc.status, headers=exc.headers(), content_type=JSON)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return await tfgw_error(too_large(settings))
        status, message = exc.code or 500, exc.description or exc.name
        if wire() is ANTHROPIC:
            kind = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")
            body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
            return Response(body, status=status, content_type=JSON)
        code = exc.name.lower().replace(" ", "_")
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        return Response(orjson.dumps({"error": error}), status=status, content_type=JSON)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while serving %s %s", request.method, request.path)
        return await tfgw_error(TfgwError("The gateway hit an unexpected error; see its log."))

    @app.after_request
    async def trace_headers(response: Response) -> Response:
        trace: RequestTrace | None = g.get("tfgw_trace")
        if trace is not None:
            response.headers["x-tfgw-trace-id"] = trace.trace_id
            response.headers["x-tfgw-overhead-ms"] = f"{trace.overhead_ms():.3f}"
        return response


def _probe_routes(app: Quart, state: GatewayState) -> None:
    """/healthz, /readyz and /v1/models: untraced."""
    settings = state.settings

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = state.router is not None
        body: dict[str, Any] = {
            "status": "ready" if ready else "starting",
            "version": __version__,
            "models": len(settings.models),
        }
        if state.trace_log is not None:
            body["tracing"] = state.trace_log.stats.as_dict()
        if state.exports.targets:
            body["export"] = state.exports.status()
        return Response(orjson.dumps(body), status=200 if ready else 503, content_type=JSON)

    @app.get("/v1/models")
    async def models() -> Response:
        headers = client_headers()
        state.keys.authenticate(headers.get("authorization"), api_key=headers.get("x-api-key"))
        if "anthropic-version" in headers:  # Anthropic's clients list models in their own shape
            return Response(orjson.dumps(messages.model_list(list(settings.models))), content_type=JSON)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "tfgw"} for name in settings.models]
        return Response(orjson.dumps({"object": "list", "data": data}), content_type=JSON)


def _openai_routes(app: Quart, state: GatewayState) -> None:
    """The traced routes: chat completions (JSON or SSE) and embeddings."""

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        trace = state.begin("POST /v1/chat/completions")
        with request_span(trace):
            key = authenticate(state, trace)
            body = await request_body(state, trace)
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise BadRequestError("'messages' must be a non-empty array", param="messages")
            attempts = resolve(state, trace, body)
            return await answer(state, trace, key, attempts, body, _CHAT)

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        trace = state.begin("POST /v1/embeddings")
        with request_span(trace):
            key = authenticate(state, trace)
            body = await request_body(state, trace)
            if "input" not in body:
                raise BadRequestError("'input' is required", param="input")
            attempts = resolve(state, trace, body)
            span, reply = await call_provider(state, trace, attempts, body, "embeddings", _embed)
            state.keys.spend_tokens(key, total_tokens(reply.data.get("usage")))
            return respond(trace, span, reply)


class _Chat:
    """Chat completions go to every provider as they are."""

    async def create(self, provider: Provider, call: Call) -> Reply:
        return await provider.chat(call)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        return await provider.open_stream(call)


_CHAT = _Chat()


async def _embed(provider: Provider, call: Call) -> Reply:
    return await provider.embeddings(call)
