"""A fake model provider: a real HTTP server on loopback that speaks three wire formats.

`with FakeUpstream() as up:` serves on `up.url` from a background thread with its own event loop,
records every request in `up.requests`, and stops cleanly on exit. Routes:

- OpenAI: `POST /v1/chat/completions` (JSON and SSE), `POST /v1/embeddings`, `POST /v1/responses`
  (JSON and SSE; `previous_response_id` is echoed on the response)
- Azure: `POST /openai/deployments/{deployment}/chat/completions|embeddings?api-version=...`
  (the same answers, with `model` = the deployment)
- Anthropic: `POST /v1/messages` (JSON and SSE; needs `max_tokens` and `anthropic-version` as the
  real API does), `POST /v1/messages/count_tokens` (`{"input_tokens": <prompt words>}`)

Answers are deterministic. The text is "echo: " + the last user message's text; streams send it
in pieces split after each space, so joined pieces equal the text. Token counts are word counts:
prompt = words in every message's text (and Anthropic's `system`), completion = words in the
answer. A request with `tools` is answered with a call of the first tool, arguments `{"x": 1}`.
Ids carry the request's position in `up.requests` ("chatcmpl-fake1", "msg_fake1", ...).

Behaviour is programmable from the test thread: `fail_next`, `delay`, `stream_delay`,
`slow_stream_chunks`, `break_streams`, `require_key`; per model (the body's `model`), `fail_next(...,
model=)` and `delay_model`; `reset()` clears it along with the records.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

__all__ = ["CREATED", "TOOL_ARGUMENTS", "TOOL_INPUT", "FakeUpstream", "Recorded", "embedding_of"]

CREATED = 1_700_000_000  # the `created` of every OpenAI answer
TOOL_INPUT = {"x": 1}
TOOL_ARGUMENTS = '{"x": 1}'
KEY_HEADERS = ("authorization", "x-api-key", "api-key")
Wire = Literal["openai", "anthropic"]

_OPENAI_ERROR_TYPES = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it: header names in lower case; `body` is the parsed JSON
    object, or None."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class _Failure:
    status: int
    body: dict[str, Any] | bytes | None
    headers: dict[str, str]
    path: str | None
    remaining: int
    model: str | None = None  # only requests whose body names this model


@dataclass
class _Behaviour:
    failures: list[_Failure] = field(default_factory=list)
    delay: float = 0.0
    stream_delay: float = 0.0
    filler_words: int = 0
    key: tuple[str, str] | None = None  # (header, expected value)
    break_after: int | None = None  # streams end after this many events...
    break_with_error: bool = False  # ...with the wire's error event, or by closing the connection
    model_delays: dict[str, float] = field(default_factory=dict)  # by the body's model, over `delay`


@dataclass(frozen=True)
class _Incoming:
    seq: int  # the request's position in `requests`, from 1
    body: dict[str, Any] | None


_INCOMING = web.RequestKey("incoming", _Incoming)


class _WireError(Exception):
    """A request the real provider would refuse; answered in the route's wire format."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeUpstream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._behaviour = _Behaviour()
        self._stream_disconnects = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeUpstream did not start within 10 s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("FakeUpstream failed to start") from self._error

    def stop(self) -> None:
        """Stop serving; a handler still running (a slow stream) is cancelled after 0.1 s."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("FakeUpstream did not stop within 10 s")
        self._thread = None
        self._loop = None
        self._stopping = None
        if self._error is not None:
            raise RuntimeError("FakeUpstream failed while stopping") from self._error

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeUpstream is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # start() or stop() re-raises it in the test thread
            self._error = exc
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        app.router.add_post("/v1/responses", self._openai_responses)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._azure_embeddings)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic_count_tokens)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = runner.addresses[0][1]
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            self._port = 0

    # -- what tests read and program -----------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """A copy of the records so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def stream_disconnects(self) -> int:
        """How many streams lost their client before the last byte was sent."""
        with self._lock:
            return self._stream_disconnects

    def fail_next(
        self,
        status: int,
        body: dict[str, Any] | bytes | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Answer the next `times` requests (to `path` only, if given; naming `model` in their body
        only, if given) with `status`.

        `body` None gives the route's wire-shaped error; a dict is sent as JSON; bytes as they are
        (content type text/plain unless `headers` says otherwise). Calls queue up in order."""
        failure = _Failure(status, body, dict(headers or {}), path, times, model)
        with self._lock:
            self._behaviour.failures.append(failure)

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before answering anything, headers included."""
        with self._lock:
            self._behaviour.delay = seconds

    def delay_model(self, model: str, seconds: float) -> None:
        """Wait `seconds` before answering a request whose body names `model` (instead of `delay`);
        0 stops."""
        with self._lock:
            self._behaviour.model_delays[model] = seconds

    def stream_delay(self, seconds: float) -> None:
        """Wait `seconds` between stream events."""
        with self._lock:
            self._behaviour.stream_delay = seconds

    def slow_stream_chunks(self, count: int = 50, delay: float = 0.05) -> None:
        """Make text answers `count` words longer (" tick" each) and streams `delay` s per event, so a
        test can disconnect mid-stream and then wait for `stream_disconnects`."""
        with self._lock:
            self._behaviour.filler_words = count
            self._behaviour.stream_delay = delay

    def break_streams(self, after: int, *, error_event: bool) -> None:
        """End every stream after `after` events: with the wire's error event (OpenAI: a `data:`
        error object; Anthropic: `event: error`, overloaded_error), or by dropping the connection."""
        with self._lock:
            self._behaviour.break_after = after
            self._behaviour.break_with_error = error_event

    def require_key(self, value: str | None, header: str = "authorization") -> None:
        """Refuse (401, wire-shaped) requests without `header: value` ("Bearer value" for
        authorization). None stops checking."""
        if header not in KEY_HEADERS:
            raise ValueError(f"header must be one of {KEY_HEADERS}, not {header!r}")
        expected = f"Bearer {value}" if header == "authorization" else value
        with self._lock:
            self._behaviour.key = None if value is None else (header, str(expected))

    def reset(self) -> None:
        """Forget the records, the disconnect count and every programmed behaviour."""
        with self._lock:
            self._requests.clear()
            self._behaviour = _Behaviour()
            self._stream_disconnects = 0

    # -- serving -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = _json_object(await request.read())
        record = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        with self._lock:
            self._requests.append(record)
            request[_INCOMING] = _Incoming(seq=len(self._requests), body=body)
            delay, key = self._behaviour.delay, self._behaviour.key
            model = body.get("model") if body is not None else None
            if isinstance(model, str):
                delay = self._behaviour.model_delays.get(model, delay)

        if delay:
            await asyncio.sleep(delay)
        wire: Wire = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        if key is not None and request.headers.get(key[0]) != key[1]:
            message = "invalid x-api-key" if wire == "anthropic" else "Incorrect API key provided."
            return _error_response(wire, 401, message)
        with self._lock:
            failure = _take_failure(self._behaviour.failures, request.path, model)
        if failure is not None:
            return _failure_response(wire, failure)
        try:
            return await handler(request)
        except _WireError as exc:
            return _error_response(wire, exc.status, exc.message)
        except web.HTTPException as exc:  # no such route, wrong method
            return _error_response(wire, exc.status, f"{exc.reason}: {request.method} {request.path}")

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = _require_body(request)
        if not isinstance(body.get("model"), str):
            raise _WireError(400, "you must provide a model parameter")
        return await self._chat(request, body, body["model"])

    async def _openai_responses(self, request: web.Request) -> web.StreamResponse:
        body = _require_body(request)
        if not isinstance(body.get("model"), str):
            raise _WireError(400, "you must provide a model parameter")
        raw = body.get("input")
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise _WireError(400, "'input' must be a string or an array")
        messages = [item for item in items if isinstance(item, dict) and "role" in item]
        answer = self._answer(messages, body.get("tools"), "responses")
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages)
        reply = _Responses(f"resp_fake{request[_INCOMING].seq}", body, answer, prompt)
        if body.get("stream"):
            return await self._stream(request, reply.events())
        return _json_response(reply.response("completed"))

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        _require_api_version(request)
        return await self._chat(request, _require_body(request), request.match_info["deployment"])

    async def _openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = _require_body(request)
        if not isinstance(body.get("model"), str):
            raise _WireError(400, "you must provide a model parameter")
        return _json_response(_embeddings(body, body["model"]))

    async def _azure_embeddings(self, request: web.Request) -> web.StreamResponse:
        _require_api_version(request)
        body = _require_body(request)
        return _json_response(_embeddings(body, request.match_info["deployment"]))

    async def _chat(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _WireError(400, "'messages' must be a non-empty array")
        answer = self._answer(messages, body.get("tools"), "function")
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise _WireError(400, "'n' must be a positive integer")
        chat = _Chat(f"chatcmpl-fake{request[_INCOMING].seq}", model, answer, n, prompt)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, chat.events(include_usage))
        return _json_response(chat.completion())

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body = _require_body(request)
        if "anthropic-version" not in request.headers:
            raise _WireError(400, "anthropic-version: header is required")
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(name), kind):
                raise _WireError(400, f"{name}: Field required")
        messages = body["messages"]
        answer = self._answer(messages, body.get("tools"), "anthropic")
        prompt = _words(_text_of(body.get("system"))) + sum(
            _words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        message = _Message(f"msg_fake{request[_INCOMING].seq}", body["model"], answer, prompt)
        if body.get("stream"):
            return await self._stream(request, message.events())
        return _json_response(message.message())

    async def _anthropic_count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = _require_body(request)
        if "anthropic-version" not in request.headers:
            raise _WireError(400, "anthropic-version: header is required")
        for name, kind in (("model", str), ("messages", list)):
            if not isinstance(body.get(name), kind):
                raise _WireError(400, f"{name}: Field required")
        prompt = _words(_text_of(body.get("system"))) + sum(
            _words(_text_of(m.get("content"))) for m in body["messages"] if isinstance(m, dict)
        )
        return _json_response({"input_tokens": prompt})

    def _answer(self, messages: list[Any], tools: Any, tool_kind: str) -> _Answer:
        if isinstance(tools, list) and tools:
            first = tools[0]
            name = first.get("function", {}).get("name") if tool_kind == "function" else first.get("name")
            return _Answer(text=None, tool_name=str(name))
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = "echo: " + (_text_of(user[-1].get("content")) if user else "")
        with self._lock:
            filler = self._behaviour.filler_words
        return _Answer(text=text + " tick" * filler, tool_name=None)

    async def _stream(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        with self._lock:
            after, with_error = self._behaviour.break_after, self._behaviour.break_with_error
        wire: Wire = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        try:
            await response.prepare(request)
            for i, event in enumerate(events):
                with self._lock:
                    pause = self._behaviour.stream_delay
                if i and pause:
                    await asyncio.sleep(pause)
                if i == after:
                    return await _break(request, response, wire, with_error)
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:
            with self._lock:
                self._stream_disconnects += 1
        return response


async def _break(
    request: web.Request, response: web.StreamResponse, wire: Wire, with_error: bool
) -> web.StreamResponse:
    if with_error:
        if wire == "anthropic":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            await response.write(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
        else:
            error = {"error": {"message": "The server had an error", "type": "server_error"}}
            await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
        await response.write_eof()
    elif request.transport is not None:
        request.transport.close()
    return response


# -- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    text: str | None  # None: a call of `tool_name`
    tool_name: str | None


@dataclass(frozen=True)
class _Chat:
    """One OpenAI chat answer, as a completion or as `chat.completion.chunk` events."""

    id: str
    model: str
    answer: _Answer
    n: int
    prompt_tokens: int

    def usage(self) -> dict[str, int]:
        completion = self.n * _words(self.answer.text or TOOL_ARGUMENTS)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def completion(self) -> dict[str, Any]:
        if self.answer.text is None:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [self._call()]}
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": self.answer.text}, "stop"
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(self.n)
            ],
            "usage": self.usage(),
        }

    def events(self, include_usage: bool) -> list[bytes]:
        deltas: list[dict[str, Any]]
        if self.answer.text is None:
            call = {"index": 0, **self._call()}
            call["function"] = {**call["function"], "arguments": ""}
            first: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            deltas = [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in _pieces(TOOL_ARGUMENTS)
            ]
            finish = "tool_calls"
        else:
            first = {"role": "assistant", "content": ""}
            deltas = [{"content": piece} for piece in _pieces(self.answer.text)]
            finish = "stop"
        n = range(self.n)
        choices = [
            *(_choice(i, first, None) for i in n),
            *(_choice(i, delta, None) for delta in deltas for i in n),
            *(_choice(i, {}, finish) for i in n),
        ]
        chunks = [self._chunk([choice], include_usage) for choice in choices]
        if include_usage:
            chunks.append({**self._chunk([], include_usage=False), "usage": self.usage()})
        return [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "choices": choices,
        }
        return {**chunk, "usage": None} if include_usage else chunk

    def _call(self) -> dict[str, Any]:
        return {
            "id": "call_1",
            "type": "function",
            "function": {"name": self.answer.tool_name, "arguments": TOOL_ARGUMENTS},
        }


def _choice(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


@dataclass(frozen=True)
class _Message:
    """One Anthropic answer, as a message or as its event sequence."""

    id: str
    model: str
    answer: _Answer
    input_tokens: int

    def message(self) -> dict[str, Any]:
        if self.answer.text is None:
            content: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": self.answer.tool_name}
            content["input"] = TOOL_INPUT
        else:
            content = {"type": "text", "text": self.answer.text}
        return {
            **self._head(),
            "content": [content],
            "stop_reason": self._stop_reason(),
            "usage": self._usage(self._output_tokens()),
        }

    def events(self) -> list[bytes]:
        if self.answer.text is None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_1",
                "name": self.answer.tool_name,
                "input": {},
            }
            deltas = [
                {"type": "input_json_delta", "partial_json": piece} for piece in _pieces(TOOL_ARGUMENTS)
            ]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(self.answer.text)]
        start = {**self._head(), "content": [], "stop_reason": None, "usage": self._usage(1)}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
            ("ping", {"type": "ping"}),
            *(
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
                for d in deltas
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
                    "usage": {"output_tokens": self._output_tokens()},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [
            b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events
        ]

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "stop_sequence": None,
        }

    def _stop_reason(self) -> str:
        return "tool_use" if self.answer.text is None else "end_turn"

    def _output_tokens(self) -> int:
        return _words(self.answer.text or TOOL_ARGUMENTS)

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }


def _embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        inputs = [" ".join(map(str, raw))]  # one input given as token ids
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
    else:
        raise _WireError(400, "'input' must be a string, an array of strings or an array of token ids")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(inputs):
        vector: list[float] | str = embedding_of(text)
        if as_base64:  # what OpenAI sends, and what its SDK asks for by default: little-endian float32
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(_words(text) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embedding_of(text: str) -> list[float]:
    """The 8 floats the fake answers for `text`: exact in float32, in [-1, 1)."""
    return [(byte - 128) / 128 for byte in hashlib.sha256(text.encode()).digest()[:8]]


# -- wire helpers --------------------------------------------------------------------------------


def _take_failure(failures: list[_Failure], path: str, model: object = None) -> _Failure | None:
    for failure in failures:
        if failure.path in (None, path) and failure.model in (None, model):
            failure.remaining -= 1
            if failure.remaining <= 0:
                failures.remove(failure)
            return failure
    return None


def _failure_response(wire: Wire, failure: _Failure) -> web.Response:
    if failure.body is None:
        response = _error_response(wire, failure.status, f"fake upstream error {failure.status}")
    elif isinstance(failure.body, bytes):
        response = web.Response(status=failure.status, body=failure.body, content_type="text/plain")
    else:
        response = _json_response(failure.body, failure.status)
    for name, value in failure.headers.items():
        response.headers[name] = value
    return response


def _error_response(wire: Wire, status: int, message: str) -> web.Response:
    if wire == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return _json_response({"type": "error", "error": {"type": kind, "message": message}}, status)
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    kind, code = _OPENAI_ERROR_TYPES.get(status, default)
    return _json_response({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def _json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _require_body(request: web.Request) -> dict[str, Any]:
    body = request[_INCOMING].body
    if body is None:
        raise _WireError(400, "the body must be a JSON object")
    return body


def _require_api_version(request: web.Request) -> None:
    if "api-version" not in request.query:
        raise _WireError(404, "Resource not found: the api-version query parameter is missing")


@dataclass(frozen=True)
class _Responses:
    """One OpenAI Responses answer, as a `response` or as its event sequence."""

    id: str
    body: dict[str, Any]
    answer: _Answer
    input_tokens: int

    def item(self) -> dict[str, Any]:
        if self.answer.text is None:
            return {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": self.answer.tool_name,
                    "arguments": TOOL_ARGUMENTS, "status": "completed"}  # fmt: skip
        part = {"type": "output_text", "text": self.answer.text, "annotations": []}
        return {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }

    def response(self, status: str) -> dict[str, Any]:
        done = status == "completed"
        output_tokens = _words(self.answer.text or TOOL_ARGUMENTS)
        usage = {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + output_tokens,
        }
        return {
            "id": self.id,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": self.body["model"],
            "output": [self.item()] if done else [],
            "previous_response_id": self.body.get("previous_response_id"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": self.body.get("tools") or [],
            "usage": usage if done else None,
        }

    def events(self) -> list[bytes]:
        item = self.item()
        if item["type"] == "message":
            pending = {**item, "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            at = {"item_id": "msg_1", "output_index": 0}
            middle = [
                ("response.content_part.added", {**at, "content_index": 0, "part": part}),
                *(
                    ("response.output_text.delta", {**at, "content_index": 0, "delta": piece, "logprobs": []})
                    for piece in _pieces(self.answer.text or "")
                ),
                (
                    "response.output_text.done",
                    {**at, "content_index": 0, "text": self.answer.text, "logprobs": []},
                ),
                ("response.content_part.done", {**at, "content_index": 0, "part": item["content"][0]}),
            ]
        else:
            pending = {**item, "status": "in_progress", "arguments": ""}
            at = {"item_id": "fc_1", "output_index": 0}
            middle = [
                *(
                    ("response.function_call_arguments.delta", {**at, "delta": piece})
                    for piece in _pieces(TOOL_ARGUMENTS)
                ),
                ("response.function_call_arguments.done", {**at, "arguments": TOOL_ARGUMENTS}),
            ]
        events = [
            ("response.created", {"response": self.response("in_progress")}),
            ("response.in_progress", {"response": self.response("in_progress")}),
            ("response.output_item.added", {"output_index": 0, "item": pending}),
            *middle,
            ("response.output_item.done", {"output_index": 0, "item": item}),
            ("response.completed", {"response": self.response("completed")}),
        ]
        return [
            b"event: "
            + kind.encode()
            + b"\ndata: "
            + orjson.dumps({"type": kind, "sequence_number": i, **data})
            + b"\n\n"
            for i, (kind, data) in enumerate(events)
        ]


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list, joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """`text` split after each space, spaces kept: "echo: a b" -> ["echo: ", "a ", "b"]."""
    return [piece for piece in re.split(r"(?<= )", text) if piece]
