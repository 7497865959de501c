"""A request the traced routes serve on bare ASGI (`tfgw.gateway.fast`), read as Quart reads one.

What the routes read of a request is its method, path, headers, `Content-Length` and body
(`stages.current_request()`): `Incoming` has those from the ASGI scope and `receive`, with Quart's
limit and error for the body (413 past `[server] max_body_bytes`, werkzeug's own exception; the
408 past `[server] body_timeout` is `stages.whole_body`'s, for this request as for Quart's). Once
the body has come it watches, in a task of its own, for the client to go away, and then cancels
the request's task, as Quart's receiver task does: an upstream call or stream the client no
longer waits for is closed, and its trace says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge

__all__ = ["Incoming"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


class Incoming:
    __slots__ = (
        "_receive",
        "_watcher",
        "body_timeout",
        "content_length",
        "gone",
        "headers",
        "max_body",
        "method",
        "path",
        "task",
    )

    def __init__(
        self, scope: dict[str, Any], receive: Receive, max_body: int | None, body_timeout: float | None
    ) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        #: by lower-case name, the last of a repeated one (as `stages.client_headers` keeps them)
        pairs = scope["headers"]
        self.headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in pairs}
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.gone = False  # the client went away, and the request's task was cancelled for it
        self.task: asyncio.Task[Any] | None = None
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None

    async def read(self) -> bytes:
        """The whole body (under `body_timeout`, which `stages.whole_body` applies to any request);
        then the watch for the client going away begins."""
        body = await self._body()
        self.task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return body

    async def _body(self) -> bytes:
        parts: list[bytes] = []
        size, limit = 0, self.max_body
        while True:
            message = await self._receive()
            if message["type"] != "http.request":  # http.disconnect: nobody to answer
                self.gone = True
                raise asyncio.CancelledError()
            part = message.get("body", b"")
            size += len(part)
            if limit is not None and size > limit:
                raise RequestEntityTooLarge()
            if not message.get("more_body", False):
                return b"".join(parts) + part if parts else part
            parts.append(part)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self.task is not None:
            self.gone = True
            self.task.cancel()

    def answered(self) -> None:
        """The request is over for it: no client going away cancels anything now."""
        self.task = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
