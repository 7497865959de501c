"""A fake OpenAI and Anthropic provider that costs as little CPU as possible, for benchmarking the
gateway.

A raw asyncio `Protocol` HTTP/1.1 server on uvloop: no framework, keep-alive, pipelining, bodies
framed by Content-Length. Every answer is built once at start-up and written with one
`transport.write`:

* `POST /v1/chat/completions` -> a canned `chat.completion` (~600 bytes, with usage);
  if the body asks for `"stream": true`, a canned SSE stream of 20 chunks and `data: [DONE]`,
  sent with chunked transfer encoding (plus a usage chunk when `"include_usage": true`);
* `POST /v1/messages` -> a canned Anthropic `message` (with usage); with `"stream": true`, the
  Anthropic event sequence: `message_start`, `content_block_start`, `ping`, 18
  `content_block_delta` text deltas (the chat stream's 18 content chunks, word for word),
  `content_block_stop`, `message_delta` (with usage) and `message_stop`, in chunked transfer
  encoding, one HTTP chunk per event;
* `POST /v1/responses` -> a canned OpenAI Responses `response` (with usage); with
  `"stream": true`, the Responses event sequence: `response.created`, `response.in_progress`,
  `response.output_item.added`, `response.content_part.added`, 18 `response.output_text.delta`
  (the chat stream's 18 content chunks, word for word), `response.output_text.done`,
  `response.content_part.done`, `response.output_item.done`, `response.completed` (with usage),
  one HTTP chunk per event;
* `POST /v1/embeddings` -> a canned `list` of one 8-float embedding (with usage), whatever the input;
* `GET /healthz` -> 200 `ok`; anything else -> 404.

With `--pace-ms N` a stream is written as real providers stream it instead: the head with the
first event, then each further SSE event in its own write, N ms apart (asyncio timers: about N,
never less). The bytes are the same as in one write; requests that follow on the connection are
answered once the stream is done. Non-streaming answers are never paced.

Usage: `python bench/fake_upstream.py --port 9000 [--pace-ms 1]` (prints `ready` on stdout once
listening).
Loopback only: it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from typing import cast

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CREATED = 1_732_000_000
MODEL = "gpt-4o-mini-2024-07-18"
CLAUDE_MODEL = "claude-sonnet-4-5-20250929"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
REPLY_TEXT = "Hello! I hope you are having a wonderful day today."
STREAM_CHUNKS = 20
#: content_block_delta events of a streamed message: as many as the chat stream's content chunks,
#: with the same words, so both APIs answer the same question with the same text in as many events
TEXT_DELTAS = STREAM_CHUNKS - 2

STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
INCLUDE_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CONNECTION_CLOSE_RE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


def completion_json() -> bytes:
    """A realistic non-streaming answer, shaped like OpenAI's own."""
    return orjson.dumps(
        {
            "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 14,
                "completion_tokens": 12,
                "total_tokens": 26,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_0ba0d124f1",
        }
    )


def chunk_json(delta: dict[str, object], finish_reason: str | None, usage: object = None) -> bytes:
    choices = (
        [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return orjson.dumps(
        {
            "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": choices,
            "usage": usage,
        }
    )


def stream_events(include_usage: bool) -> list[bytes]:
    """SSE events: a role chunk, content chunks, a finish chunk (20 in all), [optional usage], [DONE]."""
    words = REPLY_TEXT.split(" ")
    contents = [words[i % len(words)] + " " for i in range(STREAM_CHUNKS - 2)]
    chunks = [chunk_json({"role": "assistant", "content": "", "refusal": None}, None)]
    chunks += [chunk_json({"content": text}, None) for text in contents]
    chunks.append(chunk_json({}, "stop"))
    if include_usage:
        usage = {"prompt_tokens": 14, "completion_tokens": STREAM_CHUNKS - 2, "total_tokens": 32}
        chunks.append(chunk_json({}, None, usage))
    return [b"data: " + chunk + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def message_json() -> bytes:
    """A realistic non-streaming Anthropic answer, shaped like Anthropic's own."""
    return orjson.dumps(
        {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": CLAUDE_MODEL,
            "content": [{"type": "text", "text": REPLY_TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 14,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 12,
                "service_tier": "standard",
            },
        }
    )


def message_events() -> list[bytes]:
    """The SSE events of a streamed Anthropic message, as Anthropic sends them (`event:` and
    `data:` lines): start, a text block of TEXT_DELTAS deltas with a ping before them, the stop."""
    words = REPLY_TEXT.split(" ")
    start: dict[str, object] = {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": CLAUDE_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 14,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard",
        },
    }
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        for text in (words[i % len(words)] + " " for i in range(TEXT_DELTAS))
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": TEXT_DELTAS},
        },
        {"type": "message_stop"},
    ]
    return [b"event: %s\ndata: %s\n\n" % (str(e["type"]).encode(), orjson.dumps(e)) for e in events]


RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
RESPONSE_ITEM_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
EMBEDDING = [0.0023064255, -0.009327292, -0.0028842222, 0.015815351, -0.0121234, 0.0071401, -0.01234, 0.00451]


def responses_object(status: str) -> dict[str, object]:
    """An OpenAI Responses `response`, shaped like OpenAI's own: the answer when `completed`."""
    done = status == "completed"
    part = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
    item = {
        "type": "message",
        "id": RESPONSE_ITEM_ID,
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    usage = {
        "input_tokens": 14,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 26,
    }
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "model": MODEL,
        "output": [item] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage if done else None,
    }


def responses_events() -> list[bytes]:
    """The SSE events of a streamed Responses answer, as OpenAI sends them (`event:` and `data:`
    lines, each with its `sequence_number`): a message item of TEXT_DELTAS text deltas."""
    words = REPLY_TEXT.split(" ")
    at = {"item_id": RESPONSE_ITEM_ID, "output_index": 0}
    item = cast(list[dict[str, object]], responses_object("completed")["output"])[0]
    pending = {**item, "status": "in_progress", "content": []}
    empty = {"type": "output_text", "text": "", "annotations": []}
    events: list[tuple[str, dict[str, object]]] = [
        ("response.created", {"response": responses_object("in_progress")}),
        ("response.in_progress", {"response": responses_object("in_progress")}),
        ("response.output_item.added", {"output_index": 0, "item": pending}),
        ("response.content_part.added", {**at, "content_index": 0, "part": empty}),
    ]
    events += [
        ("response.output_text.delta", {**at, "content_index": 0, "delta": text, "logprobs": []})
        for text in (words[i % len(words)] + " " for i in range(TEXT_DELTAS))
    ]
    events += [
        ("response.output_text.done", {**at, "content_index": 0, "text": REPLY_TEXT, "logprobs": []}),
        (
            "response.content_part.done",
            {**at, "content_index": 0, "part": cast(list[object], item["content"])[0]},
        ),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": responses_object("completed")}),
    ]
    return [
        b"event: %s\ndata: %s\n\n"
        % (kind.encode(), orjson.dumps({"type": kind, "sequence_number": n, **data}))
        for n, (kind, data) in enumerate(events)
    ]


def embeddings_json() -> bytes:
    """A realistic embeddings answer (one short vector), shaped like OpenAI's own."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": EMBEDDING}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 5, "total_tokens": 5},
        }
    )


def http_chunk(event: bytes) -> bytes:
    """One chunk of chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(event), event)


LAST_CHUNK = b"0\r\n\r\n"


def response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (
        status,
        content_type,
        len(body),
    )
    return head + body


def stream_parts(events: list[bytes]) -> list[bytes]:
    """A streamed answer of `events` (chunked transfer encoding, one HTTP chunk per SSE event) as
    its paced writes: the head with the first event, then one write per further event, the last
    with the last chunk."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    parts = [http_chunk(event) for event in events]
    parts[0] = head + parts[0]
    parts[-1] += LAST_CHUNK
    return parts


COMPLETION = response(b"200 OK", b"application/json", completion_json())
STREAM_PARTS = stream_parts(stream_events(include_usage=False))
STREAM_WITH_USAGE_PARTS = stream_parts(stream_events(include_usage=True))
STREAM = b"".join(STREAM_PARTS)
STREAM_WITH_USAGE = b"".join(STREAM_WITH_USAGE_PARTS)
MESSAGE = response(b"200 OK", b"application/json", message_json())
MESSAGE_STREAM_PARTS = stream_parts(message_events())
MESSAGE_STREAM = b"".join(MESSAGE_STREAM_PARTS)
RESPONSE = response(b"200 OK", b"application/json", orjson.dumps(responses_object("completed")))
RESPONSE_STREAM_PARTS = stream_parts(responses_events())
RESPONSE_STREAM = b"".join(RESPONSE_STREAM_PARTS)
EMBEDDINGS = response(b"200 OK", b"application/json", embeddings_json())
PACED = {
    STREAM: STREAM_PARTS,
    STREAM_WITH_USAGE: STREAM_WITH_USAGE_PARTS,
    MESSAGE_STREAM: MESSAGE_STREAM_PARTS,
    RESPONSE_STREAM: RESPONSE_STREAM_PARTS,
}
HEALTHY = response(b"200 OK", b"text/plain", b"ok")
NOT_FOUND = response(b"404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
TOO_LARGE = response(b"413 Payload Too Large", b"application/json", b'{"error":{"message":"too large"}}')
BAD_REQUEST = response(b"400 Bad Request", b"application/json", b'{"error":{"message":"bad request"}}')


def answer(request_line: bytes, body: bytes) -> bytes:
    """The canned response for one request."""
    if request_line.startswith(b"POST /v1/chat/completions "):
        if STREAM_RE.search(body):
            return STREAM_WITH_USAGE if INCLUDE_USAGE_RE.search(body) else STREAM
        return COMPLETION
    if request_line.startswith(b"POST /v1/messages "):
        return MESSAGE_STREAM if STREAM_RE.search(body) else MESSAGE
    if request_line.startswith(b"POST /v1/responses "):
        return RESPONSE_STREAM if STREAM_RE.search(body) else RESPONSE
    if request_line.startswith(b"POST /v1/embeddings "):
        return EMBEDDINGS
    if request_line.startswith(b"GET /healthz "):
        return HEALTHY
    return NOT_FOUND


class UpstreamProtocol(asyncio.Protocol):
    """One connection: buffer bytes, answer every complete request in order."""

    def __init__(self, pace_s: float = 0.0) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pace_s = pace_s
        self.pacing: asyncio.Task[None] | None = None  # the paced stream being written, if any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.drain()

    def drain(self) -> None:
        while self.transport is not None and self.pacing is None and self.handle_one():
            pass

    def handle_one(self) -> bool:
        """Answer the request at the head of the buffer; False when it is not complete yet."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self.fail(BAD_REQUEST)
            return False
        head = bytes(self.buffer[:head_end])
        match = CONTENT_LENGTH_RE.search(head)
        length = int(match.group(1)) if match else 0
        if length > MAX_BODY_BYTES:
            self.fail(TOO_LARGE)
            return False
        body_start = head_end + 4
        if len(self.buffer) < body_start + length:
            return False
        body = bytes(self.buffer[body_start : body_start + length])
        del self.buffer[: body_start + length]
        request_line = head.split(b"\r\n", 1)[0]
        close = bool(CONNECTION_CLOSE_RE.search(head)) or request_line.endswith(b"HTTP/1.0")
        reply = answer(request_line, body)
        if self.pace_s > 0 and reply in PACED:
            self.pacing = asyncio.get_running_loop().create_task(self.paced(PACED[reply], close))
            return False
        assert self.transport is not None
        self.transport.write(reply)
        if close:
            self.fail(None)
            return False
        return True

    async def paced(self, parts: list[bytes], close: bool) -> None:
        """Write `parts` `pace_s` apart, then close or answer what is buffered behind them."""
        for n, part in enumerate(parts):
            if n:
                await asyncio.sleep(self.pace_s)
            if self.transport is None:
                return
            self.transport.write(part)
        self.pacing = None
        if close:
            self.fail(None)
        else:
            self.drain()

    def fail(self, reply: bytes | None) -> None:
        """Send `reply` (if any) and close the connection."""
        if self.transport is not None:
            if reply is not None:
                self.transport.write(reply)
            self.transport.close()
            self.transport = None
        self.buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.pacing is not None:
            self.pacing.cancel()


async def serve(host: str, port: int, pace_ms: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: UpstreamProtocol(pace_ms / 1000), host, port, backlog=1024, reuse_address=True
    )
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--pace-ms", type=float, default=0.0, help="ms between a stream's events (default 0: one write)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.pace_ms <= 1000:
        parser.exit(2, f"error: --pace-ms must be within 0..1000, got {args.pace_ms:g}\n")
    if uvloop is not None:
        uvloop.run(serve(args.host, args.port, args.pace_ms))
    else:
        asyncio.run(serve(args.host, args.port, args.pace_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
