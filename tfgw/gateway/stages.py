"""The stages of one traced request, shared by every route: each is its own span of the request's
trace (docs/spans.md, "Spans of one request").

A route handler reads as its stages: `begin` the trace, `authenticate`, `request_body`, `resolve`
the model, `call_provider` through the router (one CLIENT span per attempt), then `respond` with a
whole answer or `relay` a stream; `answer` is those last two for every chat-like route, and
`ChatForm` the chat-completions form of a body in another API's format. What differs between the
APIs clients speak is their `Wire`: how an error looks in a body and inside a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from quart import Quart, Request, Response, request
from werkzeug.exceptions import HTTPException, RequestTimeout

from tfgw.config import KeySettings, Settings
from tfgw.errors import BadRequestError, PayloadTooLargeError, ProviderError, TfgwError
from tfgw.formats import messages as messages_format
from tfgw.gateway.incoming import Incoming
from tfgw.gateway.policy import Account, Answering, StreamPolicy
from tfgw.gateway.routing import Attempt, Try, plan_attributes
from tfgw.providers import Provider, Stream
from tfgw.providers.base import NO_HEADERS, Call, Reply
from tfgw.tracing import semconv as sc
from tfgw.tracing.fold import StreamFold
from tfgw.tracing.spans import Event, LlmCall, RequestTrace, Span, error_type

if TYPE_CHECKING:
    from tfgw.gateway.live import Runtime

__all__ = [
    "ANTHROPIC",
    "EMBEDDINGS",
    "HEADER_CAPS",
    "OPENAI",
    "RESPONSES",
    "SSE_HEADERS",
    "ChatForm",
    "Handler",
    "Sends",
    "Wire",
    "answer",
    "authenticate",
    "call_provider",
    "client_headers",
    "current_request",
    "current_trace",
    "json_body",
    "relay",
    "request_body",
    "request_span",
    "resolve",
    "respond",
    "serving",
    "too_large",
    "total_tokens",
    "traced",
    "traced_post",
]

T = TypeVar("T")

JSON = "application/json"

#: the longest value taken of each header recorded on the trace (characters), and its attribute
HEADER_CAPS: dict[str, tuple[int, str]] = {
    "x-tfgw-metadata": (4096, sc.METADATA),
    "x-tfgw-session-id": (256, sc.SESSION_ID),
    "x-tfgw-user-id": (256, sc.USER_ID),
}


@dataclass(frozen=True, slots=True)
class Wire:
    """How one client API says that something failed: the body of an error answer, and the event
    that ends a stream which failed after its first byte."""

    error_body: Callable[[TfgwError], bytes]
    stream_error: Callable[[TfgwError], bytes]
    #: the API's name where policy reads bodies and answers: chat | messages | responses
    api: str


def _openai_error(exc: TfgwError) -> bytes:
    return exc.body()  # the subclass's own: a provider's OpenAI-shaped 4xx body is passed on


def _openai_stream_error(exc: TfgwError) -> bytes:
    return b"data: " + exc.body() + b"\n\n"  # the status line is gone already: OpenAI says it so


def _responses_stream_error(exc: TfgwError) -> bytes:
    """The Responses API's `error` event: for a stream passed on that broke off before its terminal
    event (a translated one ends with its own `response.failed`)."""
    data = {"type": "error", "code": exc.code or exc.type, "message": exc.message, "param": exc.param}
    return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"


OPENAI = Wire(_openai_error, _openai_stream_error, "chat")
RESPONSES = Wire(_openai_error, _responses_stream_error, "responses")
ANTHROPIC = Wire(messages_format.error_body, messages_format.error_event, "messages")
EMBEDDINGS = Wire(_openai_error, _openai_stream_error, "embeddings")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event_stream(frames: AsyncIterator[bytes]) -> Response:
    """A `text/event-stream` response of `frames`, with SSE_HEADERS. They are added to its headers
    one by one: werkzeug's `Headers(...)` from a dict (`Response(headers=...)`) costs ~350
    bytecodes for two, `add` 80 (`set`, which first looks for the name, 220)."""
    response = Response(frames, content_type="text/event-stream")
    add = response.headers.add
    for name, value in SSE_HEADERS.items():
        add(name, value)
    return response


class request_span:
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


#: The request being handled (`current_request`, when it is served on bare ASGI), its headers
#: (`client_headers`) and its trace (`current_trace`). Each request runs in a task, and so a
#: context, of its own, as Quart's `request` and `g` do; those are werkzeug proxies that cost ~35
#: bytecodes an access, a context variable's `get` one call in C.
_INCOMING: ContextVar[Incoming | None] = ContextVar("tfgw_incoming", default=None)
_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("tfgw_headers", default=None)
_TRACE: ContextVar[RequestTrace | None] = ContextVar("tfgw_trace", default=None)


def current_request() -> Request | Incoming:
    """The request being handled: served on bare ASGI (`tfgw.gateway.fast`), or else Quart's, its
    proxy resolved once for the several reads that follow."""
    return _INCOMING.get() or request._get_current_object()  # type: ignore[attr-defined]


def serving(incoming: Incoming) -> None:
    """Make `incoming` the request being handled (`current_request`), in its task's context."""
    _INCOMING.set(incoming)


def client_headers(req: Request | Incoming | None = None) -> dict[str, str]:
    """The request's headers by lower-case name, made once a request: werkzeug's own look-up of an
    absent header raises and catches an exception (about 2 µs, and a request asks for five)."""
    headers = _HEADERS.get()
    if headers is None:
        req = req or current_request()
        if type(req) is Incoming:
            headers = req.headers  # lower-case already
        else:
            headers = {name.lower(): value for name, value in req.headers.items()}
        _HEADERS.set(headers)
    return headers


Handler = Callable[[], Awaitable[Response]]


def traced_post(app: Quart, routes: dict[str, Handler], path: str) -> Callable[[Handler], Handler]:
    """A traced POST route: the Quart app's, and in `routes`, which `tfgw.gateway.fast` serves on
    bare ASGI in front of the app."""

    def register(handler: Handler) -> Handler:
        routes[path] = handler
        return app.post(path)(handler)

    return register


def traced(trace: RequestTrace) -> None:
    """Make `trace` the request's: the one its answer names (`current_trace`)."""
    _TRACE.set(trace)


def current_trace() -> RequestTrace | None:
    """The trace of the request being handled, once its route began one."""
    return _TRACE.get()


def authenticate(rt: Runtime, trace: RequestTrace) -> KeySettings | None:
    headers = client_headers()
    _within_caps(trace, headers)
    if metadata := headers.get("x-tfgw-metadata"):
        trace.root.attributes[sc.METADATA] = _metadata(metadata)
    span = trace.child("auth")
    try:
        key = rt.keys.authenticate(headers.get("authorization"), api_key=headers.get("x-api-key"))
    except TfgwError as exc:
        span.attributes[sc.AUTH_OUTCOME] = "rejected"  # limits are counted later (policy.admit)
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


def resolve(rt: Runtime, trace: RequestTrace, body: dict[str, Any]) -> list[Attempt]:
    span = trace.child("model.resolve")
    requested = body.get("model")
    if isinstance(requested, str):
        span.attributes[sc.MODEL_REQUESTED] = requested  # the root has it from `_request_body`
    try:
        plan = rt.router.plan(requested)
    except TfgwError as exc:
        span.fail(exc)
        raise
    finally:
        span.close()
    plan_attributes(plan, span.attributes)
    return plan.attempts


async def call_provider(
    rt: Runtime,
    trace: RequestTrace,
    attempts: list[Attempt],
    body: dict[str, Any],
    operation: str,
    send: Callable[[Provider, Call], Awaitable[T]],
    *,
    view: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] = NO_HEADERS,
) -> tuple[Span, T]:
    """Call through the router; every run of an attempt is its own CLIENT span. `send` gets the
    client's `body` and the `headers` to pass on; the span is made of `view`, the chat-completions
    form of a body in another API's format."""
    models = rt.settings.models

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
                request=body if view is None else view,
                client_request=None if view is None else body,
                price=alias.price if alias is not None else None,
                stream=bool(body.get("stream")) and operation == "chat",
                fallback_reason=error_type(run.previous) if run.previous else None,
                system=settings.system,
            )
        )
        try:
            result = await send(target.provider, run.call(body, headers))
        except BaseException as exc:
            span.fail(exc)
            span.close()
            trace.provider_ns += span.end - span.start
            raise
        trace.provider_ns += time.time_ns() - span.start
        return span, result

    return await rt.router.call(attempts, attempt)


def respond(trace: RequestTrace, span: Span, reply: Reply) -> Response:
    assert span.llm is not None
    span.llm.response = reply.data
    span.llm.response_body = reply.body
    span.close()
    trace.root.attributes[sc.HTTP_STATUS] = 200
    response = Response(reply.body, content_type=JSON)
    trace.root.attributes[sc.OVERHEAD_MS] = trace.overhead_ms()
    trace.finish()
    return response


async def relay(
    trace: RequestTrace,
    llm: Span,
    stream: Stream,
    wire: Wire = OPENAI,
    policy: StreamPolicy | None = None,
    account: Account | None = None,
) -> AsyncIterator[bytes]:
    """Send the provider's frames on as they come, what arrived together in one write, folding
    their chunks into the LLM span; time to first token is taken when the first event goes out. A
    failure after the first byte ends the stream with the `wire`'s error event. A client that goes
    away closes the upstream and still leaves a finished trace. `policy`: the output guardrails and
    the cache recording the frames go through; `account`: settled with the stream's usage."""
    assert llm.llm is not None
    call = llm.llm
    fold = StreamFold()
    call.response = fold
    span = trace.child("stream", parent=llm)
    root = trace.root
    root.attributes[sc.HTTP_STATUS] = 200
    root.attributes[sc.OVERHEAD_MS] = trace.overhead_ms()
    first, ok = True, False
    try:
        async for frames, chunks in stream:
            if chunks:
                fold.add_all(chunks)
            if policy is not None:
                frames = policy.frames(frames)
            if not frames:
                continue
            if first and chunks:  # the first event, not a keep-alive comment before it
                first = False
                now = call.first_chunk = time.time_ns()
                llm.events.append(Event(sc.FIRST_TOKEN_EVENT, now))
                span.attributes[sc.STREAM_TTFT] = (now - root.start) / 1e6
            yield frames
        if policy is not None and (rest := policy.flush()):
            yield rest
        span.attributes[sc.STREAM_CANCELLED], ok = False, True
    except TfgwError as exc:
        for failed in (span, llm, root):
            failed.fail(exc)
        if not (isinstance(exc, ProviderError) and exc.relayed):
            yield wire.stream_error(exc)
    except BaseException as exc:  # the client went away (cancelled, or the generator was closed)
        span.attributes[sc.STREAM_CANCELLED] = root.attributes[sc.STREAM_CANCELLED] = True
        span.fail(exc, "cancelled")
        if fold.usage is None:
            fold.usage = stream.reported_usage()  # as far as the provider had told
        raise
    finally:
        span.attributes[sc.STREAM_CHUNKS] = fold.chunks
        if policy is not None:
            policy.ended(llm, fold, ok)
        if account is not None:
            account.settle(fold.usage, call.price)
        try:
            await stream.aclose()
        finally:
            trace.finish()


class Sends(Protocol):
    """How a route calls one provider: a whole answer, or a stream."""

    async def create(self, provider: Provider, call: Call) -> Reply: ...
    async def open_stream(self, provider: Provider, call: Call) -> Stream: ...


async def answer(
    rt: Runtime,
    trace: RequestTrace,
    key: KeySettings | None,
    attempts: list[Attempt],
    body: dict[str, Any],
    sends: Sends,
    *,
    wire: Wire = OPENAI,
    view: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] = NO_HEADERS,
    account: Account | None = None,
) -> Response:
    """The end of every chat-like route: answer from the cache, or call the provider, then relay
    its stream as it comes or send its whole answer, through the output guardrails, settling the
    key's `account` (`call_provider` for `view` and `headers`)."""
    operation = "embeddings" if wire is EMBEDDINGS else "chat"
    stream = operation == "chat" and bool(body.get("stream"))  # embeddings are never streamed
    policy = Answering.of(rt, trace, wire.api, body, key, client_headers())
    if policy is not None and policy.hit is not None:
        return from_cache(rt, trace, policy, operation, body if view is None else view, stream)
    if stream:
        span, upstream = await call_provider(
            rt, trace, attempts, body, operation, sends.open_stream, view=view, headers=headers
        )
        guard = policy.stream_guard() if policy is not None else None
        frames = relay(trace, span, upstream, wire, guard, account)
        return event_stream(frames)
    span, reply = await call_provider(
        rt, trace, attempts, body, operation, sends.create, view=view, headers=headers
    )
    if account is not None:
        account.settle(reply.data.get("usage"), span.llm.price if span.llm is not None else None)
    if policy is not None:
        try:
            reply = policy.answer(span, reply)
        finally:
            span.close()
    return respond(trace, span, reply)


def from_cache(
    rt: Runtime,
    trace: RequestTrace,
    policy: Answering,
    operation: str,
    request: Mapping[str, Any],
    stream: bool,
) -> Response:
    """A request answered again from the cache: an LLM span for the answer (`tfgw.cache.hit`, no
    tokens, no cost), the answer's bytes as they were first sent, a stream as a stream."""
    hit = policy.hit
    assert hit is not None
    provider = rt.providers.get(hit.provider)
    alias = rt.settings.models.get(request.get("model"))  # type: ignore[arg-type]
    span = trace.llm(
        LlmCall(
            operation=operation,
            provider=hit.provider,
            provider_kind=provider.settings.kind if provider is not None else "cache",
            base_url=provider.settings.base_url if provider is not None else "",
            model=hit.model,
            alias=alias.name if alias is not None else None,
            attempt=1,
            request=request,
            price=alias.price if alias is not None else None,
            stream=stream,
            system=provider.settings.system if provider is not None else None,
        )
    )
    span.attributes[sc.CACHE_HIT] = True
    span.attributes[sc.CACHE_AGE] = round(time.time() - hit.stored_at, 3)
    if not stream:
        return respond(trace, span, Reply(hit.body, policy.cached_view()))
    assert span.llm is not None
    span.llm.response = policy.cached_view()
    trace.root.attributes[sc.HTTP_STATUS] = 200
    trace.root.attributes[sc.OVERHEAD_MS] = trace.overhead_ms()

    def done() -> None:
        span.close()
        trace.finish()

    return event_stream(policy.replay(done))


class ChatForm:
    """A body in another API's format in its chat-completions form, `view`: what a provider without
    that API is called with, and what the span is made of. A body the translation cannot read is
    refused at once; one only a provider with the API can take (a server tool, a document,
    previous_response_id) is refused (`error`) only when a call reaches a provider without it."""

    __slots__ = ("body", "error", "view")

    def __init__(self, body: dict[str, Any], to_chat_request: Callable[..., dict[str, Any]]) -> None:
        self.body = body
        self.error: BadRequestError | None = None
        try:
            self.view = to_chat_request(body)
        except BadRequestError as exc:
            self.view = to_chat_request(body, strict=False)
            self.error = exc

    def chat_call(self, call: Call) -> Call:
        """`call` for a chat-completions provider: the view as its body, no headers of the API's."""
        if self.error is not None:
            raise self.error
        return replace(call, body=self.view, headers=NO_HEADERS)


def too_large(settings: Settings) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Request body is larger than the gateway's limit of {settings.server.max_body_bytes} bytes."
    )


async def request_body(rt: Runtime, trace: RequestTrace) -> dict[str, Any]:
    """The request's JSON object; the model it names is on the root span before anything checks
    the rest, so a request refused as invalid still says what it asked for."""
    body = await json_body(rt.settings)
    if isinstance(requested := body.get("model"), str):
        trace.root.attributes[sc.MODEL_REQUESTED] = requested
    return body


async def json_body(settings: Settings) -> dict[str, Any]:
    req = current_request()
    length = req.content_length
    if length is not None and length > settings.server.max_body_bytes:
        raise too_large(settings)
    raw = await whole_body(req)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return body


async def whole_body(req: Request | Incoming) -> bytes:
    """The request's body once all of it has come, as `request.get_data(cache=False)` reads it
    (408 past `[server] body_timeout`, the app's BODY_TIMEOUT), but under a timer, not through
    `asyncio.wait_for`, which makes every request a task of its own for it and wakes it through
    the event loop twice, even when the body came with the headers, as it mostly does."""
    try:
        async with asyncio.timeout(req.body_timeout):
            if isinstance(req, Incoming):
                return await req.read()
            body = req.body
            data = await body
    except TimeoutError as exc:
        raise RequestTimeout() from exc
    body.clear()
    return data


def total_tokens(usage: Any) -> int:
    return int(usage.get("total_tokens") or 0) if isinstance(usage, Mapping) else 0


def _within_caps(trace: RequestTrace, headers: Mapping[str, str]) -> None:
    """The headers a caller describes itself with are recorded on every span of its trace, so each
    has a cap (`HEADER_CAPS`): one longer is 400 naming it, and what `begin` recorded of it is taken
    off the root span, which then holds none of it."""
    for name, (cap, attribute) in HEADER_CAPS.items():
        value = headers.get(name)
        if value is not None and len(value) > cap:
            trace.root.attributes.pop(attribute, None)
            raise BadRequestError(f"The {name} header is longer than {cap} characters.", param=name)


def _metadata(raw: str) -> str:
    """`x-tfgw-metadata` must hold a JSON object; it is recorded as that JSON text."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise BadRequestError("The x-tfgw-metadata header must be a JSON object.", param="x-tfgw-metadata")
    return orjson.dumps(value).decode()
