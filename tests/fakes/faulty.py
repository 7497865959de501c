"""A faulty model provider: a raw asyncio TCP server on loopback that breaks HTTP on purpose.

`with FaultyUpstream() as up:` serves on `up.url` from a background thread with its own event loop.
It reads one HTTP/1.1 request (headers, then `Content-Length` bytes of JSON), and the body's `model`
names the fault (`FAULTS`); the path says which API's events a stream sends before the fault
(`/v1/chat/completions`, `/v1/messages`, `/v1/responses`; anything else is answered as JSON):

- `reset_body`: a 200 whose `Content-Length` promises more than the half body sent, then a TCP reset
- `reset_stream`: a stream's first events, then a TCP reset (a JSON request: as `reset_body`)
- `slow_headers`: reads the request and sends nothing until the client goes away
- `slow_first_token`: a stream's headers, then nothing (a JSON request: headers, no body)
- `truncate`: a stream's first events, then a clean close before the terminal event (a JSON
  request: half the promised body, then a clean close)
- `invalid_json`: a 200 whose body (or first event's data) is not JSON
- `storm`: every call answered 503 with an OpenAI-shaped error
- `drip`: a stream's first events, then a comment every 20 ms until the client goes away

`up.calls[fault]` counts the requests of each fault, `up.disconnects[fault]` the connections the
client closed while the fault was still answering (a stall or a drip it walked away from).
`refused_url()` is a loopback URL where nothing listens (connection refused).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter
from types import TracebackType
from typing import Any

import orjson

__all__ = ["FAULTS", "FaultyUpstream", "refused_url"]

FAULTS = (
    "reset_body",
    "reset_stream",
    "slow_headers",
    "slow_first_token",
    "truncate",
    "invalid_json",
    "storm",
    "drip",
)
CHAT_CHUNK = {
    "id": "chatcmpl-faulty",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "faulty",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial "}, "finish_reason": None}],
}
MESSAGE = {
    "id": "msg_faulty", "type": "message", "role": "assistant", "model": "faulty", "content": [],
    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 1},
}  # fmt: skip
RESPONSE = {
    "id": "resp_faulty", "object": "response", "created_at": 1_700_000_000, "status": "in_progress",
    "model": "faulty", "output": [], "usage": None,
}  # fmt: skip
COMPLETION = {
    "id": "chatcmpl-faulty",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "faulty",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
STORM = orjson.dumps({"error": {"message": "overloaded", "type": "server_error", "code": None}})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def first_events(path: str) -> bytes:
    """What a stream of `path`'s API sends before its fault: its opening events and one piece of text."""
    if path.startswith("/v1/messages"):
        block = {"index": 0, "content_block": {"type": "text", "text": ""}}
        delta = {"index": 0, "delta": {"type": "text_delta", "text": "partial "}}
        return (
            _event("message_start", {"message": MESSAGE})
            + _event("content_block_start", block)
            + _event("content_block_delta", delta)
        )
    if path.startswith("/v1/responses"):
        return _event("response.created", {"sequence_number": 0, "response": RESPONSE})
    return b"data: " + orjson.dumps(CHAT_CHUNK) + b"\n\n"


def refused_url() -> str:
    """A loopback URL where nothing listens: a port the kernel gave out and took back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Service Unavailable'}",
             f"content-type: {content_type}", "connection: close"]  # fmt: skip
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FaultyUpstream:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyUpstream:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="faulty upstream")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the faulty upstream did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._server is not None:
            server, loop = self._server, self._loop
            asyncio.run_coroutine_threadsafe(self._close(server), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.close()

    async def _close(self, server: asyncio.Server) -> None:
        server.close()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()

    def count(self, table: Counter[str], fault: str) -> None:
        with self._lock:
            table[fault] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            body = orjson.loads(await reader.readexactly(length))
            fault, stream = str(body.get("model")), bool(body.get("stream"))
            self.count(self.calls, fault)
            await self._answer(fault, path, stream, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, fault: str, path: str, stream: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sse = _head(200, "text/event-stream", None)
        whole = orjson.dumps(COMPLETION)
        if fault == "storm":
            writer.write(_head(503, "application/json", len(STORM)) + STORM)
        elif fault == "invalid_json":
            bad = b"data: {not json\n\n" if stream else b'{"id": "chatcmpl-faulty", not json'
            writer.write(sse + bad if stream else _head(200, "application/json", len(bad)) + bad)
        elif fault in ("reset_body", "reset_stream"):
            writer.write(
                sse + first_events(path)
                if stream
                else _head(200, "application/json", len(whole)) + whole[:40]
            )
            await writer.drain()
            _reset(writer)
        elif fault == "truncate":
            writer.write(
                sse + first_events(path)
                if stream
                else _head(200, "application/json", len(whole)) + whole[:40]
            )
        elif fault in ("slow_headers", "slow_first_token", "drip"):
            if fault != "slow_headers":
                writer.write(
                    sse + first_events(path) * (fault == "drip")
                    if stream
                    else _head(200, "application/json", len(whole))
                )
            await self._until_gone(fault, reader, writer)
        await writer.drain()

    async def _until_gone(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Stall (or drip comments) until the client closes the connection; count that."""
        while True:
            if fault == "drip":
                writer.write(b": drip\n\n")
            try:
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), 0.02) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        self.count(self.disconnects, fault)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN: SO_LINGER on, with a zero timeout."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
