"""The exact-match response cache: a model's answers kept `ttl` seconds (`cache = { ttl = 300 }`
on the model), in memory, bounded by bytes over all models (`[server] cache_max_mb`).

- `request_key` is the digest of a normalised request: the route, who asked (the gateway key's
  name, unless the model's cache is `shared`) and the body with its keys sorted, less the fields
  that never change the answer (`IGNORED`). A request that differs in anything else (a
  temperature, a message, `stream`) is another entry. Sampling is not undone: a cached answer is
  the one answer the first request got, whatever its temperature.
- `ResponseCache` holds `Cached` answers, least recently used evicted first once their bytes pass
  the bound; an entry larger than an eighth of the bound is never stored. An expired entry goes
  when it is next read (or when it is the oldest and room is needed).
- A stream is cached as the whole SSE byte stream the client was sent: `StreamRecorder` collects
  it as the relay sends it, `replay` sends it again in event-aligned pieces.

The cache is per worker: each `tfgw serve --workers N` process has its own, and two workers do not
see each other's entries (a hit rate is a worker's). Everything here runs on the worker's one event
loop and never awaits while it changes state, so it takes no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

from tfgw.config import CacheSettings

__all__ = [
    "EVENTS_PER_PIECE",
    "IGNORED",
    "CacheStats",
    "Cached",
    "ResponseCache",
    "StreamRecorder",
    "pieces",
    "replay",
    "request_key",
]

#: Body fields left out of a route's key: each says who asked, what the provider keeps or how
#: fast it answers, never what the answer says. Each route lists only fields its own API has: a
#: name that API does not know may be refused by the provider, and then it changes the answer. (A
#: hit asks no provider, so nothing checks these fields' values then.)
#:
#: - `user` (chat, embeddings), `safety_identifier` (chat): an end-user id for the provider's
#:   abuse monitoring.
#: - `metadata` (chat, messages): tags for the provider's dashboard (chat: with `store`), or
#:   Anthropic's `user_id` for its abuse monitoring; not sent back in the answer.
#: - `store` (chat): whether OpenAI keeps the completion for its evals and stored-completion
#:   endpoints, which the gateway does not serve.
#: - `service_tier` (chat, messages): the capacity the call runs on (latency and price); the
#:   answer's own `service_tier` says what the first call ran on, and a hit runs on none.
#: - `prompt_cache_key`, `prompt_cache_retention` (chat): hints to the provider's prompt cache.
#:
#: The Responses API leaves nothing out: its answer echoes `user`, `safety_identifier`,
#: `metadata`, `store`, `service_tier` and `prompt_cache_key` (the gateway's translation echoes
#: `metadata` too), so there they are part of the answer; and `store: false` gives an id that a
#: later `previous_response_id` cannot name, which a cached answer for `store: true` must not be.
#: `stream` and `stream_options` stay in everywhere: a stream's cached bytes are a stream, and the
#: usage chunk is sent on only if `stream_options` asked for it.
IGNORED: Mapping[str, frozenset[str]] = {
    "chat": frozenset(
        (
            "user",
            "safety_identifier",
            "metadata",
            "store",
            "service_tier",
            "prompt_cache_key",
            "prompt_cache_retention",
        )
    ),
    "messages": frozenset(("metadata", "service_tier")),
    "responses": frozenset(),
    "embeddings": frozenset(("user",)),
}

#: Events in each piece `replay` sends (the last piece may have fewer).
EVENTS_PER_PIECE = 8

_SORTED = orjson.OPT_SORT_KEYS
_EVENT_END = b"\n\n"


def request_key(route: str, body: Mapping[str, Any], key_name: str | None, settings: CacheSettings) -> bytes:
    """The 16-byte digest (BLAKE2b) a request's answer is cached under: one `orjson.dumps` of
    `[route, shared, key name or null, body less IGNORED[route]]` with every object's keys
    sorted, so the same request with its keys in another order has the same key. `route` is
    "chat", "messages", "responses" or "embeddings" (ValueError otherwise); `body` is the client's
    JSON object as parsed (a value JSON cannot hold is orjson's TypeError)."""
    try:
        ignored = IGNORED[route]
    except KeyError:
        raise ValueError(f"no cache key for route {route!r}; one of {', '.join(IGNORED)}") from None
    if ignored.isdisjoint(body):
        kept = body if type(body) is dict else dict(body)
    else:
        kept = {name: value for name, value in body.items() if name not in ignored}
    who = None if settings.shared else key_name
    return blake2b(orjson.dumps((route, settings.shared, who, kept), option=_SORTED), digest_size=16).digest()


@dataclass(slots=True)
class Cached:
    """One cached answer, sent again as it was first sent, and never changed once made (not
    frozen: a frozen dataclass is made through `object.__setattr__` field by field, on every
    request a cache stores). `usage` is the answer's usage object as the trace read it (shared by
    every hit); `model` and `provider` are what answered; `stored_at` is wall-clock seconds (the
    age a trace shows), not the expiry's clock."""

    body: bytes  # the whole JSON answer, or for a stream every SSE byte the client was sent
    stream: bool
    content_type: str
    usage: Mapping[str, Any] | None
    model: str
    provider: str
    stored_at: float
    #: the answer's chat-completions view, for the span of a hit (its output; usage zeroed there)
    view: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counts over the cache's life (`clear` empties it, the counts stay), and what it holds now."""

    hits: int = 0
    misses: int = 0  # expired entries read included
    evictions: int = 0  # entries dropped for room, least recently used first
    expired: int = 0  # entries dropped because their ttl had passed when read
    entries: int = 0
    bytes: int = 0  # of the entries' bodies; Python's own overhead, a few hundred bytes an entry, aside


class ResponseCache:
    """`Cached` answers by `request_key`, least recently used first out once the bodies' bytes pass
    `max_bytes`. `clock` (monotonic seconds) is what ttls are measured by; tests pass their own.
    `max_bytes = 0` stores nothing."""

    __slots__ = ("_bytes", "_clock", "_entries", "_evictions", "_expired", "_hits", "_misses", "max_bytes")

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Cached]] = OrderedDict()  # key -> (expires, entry)
        self._bytes = self._hits = self._misses = self._evictions = self._expired = 0

    @property
    def entry_limit(self) -> int:
        """The largest body stored: an eighth of `max_bytes` (the limit a `StreamRecorder` takes)."""
        return self.max_bytes // 8

    def get(self, key: bytes) -> Cached | None:
        """The entry under `key` (now the most recently used), or None: absent or expired (then
        dropped)."""
        found = self._entries.get(key)
        if found is None:
            self._misses += 1
            return None
        expires, entry = found
        if self._clock() >= expires:
            del self._entries[key]
            self._bytes -= len(entry.body)
            self._expired += 1
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry

    def put(self, key: bytes, entry: Cached, ttl: float) -> bool:
        """Keep `entry` under `key` for `ttl` seconds (replacing what was there), evicting the least
        recently used until the bytes fit. False, and nothing changed, when it is not stored: larger
        than `entry_limit`, or a ttl that is not positive."""
        size = len(entry.body)
        if size > self.entry_limit or ttl <= 0:
            return False
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1].body)
        entries[key] = (self._clock() + ttl, entry)
        self._bytes += size
        while self._bytes > self.max_bytes:  # never the new entry: it is at most an eighth
            _, (_, evicted) = entries.popitem(last=False)
            self._bytes -= len(evicted.body)
            self._evictions += 1
        return True

    def keys(self) -> list[bytes]:
        """The keys held, least recently used first (what is evicted first); reading them changes
        neither the order nor the counts."""
        return list(self._entries)

    def clear(self) -> None:
        """Drop every entry (a config reload that changes the cache); the counts stay."""
        self._entries.clear()
        self._bytes = 0

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expired=self._expired,
            entries=len(self._entries),
            bytes=self._bytes,
        )


class StreamRecorder:
    """The frames of one stream as the relay sends them, for `result` to make a `Cached` of when the
    stream has ended normally (storing one that failed or was cancelled is the caller's to refuse).
    Past `limit` bytes it is `overflowed`: it lets go of what it had and keeps nothing more."""

    __slots__ = ("_parts", "_size", "limit", "overflowed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.overflowed = False
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, frames: bytes) -> None:
        if self.overflowed:
            return
        self._size += len(frames)
        if self._size > self.limit:
            self.overflowed = True
            self._parts = []
            return
        self._parts.append(frames)

    def result(
        self,
        *,
        usage: Mapping[str, Any] | None,
        model: str,
        provider: str,
        content_type: str = "text/event-stream",
        stored_at: float | None = None,
        view: Mapping[str, Any] | None = None,
    ) -> Cached | None:
        """The stream as one `Cached` (`stored_at` defaults to now), or None if it overflowed."""
        if self.overflowed:
            return None
        return Cached(
            body=b"".join(self._parts),
            stream=True,
            content_type=content_type,
            usage=usage,
            model=model,
            provider=provider,
            stored_at=time.time() if stored_at is None else stored_at,
            view=view,
        )


def pieces(body: bytes, events: int = EVENTS_PER_PIECE) -> list[bytes]:
    """`body` cut after every `events`-th "\\n\\n" (the end of an SSE event); what follows the last
    event end, if anything, is the last piece. A body with no "\\n\\n" is one piece."""
    out: list[bytes] = []
    start = end = 0
    count = 0
    find = body.find
    while (at := find(_EVENT_END, end)) != -1:
        end = at + 2
        count += 1
        if count == events:
            out.append(body[start:end])
            start, count = end, 0
    if start < len(body):
        out.append(body[start:])
    return out


async def replay(cached: Cached) -> AsyncIterator[bytes]:
    """A cached stream sent as a stream: its bytes in pieces of `EVENTS_PER_PIECE` events, as a
    relay writes what arrived together, so a client's SDK reads an ordinary stream."""
    for piece in pieces(cached.body):
        yield piece
