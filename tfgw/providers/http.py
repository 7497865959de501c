"""The one HTTP client factory for provider calls, and the one place its exceptions are mapped.

aiohttp is the upstream client by measurement (docs/architecture.md, bench/README.md): a Quart+Hypercorn proxy
served 1,720 req/s at 0.53 ms CPU per request with aiohttp against 275 req/s at 3.6 ms with a
stock `httpx.AsyncClient`, whose pool slows down as concurrency rises.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import orjson

from tfgw.config import Timeouts
from tfgw.errors import ProviderError, ProviderTimeoutError, UpstreamStatusError
from tfgw.providers.base import Chunk, Stream, StreamBatch
from tfgw.secrets import scrub

#: a byte as an int, for `in`: `b"\r" in data` makes CPython (3.11) try the needle as an int,
#: raise and clear a TypeError, then search (~2,000 instructions); an int is tested in C at once.
#: A needle of more bytes: `data.find(needle) >= 0`, which takes a buffer first.
CR, LF = 13, 10

__all__ = [
    "JSON_STRING",
    "EventReader",
    "HttpClient",
    "InvalidEventError",
    "PassThrough",
    "Proxies",
    "SseStream",
    "create_session",
    "named_events",
    "proxy_for",
    "sse_data",
    "sse_events",
]


def create_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        # Not trust_env: it re-reads ~/.netrc and scans os.environ in executor threads on every
        # request, half of the gateway's CPU (bench/README.md). Proxies are resolved once instead.
        trust_env=False,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        headers={"user-agent": "tfgw"},
    )


class Proxies:
    """HTTP(S)_PROXY / NO_PROXY as every other HTTP tool honours them, read from the environment
    once at start-up and decided once per host."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        if env is None:
            self.proxies = urllib.request.getproxies_environment()
        else:
            self.proxies = {k[:-6].lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
        self._by_origin: dict[tuple[str, str], str | None] = {}

    def for_url(self, url: str) -> str | None:
        if not self.proxies:
            return None
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0]
        key = (scheme, host)
        try:
            return self._by_origin[key]
        except KeyError:
            pass
        proxy = self.proxies.get(scheme)
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # stdlib, untyped
        if proxy and bypass(host.rsplit(":", 1)[0], self.proxies):
            proxy = None
        self._by_origin[key] = proxy
        return proxy


_proxies: Proxies | None = None


def proxy_for(url: str) -> str | None:
    global _proxies
    if _proxies is None:
        _proxies = Proxies()
    return _proxies.for_url(url)


class HttpClient:
    """A provider's view of the shared session: it knows the provider's name and secrets, so errors
    name the provider and never carry its keys."""

    def __init__(self, session: aiohttp.ClientSession, provider: str, secrets: Iterable[str | None]) -> None:
        self.session = session
        self.provider = provider
        self.secrets = tuple(s for s in secrets if s)

    def _timeout(self, timeout: Timeouts) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=timeout.total, sock_connect=timeout.connect, sock_read=timeout.first_token
        )

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeouts
    ) -> tuple[int, bytes]:
        """POST and read the whole answer. A 4xx/5xx status raises `UpstreamStatusError`."""
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout), proxy=proxy_for(url)
            ) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise self.status_error(resp, data)
                return resp.status, data
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self.map_error(exc) from exc

    async def open(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeouts
    ) -> aiohttp.ClientResponse:
        """POST and return the response once its status is known to be a success (for streams)."""
        try:
            resp = await self.session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout), proxy=proxy_for(url)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self.map_error(exc) from exc
        if resp.status >= 400:
            try:
                data = await resp.read()
            except Exception:
                data = b""
            finally:
                resp.release()
            raise self.status_error(resp, data)
        return resp

    def decode(self, body: bytes) -> dict[str, Any]:
        """Parse a provider's JSON answer; anything but a JSON object is the provider's failure."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise ProviderError(f"provider {self.provider!r} returned a body that is not a JSON object")
        return data

    def status_error(self, resp: aiohttp.ClientResponse, data: bytes) -> UpstreamStatusError:
        headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() == "retry-after"}
        return UpstreamStatusError(self.provider, resp.status, scrub(data, self.secrets), headers)

    def map_error(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderTimeoutError(f"provider {self.provider!r} timed out")
        if isinstance(exc, aiohttp.ClientConnectionError):
            return ProviderError(f"provider {self.provider!r} is unreachable: {type(exc).__name__}")
        return ProviderError(f"provider {self.provider!r} failed: {type(exc).__name__}")


class InvalidEventError(ProviderError):
    """A stream event whose data is not JSON: relayed as it came, it tells the client nothing, so
    the route's own error event follows it (unlike a provider's error event, which is the news)."""


class SseStream(Stream):
    """An upstream SSE response read as it arrives; subclasses turn its events into OpenAI frames.

    `reads()` yields each read untouched, for streams passed on byte for byte, beside what it
    brought cut after its last complete event (`whole`: the rest waits for the next read), with
    CRLF line ends made LF: bytes that can be relayed as they are, and that `sse_events()` splits
    into events. A subclass on the hot path reads with `whole` and `last` itself, one async
    generator fewer between aiohttp and the client a read."""

    def __init__(self, client: HttpClient, resp: aiohttp.ClientResponse) -> None:
        self.client = client
        self.resp = resp
        self._rest = b""

    def whole(self, data: bytes) -> bytes:
        """The whole events `data` completes, after what earlier reads left over, with LF line ends
        (b"" when it completes none); what follows the last of them waits for the next read."""
        rest = self._rest
        block = rest + data if rest else data
        if CR in block:
            block = block.replace(b"\r\n", b"\n")
        if block.endswith(b"\n\n"):  # the most reads: whole events, nothing left over
            self._rest = b""
            return block
        cut = block.rfind(b"\n\n") + 2
        if cut == 1:  # no event ends in it yet
            self._rest = block
            return b""
        self._rest = block[cut:]
        return block[:cut]

    def last(self) -> bytes:
        """Once the body has ended: its last event if no blank line ended it (b"" if none)."""
        rest, self._rest = self._rest, b""
        return rest + b"\n\n" if rest.strip() else b""

    async def reads(self) -> AsyncGenerator[tuple[bytes, bytes], None]:
        """Each read as it came, with the whole events it completed (LF line ends; b"" when it
        completed none), for a stream passed on byte for byte and read on the side."""
        read = self.resp.content.readany  # what `iter_any()` awaits a read, one coroutine less
        with self:
            while data := await read():  # b"" once the body has ended
                yield data, self.whole(data)
            if block := self.last():
                yield b"", block

    def __enter__(self) -> None:
        """`with self:` around the reads of the stream (see `__exit__`), no object made for it."""

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """The response released however the reading ends; a failure of the reads is the
        provider's (`map_error`; a `ProviderError` as it is, and CancelledError, not an
        `Exception`, goes on as it is too)."""
        self.resp.release()
        if isinstance(exc, Exception) and not isinstance(exc, ProviderError):
            raise self.client.map_error(exc) from exc

    async def aclose(self) -> None:
        self.resp.close()

    def parse(self, data: bytes) -> Any:
        """An event's JSON data; anything else is the provider's failure."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self.invalid() from exc

    def invalid(self) -> InvalidEventError:
        return InvalidEventError(f"provider {self.client.provider!r} sent an invalid SSE event")


class EventReader(Protocol):
    """Reads a stream's events as `Chunk`s: `text_of` an event's bytes when it is the API's plain
    text event (else None), or `feed` its parsed data (raising `ProviderError` for an error event);
    `finished` once the API's `terminal` event came, `final` the chunks left after the last event
    (a usage chunk)."""

    terminal: str
    #: events that say nothing the span needs: passed on, never parsed
    ignored: frozenset[str]
    #: events that say only that the stream is complete (`finished`): never parsed either
    ends: frozenset[str]
    #: how a block of named one-line events is read when the API's plain text event has one exact
    #: shape (`named_events`): that event's text as a JSON string, any other event's name and data
    text_events: re.Pattern[bytes] | None
    finished: bool

    @property
    def usage(self) -> dict[str, Any] | None: ...  # OpenAI-shaped, as far as the events said
    #: the text of a plain text event, read fast ("" for an event known to say nothing)
    def text_of(self, data: bytes) -> str | None: ...
    def feed(self, event: str | None, data: Any) -> Sequence[Chunk]: ...
    def final(self) -> Sequence[Chunk]: ...


class PassThrough(SseStream):
    """A provider's SSE response in the client's own API, relayed as it came, each read in one write;
    its events are read on the side as chat chunks for the span (`reader`). An error event reaches
    the client as the provider sent it and then ends the stream as failed; so does a stream that
    ends before the API's terminal event. An event that is not JSON reaches the client too, and is
    followed by the route's own error event."""

    def __init__(self, client: HttpClient, resp: aiohttp.ClientResponse, reader: EventReader) -> None:
        super().__init__(client, resp)
        self.reader = reader

    def reported_usage(self) -> dict[str, Any] | None:
        return self.reader.usage

    async def batches(self) -> AsyncIterator[StreamBatch]:
        failed: ProviderError | None = None
        texts = self.reader.text_events
        names, loads = _NAMES, orjson.loads
        async for data, block in self.reads():
            chunks: list[Chunk] = []
            if texts is not None and block.startswith(b"event: ") and _NAMED_EVENTS.fullmatch(block):
                for text, name, raw in texts.findall(block):  # a plain text event: its text alone
                    try:
                        if not text:
                            self.read(names.get(name) or _name(name), raw, chunks)
                        elif text != b'""':
                            chunks.append(loads(text))
                    except orjson.JSONDecodeError:
                        failed = failed or self.invalid()
                    except ProviderError as exc:  # an error event, or one that is not JSON
                        failed = failed or exc
            else:
                for event, raw in sse_events(block):
                    try:
                        self.read(event, raw, chunks)
                    except ProviderError as exc:
                        failed = failed or exc
            yield data, chunks
        reader = self.reader
        if failed is not None:  # the client has had the event the failure came from: its news
            failed.relayed = not isinstance(failed, InvalidEventError)  # unless it was not JSON
        elif not reader.finished:
            provider = self.client.provider
            failed = ProviderError(f"provider {provider!r} ended the stream before {reader.terminal}")
        yield b"", list(reader.final())
        if failed is not None:
            raise failed

    def read(self, event: str | None, raw: bytes, chunks: list[Chunk]) -> None:
        """Read one event for the span into `chunks`; an error event, or one that is not JSON,
        raises `ProviderError`."""
        reader = self.reader
        if event in reader.ignored:
            return
        if (text := reader.text_of(raw)) is not None:
            if text:
                chunks.append(text)
            return
        if event in reader.ends:
            reader.finished = True
        elif raw != b"[DONE]":
            chunks.extend(reader.feed(event, self.parse(raw)))


#: a block of nothing but named events of one data line each, as Anthropic and Responses send them
_NAMED_EVENTS = re.compile(rb"(?:event: [^\n]*\ndata: [^\n]*\n\n)+")
_NAMED_EVENT_SOURCE = rb"event: ([^\n]*)\ndata: ([^\n]*)\n\n"
_NAMED_EVENT = re.compile(_NAMED_EVENT_SOURCE)
#: a JSON string on one line, quotes included (the unrolled form: no backtracking to speak of)
JSON_STRING = rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
#: event names as str, decoded once (an API has a dozen; a provider inventing more is not cached)
_NAMES: dict[bytes, str] = {}
MAX_NAMES = 64


def _name(raw: bytes) -> str:
    name = raw.strip().decode()
    if len(_NAMES) < MAX_NAMES:
        _NAMES[raw] = name
    return name


def named_events(text_event: bytes) -> re.Pattern[bytes]:
    """An `EventReader.text_events`: `text_event` matches an API's plain text event whole, `event:`
    line to blank line, and its one group is the event's text as a JSON string (`JSON_STRING`);
    it must match only events `text_of` reads as that text. Every other named event is matched as
    `(name, data)` (the groups a match leaves unset are b"")."""
    return re.compile(text_event + rb"|" + _NAMED_EVENT_SOURCE)


def sse_data(block: bytes) -> list[bytes]:
    """The data of every event in `block` (whole events, LF line ends), in order, as `sse_events`
    reads them, the events' names aside. A block of nothing but one-line `data: ` events, what
    OpenAI sends, is split in C: cut at each blank line followed by `data: `, it is that if its LFs
    are only those blank lines' and its last one's (no event has a second line, or another field)."""
    if block.startswith(b"data: ") and block.endswith(b"\n\n"):
        data = block[6:-2].split(b"\n\ndata: ")
        if block.count(LF) == 2 * len(data):
            return data
    return [data for _, data in sse_events(block)]


def sse_events(block: bytes) -> list[tuple[str | None, bytes]]:
    """`(event name, data)` of every event in `block` (whole events, LF line ends), in order.
    Comments, `id:` and `retry:` lines are skipped; several `data:` lines are joined by LF."""
    if block.startswith(b"event: ") and _NAMED_EVENTS.fullmatch(block):  # the common case, in C
        names = _NAMES
        return [(names.get(n) or _name(n), d) for n, d in _NAMED_EVENT.findall(block)]
    events: list[tuple[str | None, bytes]] = []
    for raw in block.split(b"\n\n"):
        if raw.startswith(b"data: ") and LF not in raw:  # one data line: what OpenAI sends
            events.append((None, raw[6:]))
            continue
        if raw.startswith(b"event: "):  # a name and one data line: what Anthropic and Responses send
            end = raw.find(b"\n")
            if raw.startswith(b"data: ", end + 1) and raw.find(b"\n", end + 1) < 0:
                events.append((raw[7:end].strip().decode(), raw[end + 7 :]))
                continue
        event: str | None = None
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
        if data:
            events.append((event, b"\n".join(data)))
    return events
