"""The Quart app factory and the OpenAI-compatible routes.

Handlers are thin: authenticate, read the body, resolve the model, call through the router, send
the answer. Every `TfgwError` (and every HTTP error Quart raises itself) leaves through one handler
as OpenAI's error shape.

Each stage is its own span of the request's trace (docs/spans.md, "Spans of one request"): the root
SERVER span, `auth`, `model.resolve`, one CLIENT span per provider attempt and `stream`. Spans are
plain records here; after the answer the trace log encodes them on the event loop between
requests and its writer thread appends them to the log (`tfgw.tracing.log`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from quart import Quart, Response, g, request
from werkzeug.exceptions import HTTPException

from tfgw import __version__
from tfgw.config import KeySettings, Settings
from tfgw.errors import BadRequestError, PayloadTooLargeError, TfgwError
from tfgw.gateway.auth import KeyRing
from tfgw.gateway.routing import Attempt, Router, Try
from tfgw.providers import Provider, Stream, build_providers, create_session
from tfgw.providers.base import Call, Reply
from tfgw.tracing import semconv as sc
from tfgw.tracing.exports import NO_EXPORTS, Exports
from tfgw.tracing.fold import StreamFold
from tfgw.tracing.log import TraceLog
from tfgw.tracing.spans import Event, LlmCall, RequestTrace, Span, error_type

__all__ = ["GatewayState", "create_app"]

log = logging.getLogger("tfgw.gateway")

T = TypeVar("T")

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
        headers = request.headers
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
    return app


def _error_handlers(app: Quart, settings: Settings) -> None:
    """Every error leaves as OpenAI's error shape; every answer to a traced request names its trace."""

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
        state.keys.authenticate(request.headers.get("authorization"))
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "tfgw"} for name in settings.models]
        return Response(orjson.dumps({"object": "list", "data": data}), content_type=JSON)


def _openai_routes(app: Quart, state: GatewayState) -> None:
    """The traced routes: chat completions (JSON or SSE) and embeddings."""

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        trace = state.begin("POST /v1/chat/completions")
        with _request_span(trace):
            key = _authenticate(state, trace)
            body = await _request_body(state, trace)
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise BadRequestError("'messages' must be a non-empty array", param="messages")
            attempts = _resolve(state, trace, body)
            if body.get("stream"):
                span, stream = await _call_provider(state, trace, attempts, body, "chat", _open_stream)
                relay = _relay(state, trace, span, stream, key)
                return Response(relay, content_type="text/event-stream", headers=SSE_HEADERS)
            span, reply = await _call_provider(state, trace, attempts, body, "chat", _chat)
            state.keys.spend_tokens(key, _total_tokens(reply.data.get("usage")))
            return _respond(trace, span, reply)

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        trace = state.begin("POST /v1/embeddings")
        with _request_span(trace):
            key = _authenticate(state, trace)
            body = await _request_body(state, trace)
            if "input" not in body:
                raise BadRequestError("'input' is required", param="input")
            attempts = _resolve(state, trace, body)
            span, reply = await _call_provider(state, trace, attempts, body, "embeddings", _embed)
            state.keys.spend_tokens(key, _total_tokens(reply.data.get("usage")))
            return _respond(trace, span, reply)


# -- the stages of one request, each its own span -------------------------------------------------


class _request_span:
    """The root span's outcome: a handler that raises ends the trace with the error's status; one
    that returns a JSON answer has ended it in `_respond`; a stream ends it when the stream ends."""

    __slots__ = ("trace",)

    def __init__(self, trace: RequestTrace) -> None:
        self.trace = trace

    def __enter__(self) -> RequestTrace:
        return self.trace

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        root = self.trace.root
        if isinstance(exc, TfgwError):
            root.attributes[sc.HTTP_STATUS] = exc.status
        elif isinstance(exc, HTTPException):
            root.attributes[sc.HTTP_STATUS] = exc.code or 500
        elif isinstance(exc, Exception):
            root.attributes[sc.HTTP_STATUS] = 500
        else:  # cancelled: the client went away before the answer
            root.attributes[sc.STREAM_CANCELLED] = True
        root.fail(exc)
        self.trace.finish()


def _authenticate(state: GatewayState, trace: RequestTrace) -> KeySettings | None:
    if metadata := request.headers.get("x-tfgw-metadata"):
        trace.root.attributes[sc.METADATA] = _metadata(metadata)
    span = trace.child("auth")
    try:
        key = state.keys.authenticate(request.headers.get("authorization"))
    except TfgwError as exc:
        span.attributes[sc.AUTH_OUTCOME] = "rate_limited" if exc.status == 429 else "rejected"
        span.fail(exc)
        raise
    finally:
        span.close()
    if key is None:
        span.attributes[sc.AUTH_OUTCOME] = "open"  # no keys configured: loopback only
    else:
        span.attributes[sc.AUTH_OUTCOME] = "ok"
        span.attributes[sc.KEY_NAME] = trace.root.attributes[sc.KEY_NAME] = key.name
    return key


def _resolve(state: GatewayState, trace: RequestTrace, body: dict[str, Any]) -> list[Attempt]:
    assert state.router is not None
    span = trace.child("model.resolve")
    requested = body.get("model")
    if isinstance(requested, str):
        span.attributes[sc.MODEL_REQUESTED] = requested  # the root has it from `_request_body`
    try:
        attempts = state.router.resolve(requested)
    except TfgwError as exc:
        span.fail(exc)
        raise
    finally:
        span.close()
    first = attempts[0]
    span.attributes[sc.ROUTE_PROVIDER] = first.provider.name
    span.attributes[sc.ROUTE_MODEL] = first.model
    span.attributes[sc.ROUTE_ATTEMPT] = 1
    if len(attempts) > 1:
        span.attributes[sc.ROUTE_FALLBACKS] = [f"{a.provider.name}/{a.model}" for a in attempts[1:]]
    return attempts


async def _call_provider(
    state: GatewayState,
    trace: RequestTrace,
    attempts: list[Attempt],
    body: dict[str, Any],
    operation: str,
    send: Callable[[Provider, Call], Awaitable[T]],
) -> tuple[Span, T]:
    """Call through the router; every run of an attempt is its own CLIENT span."""
    assert state.router is not None
    models = state.settings.models

    async def attempt(run: Try) -> tuple[Span, T]:
        target = run.attempt
        alias = models.get(target.alias) if target.alias else None
        settings = target.provider.settings
        span = trace.llm(
            LlmCall(
                operation=operation,
                provider=target.provider.name,
                provider_kind=settings.kind,
                base_url=settings.base_url,
                model=target.model,
                alias=target.alias,
                attempt=run.number,
                request=body,
                price=alias.price if alias is not None else None,
                stream=bool(body.get("stream")) and operation == "chat",
                fallback_reason=error_type(run.previous) if run.previous else None,
            )
        )
        try:
            result = await send(target.provider, run.call(body))
        except BaseException as exc:
            span.fail(exc)
            span.close()
            trace.provider_ns += span.end - span.start
            raise
        trace.provider_ns += time.time_ns() - span.start
        return span, result

    return await state.router.call(attempts, attempt)


async def _chat(provider: Provider, call: Call) -> Reply:
    return await provider.chat(call)


async def _embed(provider: Provider, call: Call) -> Reply:
    return await provider.embeddings(call)


async def _open_stream(provider: Provider, call: Call) -> Stream:
    return await provider.open_stream(call)


def _respond(trace: RequestTrace, span: Span, reply: Reply) -> Response:
    assert span.llm is not None
    span.llm.response = reply.data
    span.llm.response_body = reply.body
    span.close()
    trace.root.attributes[sc.HTTP_STATUS] = 200
    response = Response(reply.body, content_type=JSON)
    trace.root.attributes[sc.OVERHEAD_MS] = trace.overhead_ms()
    trace.finish()
    return response


async def _relay(
    state: GatewayState, trace: RequestTrace, llm: Span, stream: Stream, key: KeySettings | None
) -> AsyncIterator[bytes]:
    """Send the provider's frames on as they come, what arrived together in one write, folding
    their chunks into the LLM span; time to first token is taken when the first event goes out. A
    client that goes away closes the upstream and still leaves a finished trace."""
    assert llm.llm is not None
    call = llm.llm
    fold = StreamFold()
    call.response = fold
    span = trace.child("stream", parent=llm)
    root = trace.root
    root.attributes[sc.HTTP_STATUS] = 200
    root.attributes[sc.OVERHEAD_MS] = trace.overhead_ms()
    first = True
    try:
        async for frames, chunks in stream:
            for chunk in chunks:
                fold.add(chunk)
            if not frames:
                continue
            if first and chunks:  # the first event, not a keep-alive comment before it
                first = False
                now = call.first_chunk = time.time_ns()
                llm.events.append(Event(sc.FIRST_TOKEN_EVENT, now))
                span.attributes[sc.STREAM_TTFT] = (now - root.start) / 1e6
            yield frames
        span.attributes[sc.STREAM_CANCELLED] = False
    except TfgwError as exc:
        # the status line is gone already: tell the client in the stream, as OpenAI does
        for failed in (span, llm, root):
            failed.fail(exc)
        yield b"data: " + exc.body() + b"\n\n"
    except BaseException as exc:  # the client went away (cancelled, or the generator was closed)
        span.attributes[sc.STREAM_CANCELLED] = root.attributes[sc.STREAM_CANCELLED] = True
        span.fail(exc, "cancelled")
        raise
    finally:
        span.attributes[sc.STREAM_CHUNKS] = fold.chunks
        state.keys.spend_tokens(key, _total_tokens(fold.usage))
        try:
            await stream.aclose()
        finally:
            trace.finish()


def _too_large(settings: Settings) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Request body is larger than the gateway's limit of {settings.server.max_body_bytes} bytes."
    )


async def _request_body(state: GatewayState, trace: RequestTrace) -> dict[str, Any]:
    """The request's JSON object; the model it names is on the root span before anything checks
    the rest, so a request refused as invalid still says what it asked for."""
    body = await _json_body(state.settings)
    if isinstance(requested := body.get("model"), str):
        trace.root.attributes[sc.MODEL_REQUESTED] = requested
    return body


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


def _total_tokens(usage: Any) -> int:
    return int(usage.get("total_tokens") or 0) if isinstance(usage, Mapping) else 0


def _metadata(raw: str) -> str:
    """`x-tfgw-metadata` must hold a JSON object; it is recorded as that JSON text."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise BadRequestError("The x-tfgw-metadata header must be a JSON object.", param="x-tfgw-metadata")
    return orjson.dumps(value).decode()
