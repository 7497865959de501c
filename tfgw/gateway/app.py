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

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from tfgw import __version__
from tfgw.config import Settings
from tfgw.errors import BadRequestError, TfgwError
from tfgw.formats.messages import ERROR_TYPES as ANTHROPIC_ERROR_TYPES
from tfgw.gateway import fields, messages, responses
from tfgw.gateway.auth import limited
from tfgw.gateway.live import POLL_S, ConfigWatcher, Runtime, restart_only
from tfgw.gateway.policy import admit_and_guard
from tfgw.gateway.stages import (
    ANTHROPIC,
    EMBEDDINGS,
    JSON,
    OPENAI,
    Handler,
    Wire,
    answer,
    authenticate,
    client_headers,
    current_request,
    current_trace,
    request_body,
    request_span,
    resolve,
    too_large,
    traced,
    traced_post,
)
from tfgw.metrics.snapshot import CONTENT_TYPE as METRICS_TYPE
from tfgw.metrics.snapshot import snapshot_path
from tfgw.policy.cache import ResponseCache
from tfgw.policy.counters import table_path
from tfgw.policy.limits import Limits
from tfgw.policy.shared import SharedLimits
from tfgw.providers import Provider, Stream, create_session
from tfgw.providers.base import Call, Reply
from tfgw.tracing import semconv as sc
from tfgw.tracing.exports import NO_EXPORTS, Exports
from tfgw.tracing.log import TraceLog
from tfgw.tracing.spans import RequestTrace

__all__ = ["GatewayState", "create_app"]

log = logging.getLogger("tfgw.gateway")


@dataclass(slots=True)
class GatewayState:
    """What serving holds: the current config's `Runtime` (replaced by a reload, kept by every
    request that began on it), the HTTP session, the trace log; made by the app factory, filled in
    when serving starts."""

    #: the config serving starts on (then the current runtime's)
    initial: Settings
    runtime: Runtime | None = None
    session: aiohttp.ClientSession | None = None
    trace_log: TraceLog | None = None
    #: the export targets, from `tfgw serve`: retention keeps what they have not had yet
    exports: Exports = NO_EXPORTS
    #: reloads the config when its file changes or on SIGHUP (`tfgw serve` with a config file)
    watcher: ConfigWatcher | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    cache: ResponseCache | None = None
    limits: Limits | None = None
    #: with `[bus] kind = "nats"`: the limits counted with every other gateway's
    shared: SharedLimits | None = None
    #: the traced POST routes by path, which `tfgw.gateway.fast` serves on bare ASGI
    routes: dict[str, Handler] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.initial if self.runtime is None else self.runtime.settings

    async def start(self) -> None:
        self.session = create_session()
        self.cache = ResponseCache(self.initial.server.cache_max_bytes)
        limits = self._limits(self.initial)
        self.runtime = Runtime.build(self.initial, self.session, self.cache, limits, shared=self.shared)
        if self.settings.tracing.enabled:
            self.trace_log = TraceLog(self.settings.tracing, targets=self.exports.targets)
            self.trace_log.start()
        if self.settings.path is not None:
            interval = POLL_S if self.settings.server.reload else None
            self.watcher = ConfigWatcher(Path(self.settings.path), self.apply, interval=interval)
            task = asyncio.create_task(self.watcher.run(), name="tfgw config watcher")
            self._tasks.add(task)
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.watcher.request)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.shared is not None:
            await self.shared.close()
        if self.limits is not None:
            self.limits.close()
        if self.session is not None:
            await self.session.close()
        if self.trace_log is not None:
            self.trace_log.close()

    def apply(self, settings: Settings) -> None:
        """Serve `settings` from the next request on; what needs a restart stays as it was."""
        old = self.settings
        if changed := restart_only(old, settings):
            log.warning(
                "config reloaded; %s changed and take effect only after a restart", ", ".join(changed)
            )
        settings = replace(settings, server=old.server, tracing=old.tracing, otel_targets=old.otel_targets)
        assert self.session is not None and self.cache is not None, "reloads start with serving"
        self.cache.clear()  # an answer cached under the old config may not be the new one's
        limits = self._limits(settings)
        self.runtime = Runtime.build(settings, self.session, self.cache, limits, self.runtime, self.shared)
        log.info("config reloaded from %s", settings.path)

    def _limits(self, settings: Settings) -> Limits | None:
        """The shared limits table with `settings`' keys, opened when a key first has a limit."""
        if self.limits is not None:
            self.limits.reload(settings.keys)
        elif any(limited(key) for key in settings.keys):
            state = settings.tracing.state_path(settings.server.state_dir)
            self.limits = Limits(settings.keys, table_path(state))
            if self.initial.bus.kind == "nats":  # counted across gateways once NATS answers
                self.shared = SharedLimits(self.limits)
                task = asyncio.create_task(self.shared.connect(self.initial.bus), name="tfgw shared limits")
                self._tasks.add(task)
        return self.limits

    def begin(self, name: str) -> tuple[Runtime, RequestTrace]:
        """The runtime the request being handled keeps to its end, and its trace, with the
        caller's context from its headers."""
        assert self.runtime is not None, "requests come once serving has started"
        req = current_request()
        headers = client_headers(req)
        trace = RequestTrace(name, self._sink, headers.get("traceparent"))
        traced(trace)
        root = trace.root.attributes
        root[sc.HTTP_METHOD] = req.method
        root[sc.URL_PATH] = req.path
        if session := headers.get("x-tfgw-session-id"):
            root[sc.SESSION_ID] = session
        if user := headers.get("x-tfgw-user-id"):
            root[sc.USER_ID] = user
        return self.runtime, trace

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
        BODY_TIMEOUT=settings.server.body_timeout,
    )
    state = GatewayState(settings, exports=exports)
    app.extensions["tfgw"] = state
    app.before_serving(state.start)
    app.after_serving(state.stop)
    _error_handlers(app, settings)
    _probe_routes(app, state)
    _openapi_route(app, state)
    _openai_routes(app, state)
    messages.routes(app, state)
    responses.routes(app, state)
    return app


def wire() -> Wire:
    """The API the request being handled speaks, by its path."""
    return ANTHROPIC if current_request().path.startswith(messages.PREFIX) else OPENAI


def error_response(exc: BaseException, settings: Settings) -> Response:
    """The answer to a request that raised `exc`, in the route's API's error shape: a `TfgwError`
    with its status, a werkzeug `HTTPException` (413, 408, ...) with its own, anything else 500."""
    if isinstance(exc, TfgwError):
        body = wire().error_body(exc)
        return Response(body, status=exc.status, headers=exc.headers(), content_type=JSON)
    if isinstance(exc, HTTPException):
        if exc.code == 413:
            return error_response(too_large(settings), settings)
        status, message = exc.code or 500, exc.description or exc.name
        if wire() is ANTHROPIC:
            kind = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")
            body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
            return Response(body, status=status, content_type=JSON)
        code = exc.name.lower().replace(" ", "_")
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        return Response(orjson.dumps({"error": error}), status=status, content_type=JSON)
    req = current_request()
    log.error("unexpected error while serving %s %s", req.method, req.path, exc_info=exc)
    return error_response(TfgwError("The gateway hit an unexpected error; see its log."), settings)


def with_trace_headers(response: Response) -> Response:
    """Every answer to a traced request names its trace."""
    if (trace := current_trace()) is not None:
        # `add`: no response has them yet, and `set` looks for each first (~70 bytecodes)
        response.headers.add("x-tfgw-trace-id", trace.trace_id)
        response.headers.add("x-tfgw-overhead-ms", f"{trace.overhead_ms():.3f}")
    return response


def _error_handlers(app: Quart, settings: Settings) -> None:
    """Every error leaves in the route's API's error shape (`error_response`); every answer to a
    traced request names its trace (`with_trace_headers`)."""

    @app.errorhandler(TfgwError)
    async def tfgw_error(exc: TfgwError) -> Response:
        return error_response(exc, settings)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return error_response(exc, settings)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        return error_response(exc, settings)

    @app.after_request
    async def trace_headers(response: Response) -> Response:
        return with_trace_headers(response)


def _probe_routes(app: Quart, state: GatewayState) -> None:
    """/healthz, /readyz, /metrics and /v1/models: untraced."""

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = state.runtime is not None
        body: dict[str, Any] = {"status": "ready" if ready else "starting"}
        if _readyz_details(state):
            body.update(_readiness(state))
        return Response(orjson.dumps(body), status=200 if ready else 503, content_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        """The exporter's snapshot (docs/metrics.md), behind a gateway key when there are keys."""
        _key_checked(state)
        if not state.settings.tracing.enabled:
            return _unavailable("no metrics: tracing is disabled ([tracing] enabled = false)")
        path = snapshot_path(state.settings)
        try:
            text = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return _unavailable(f"no metrics yet: the exporter has not written {path}")
        return Response(text, content_type=METRICS_TYPE)

    @app.get("/v1/models")
    async def models() -> Response:
        headers = client_headers()
        names = list(_key_checked(state).settings.models)
        if "anthropic-version" in headers:  # Anthropic's clients list models in their own shape
            return Response(orjson.dumps(messages.model_list(names)), content_type=JSON)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "tfgw"} for name in names]
        return Response(orjson.dumps({"object": "list", "data": data}), content_type=JSON)


def _openapi_route(app: Quart, state: GatewayState) -> None:
    """/openapi.json: the document of every route (tfgw/gateway/openapi.json, shipped in the
    package), behind a gateway key when there are keys, like /metrics."""
    document = resources.files("tfgw.gateway").joinpath("openapi.json").read_bytes()

    @app.get("/openapi.json")
    async def openapi() -> Response:
        _key_checked(state)
        return Response(document, content_type=JSON)


def _readyz_details(state: GatewayState) -> bool:
    """Whether `GET /readyz` shows more than its status: always without gateway keys; with keys
    only to a caller with one (a probe that sends none gets the status alone; a wrong key is 401)."""
    if not state.settings.keys:
        return True
    headers = client_headers()
    if state.runtime is None or not (headers.get("authorization") or headers.get("x-api-key")):
        return False
    _key_checked(state)
    return True


def _key_checked(state: GatewayState) -> Runtime:
    """The runtime, once the request's key (`Authorization` or `x-api-key`) is checked: 401 for a
    missing or wrong one when the config has keys. For the untraced routes."""
    rt = state.runtime
    assert rt is not None, "requests come once serving has started"
    headers = client_headers()
    rt.keys.authenticate(headers.get("authorization"), api_key=headers.get("x-api-key"))
    return rt


def _readiness(state: GatewayState) -> dict[str, Any]:
    """What `GET /readyz` says beside its status (docs/http.md)."""
    body: dict[str, Any] = {"version": __version__, "models": len(state.settings.models)}
    body["worker"] = os.getpid()
    if state.watcher is not None:
        body["config"] = {"reloads": state.watcher.reloads, "refused": state.watcher.refused}
    if state.trace_log is not None:
        body["tracing"] = state.trace_log.stats.as_dict()
    if state.exports.targets:
        body["export"] = state.exports.status()
    if state.shared is not None:
        body["limits"] = "shared" if state.shared.counting_shared else "local"
    return body


def _unavailable(reason: str) -> Response:
    return Response(reason + "\n", status=503, content_type="text/plain; charset=utf-8")


def _openai_routes(app: Quart, state: GatewayState) -> None:
    """The traced routes: chat completions (JSON or SSE) and embeddings."""

    @traced_post(app, state.routes, "/v1/chat/completions")
    async def chat_completions() -> Response:
        rt, trace = state.begin("POST /v1/chat/completions")
        with request_span(trace):
            key = authenticate(rt, trace)
            body = await request_body(rt, trace)
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise BadRequestError("'messages' must be a non-empty array", param="messages")
            fields.check(body, fields.CHAT, fields.chat_parts)
            body, account = await admit_and_guard(rt, trace, key, "chat", body)
            attempts = resolve(rt, trace, body)
            return await answer(rt, trace, key, attempts, body, _CHAT, account=account)

    @traced_post(app, state.routes, "/v1/embeddings")
    async def embeddings() -> Response:
        rt, trace = state.begin("POST /v1/embeddings")
        with request_span(trace):
            key = authenticate(rt, trace)
            body = await request_body(rt, trace)
            if "input" not in body:
                raise BadRequestError("'input' is required", param="input")
            body, account = await admit_and_guard(rt, trace, key, "embeddings", body)
            attempts = resolve(rt, trace, body)
            return await answer(rt, trace, key, attempts, body, _EMBED, wire=EMBEDDINGS, account=account)


class _Chat:
    """Chat completions go to every provider as they are."""

    async def create(self, provider: Provider, call: Call) -> Reply:
        return await provider.chat(call)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        return await provider.open_stream(call)


_CHAT = _Chat()


class _Embed:
    """Embeddings: a whole answer, never a stream (`answer` streams chat only; a `stream` in an
    embeddings body is passed on as it is, as before)."""

    async def create(self, provider: Provider, call: Call) -> Reply:
        return await provider.embeddings(call)

    async def open_stream(self, provider: Provider, call: Call) -> Stream:
        raise AssertionError("answer() never streams embeddings")


_EMBED = _Embed()
