"""tfgw.policy.cache: request keys, the byte-bounded LRU with ttls, stream recording and replay."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from hashlib import blake2b
from types import MappingProxyType
from typing import Any

import pytest

from tests.fakes.clock import Clock
from tfgw.config import CacheSettings
from tfgw.policy import cache as cache_module
from tfgw.policy.cache import (
    Cached,
    CacheStats,
    ResponseCache,
    StreamRecorder,
    pieces,
    replay,
    request_key,
)

PER_KEY = CacheSettings(ttl=300)
SHARED = CacheSettings(ttl=300, shared=True)

CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "temperature": 0.2,
}


def chat(**changes: Any) -> dict[str, Any]:
    return {**CHAT, **changes}


def entry(size: int, name: str = "m") -> Cached:
    return Cached(
        body=b"x" * size,
        stream=False,
        content_type="application/json",
        usage={"total_tokens": size},
        model=name,
        provider="openai",
        stored_at=1_700_000_000.0,
    )


def same(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    route: str = "chat",
    route_b: str | None = None,
    keys: tuple[str | None, str | None] = ("ci", "ci"),
    settings: tuple[CacheSettings, CacheSettings] = (PER_KEY, PER_KEY),
) -> bool:
    first = request_key(route, a, keys[0], settings[0])
    second = request_key(route_b or route, b, keys[1], settings[1])
    return first == second


def test_which_requests_share_a_key() -> None:
    reordered = {
        "temperature": 0.2,
        "messages": [{"content": "Be brief.", "role": "system"}, {"content": "Hi", "role": "user"}],
        "model": "gpt-4o",
    }
    neutral = chat(
        user="u-2",
        safety_identifier="s-2",
        metadata={"team": "b"},
        store=True,
        service_tier="flex",
        prompt_cache_key="k",
        prompt_cache_retention="24h",
    )
    messages = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    embedding = {"model": "e5", "input": ["Hi"]}
    outcomes = {
        "keys in another order, nested too": same(CHAT, reordered),
        "another temperature": same(CHAT, chat(temperature=0.3)),
        "another message": same(CHAT, chat(messages=[{"role": "user", "content": "Ho"}])),
        "another model": same(CHAT, chat(model="gpt-4o-mini")),
        "chat: user and metadata differ": same(chat(user="u-1", metadata={"team": "a"}), neutral),
        "chat: answer-neutral fields absent vs present": same(CHAT, neutral),
        "stream vs not": same(CHAT, chat(stream=True)),
        "stream_options differ": same(
            chat(stream=True), chat(stream=True, stream_options={"include_usage": True})
        ),
        "per key: two keys": same(CHAT, CHAT, keys=("a", "b")),
        "per key: no key vs a key": same(CHAT, CHAT, keys=(None, "a")),
        "shared: two keys": same(CHAT, CHAT, keys=("a", "b"), settings=(SHARED, SHARED)),
        "shared vs per key, one key": same(CHAT, CHAT, keys=("a", "a"), settings=(SHARED, PER_KEY)),
        "shared vs per key, no key": same(CHAT, CHAT, keys=(None, None), settings=(SHARED, PER_KEY)),
        "chat vs responses, one body": same(CHAT, CHAT, route="chat", route_b="responses"),
        "responses: metadata differs": same(
            chat(metadata={"team": "a"}), chat(metadata={"team": "b"}), route="responses"
        ),
        "responses: store differs": same(chat(store=True), chat(store=False), route="responses"),
        "responses: user differs": same(chat(user="a"), chat(user="b"), route="responses"),
        "messages: metadata and service_tier": same(
            messages,
            {**messages, "metadata": {"user_id": "u"}, "service_tier": "standard_only"},
            route="messages",
        ),
        "messages: a user field Anthropic has not": same(
            messages, {**messages, "user": "u"}, route="messages"
        ),
        "embeddings: user": same(embedding, {**embedding, "user": "u"}, route="embeddings"),
        "embeddings: encoding_format": same(
            embedding, {**embedding, "encoding_format": "base64"}, route="embeddings"
        ),
        "a mapping that is not a dict": same(CHAT, MappingProxyType(CHAT)),
    }
    assert outcomes == {
        "keys in another order, nested too": True,
        "another temperature": False,
        "another message": False,
        "another model": False,
        "chat: user and metadata differ": True,
        "chat: answer-neutral fields absent vs present": True,
        "stream vs not": False,
        "stream_options differ": False,
        "per key: two keys": False,
        "per key: no key vs a key": False,
        "shared: two keys": True,
        "shared vs per key, one key": False,
        "shared vs per key, no key": False,
        "chat vs responses, one body": False,
        "responses: metadata differs": False,
        "responses: store differs": False,
        "responses: user differs": False,
        "messages: metadata and service_tier": True,
        "messages: a user field Anthropic has not": False,
        "embeddings: user": True,
        "embeddings: encoding_format": False,
        "a mapping that is not a dict": True,
    }


def test_the_key_is_the_digest_of_the_normalised_request() -> None:
    body = chat(user="u", stream=True)

    key = request_key("chat", body, "ci", PER_KEY)

    normalised = (
        b'["chat",false,"ci",{"messages":[{"content":"Be brief.","role":"system"},'
        b'{"content":"Hi","role":"user"}],"model":"gpt-4o","stream":true,"temperature":0.2}]'
    )
    assert key == blake2b(normalised, digest_size=16).digest()
    assert (
        request_key("chat", body, "ci", SHARED)
        == blake2b(normalised.replace(b'false,"ci"', b"true,null"), digest_size=16).digest()
    )
    assert body == chat(user="u", stream=True), "the body is not changed"


def test_an_unknown_route_has_no_key() -> None:
    with pytest.raises(ValueError) as raised:
        request_key("completions", CHAT, None, PER_KEY)
    assert str(raised.value) == (
        "no cache key for route 'completions'; one of chat, messages, responses, embeddings"
    )


def test_an_entry_lives_ttl_seconds_by_the_injected_clock() -> None:
    clock = Clock()
    cache = ResponseCache(8000, clock=clock)
    stored = entry(100)

    assert cache.put(b"k", stored, ttl=10) is True
    clock.now += 9.999
    hit = cache.get(b"k")
    clock.now += 0.001
    expired = cache.get(b"k")
    again = cache.get(b"k")

    assert (hit, expired, again) == (stored, None, None)
    assert cache.stats == CacheStats(hits=1, misses=2, evictions=0, expired=1, entries=0, bytes=0)


def test_least_recently_used_bytes_go_first_until_the_rest_fits() -> None:
    cache = ResponseCache(160, clock=Clock())  # bodies up to 20 bytes
    sizes = {b"a": 20, b"b": 10, b"c": 10, b"d": 20, b"e": 20, b"f": 20, b"g": 20, b"h": 20}
    for key, size in sizes.items():
        assert cache.put(key, entry(size), ttl=60)
    assert cache.get(b"a") == entry(20)  # a is now the most recently used
    assert cache.put(b"i", entry(20), ttl=60)  # 160 bytes: full, nothing goes
    before = cache.stats

    assert cache.put(b"j", entry(20), ttl=60)  # 180 bytes: b goes (170), then c (160)

    assert before == CacheStats(hits=1, misses=0, evictions=0, expired=0, entries=9, bytes=160)
    assert cache.keys() == [b"d", b"e", b"f", b"g", b"h", b"a", b"i", b"j"]
    assert cache.stats == CacheStats(hits=1, misses=0, evictions=2, expired=0, entries=8, bytes=160)
    assert (cache.get(b"b"), cache.get(b"c")) == (None, None)


def test_putting_a_key_again_replaces_its_entry_and_its_bytes() -> None:
    clock = Clock()
    cache = ResponseCache(800, clock=clock)
    cache.put(b"a", entry(50, "old"), ttl=5)
    cache.put(b"b", entry(10), ttl=60)

    cache.put(b"a", entry(30, "new"), ttl=60)
    clock.now += 10

    assert cache.keys() == [b"b", b"a"]
    assert cache.get(b"a") == entry(30, "new"), "the new ttl counts"
    assert cache.stats == CacheStats(hits=1, misses=0, evictions=0, expired=0, entries=2, bytes=40)


def test_an_entry_over_an_eighth_of_the_bound_or_without_a_ttl_is_not_stored() -> None:
    cache = ResponseCache(800, clock=Clock())

    outcomes = [
        cache.put(b"over", entry(101), ttl=60),
        cache.put(b"limit", entry(100), ttl=60),
        cache.put(b"no-ttl", entry(1), ttl=0),
        ResponseCache(0).put(b"k", entry(1), ttl=60),
    ]

    assert (cache.entry_limit, outcomes) == (100, [False, True, False, False])
    assert cache.keys() == [b"limit"]
    assert cache.stats == CacheStats(hits=0, misses=0, evictions=0, expired=0, entries=1, bytes=100)


def test_clear_empties_the_cache_and_keeps_the_counts() -> None:
    cache = ResponseCache(800, clock=Clock())
    cache.put(b"a", entry(10), ttl=60)
    cache.get(b"a")
    cache.get(b"b")

    cache.clear()

    assert (cache.keys(), cache.get(b"a")) == ([], None)
    assert cache.stats == CacheStats(hits=1, misses=2, evictions=0, expired=0, entries=0, bytes=0)


def test_a_recorder_keeps_a_stream_up_to_its_limit() -> None:
    recorder = StreamRecorder(limit=30)
    for frames in (b"data: 1\n\n", b"data: 2\n\ndata: 3\n\n", b"data: 4\n\n"):  # 9 + 18 + 9 > 30
        recorder.add(frames)
    kept = StreamRecorder(limit=27)
    kept.add(b"data: 1\n\n")
    kept.add(b"data: 2\n\ndata: 3\n\n")

    over = recorder.result(usage=None, model="m", provider="p", stored_at=1.0)
    whole = kept.result(usage={"total_tokens": 3}, model="gpt-4o", provider="openai", stored_at=2.0)

    assert (recorder.overflowed, over, recorder._parts) == (True, None, [])
    assert kept.overflowed is False
    assert whole == Cached(
        body=b"data: 1\n\ndata: 2\n\ndata: 3\n\n",
        stream=True,
        content_type="text/event-stream",
        usage={"total_tokens": 3},
        model="gpt-4o",
        provider="openai",
        stored_at=2.0,
    )


def test_a_recorder_that_overflowed_keeps_nothing_more() -> None:
    recorder = StreamRecorder(limit=10)
    recorder.add(b"data: 12345\n\n")

    recorder.add(b"a\n\n")

    assert (recorder.overflowed, recorder._parts, recorder._size) == (True, [], 13)
    assert recorder.result(usage=None, model="m", provider="p") is None


def sent(cached: Cached) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [piece async for piece in replay(cached)]

    return asyncio.run(collect())


def test_replay_sends_the_recorded_bytes_in_event_aligned_pieces() -> None:
    events = [b": keep-alive\n\n"] + [
        b'event: e%d\ndata: {"n": %d, "text": "a\\n\\nb"}\n\n' % (n, n) for n in range(18)
    ]
    events.append(b"data: [DONE]\n\n")
    stream = StreamRecorder(limit=1 << 20)
    for n in range(0, len(events), 3):  # recorded in writes of three events
        stream.add(b"".join(events[n : n + 3]))
    cached = stream.result(usage=None, model="m", provider="p")
    assert cached is not None

    got = sent(cached)

    assert got == [b"".join(events[0:8]), b"".join(events[8:16]), b"".join(events[16:20])]
    assert b"".join(got) == cached.body


def test_pieces_of_a_stream_with_a_torn_end_or_no_event_end() -> None:
    assert pieces(b"data: 1\n\ndata: 2\n\ndata: 3", events=2) == [b"data: 1\n\ndata: 2\n\n", b"data: 3"]
    assert pieces(b"data: 1\r\n\r\ndata: 2\r\n\r\n", events=1) == [b"data: 1\r\n\r\ndata: 2\r\n\r\n"]
    assert pieces(b"data: 1\n\n\n\n", events=1) == [b"data: 1\n\n", b"\n\n"]
    assert pieces(b"") == []


def test_the_public_surface() -> None:
    assert cache_module.__all__ == [
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
