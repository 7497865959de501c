"""Upstream SSE read as it arrives: whole events per read, relayed byte for byte, parsed once."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tfgw.errors import ProviderError
from tfgw.providers.http import sse_data, sse_events
from tfgw.providers.openai import OpenAIStream


class Reads:
    """An aiohttp response whose body arrives in the given reads."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = iter(reads)
        self.released = False
        self.content = self

    async def readany(self) -> bytes:
        """The next read, b"" once the body has ended (as aiohttp's `StreamReader`)."""
        return next(self.reads, b"")

    def release(self) -> None:
        self.released = True


class Client:
    provider = "up"


def chunk(n: int, **extra: object) -> bytes:
    return orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": str(n)}}], **extra})


USAGE = orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def batches(*reads: bytes, client_wants_usage: bool = True) -> list[tuple[bytes, list[dict]]]:
    response = Reads(*reads)
    stream = OpenAIStream(Client(), response, client_wants_usage)  # type: ignore[arg-type]

    async def read() -> list[tuple[bytes, list[dict]]]:
        return [batch async for batch in stream]

    out = asyncio.run(read())
    assert response.released
    return out


def test_what_arrives_together_is_relayed_together_as_it_came() -> None:
    burst = b"data: " + chunk(1) + b"\n\ndata: " + chunk(2) + b"\n\ndata: [DONE]\n\n"
    assert batches(burst) == [(burst, [orjson.loads(chunk(1)), orjson.loads(chunk(2))])]


def test_an_event_cut_across_reads_waits_for_its_end() -> None:
    one, two = b"data: " + chunk(1) + b"\n\n", b"data: " + chunk(2) + b"\n\n"
    assert batches(one + two[:9], two[9:-1], b"\ndata: [DONE]\n\n") == [
        (one, [orjson.loads(chunk(1))]),
        (two + b"data: [DONE]\n\n", [orjson.loads(chunk(2))]),
    ]


def test_crlf_comments_and_a_last_event_without_its_blank_line() -> None:
    body = b": keep-alive\r\n\r\ndata: " + chunk(1) + b"\r\n\r\ndata: [DONE]"
    assert batches(body) == [
        (b": keep-alive\n\ndata: " + chunk(1) + b"\n\n", [orjson.loads(chunk(1))]),
        (b"data: [DONE]\n\n", []),
    ]


def test_the_usage_chunk_is_cut_out_unless_the_client_asked_for_it() -> None:
    body = b"data: " + chunk(1) + b"\n\ndata: " + USAGE + b"\n\ndata: [DONE]\n\n"
    parsed = [orjson.loads(chunk(1)), orjson.loads(USAGE)]
    assert batches(body, client_wants_usage=True) == [(body, parsed)]
    assert batches(body, client_wants_usage=False) == [
        (b"data: " + chunk(1) + b"\n\ndata: [DONE]\n\n", parsed)
    ]
    alone = b"data: " + USAGE + b"\n\n"
    assert batches(alone, b"data: [DONE]\n\n", client_wants_usage=False) == [
        (b"", [orjson.loads(USAGE)]),
        (b"data: [DONE]\n\n", []),
    ]


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]"])
def test_an_event_that_is_not_a_json_object_is_the_providers_failure(data: bytes) -> None:
    with pytest.raises(ProviderError, match="provider 'up' sent an invalid SSE event"):
        batches(b"data: " + data + b"\n\n")


def test_events_with_names_and_several_data_lines() -> None:
    block = b'event: message_start\ndata: {"a":\ndata: 1}\nid: 7\n\n: comment\n\ndata: x\n\n'
    assert sse_events(block) == [("message_start", b'{"a":\n1}'), (None, b"x")]


def test_named_events_with_one_data_line_as_anthropic_and_responses_send_them() -> None:
    block = (
        b'event: message_start\ndata: {"type":"message_start"}\n\n'
        b"event: ping \ndata: {}\n\n"
        b"event: e\ndata:  spaced\n\n"
        b"event: f\ndata: 1\nid: 2\n\n"
        b"event: nodata\n\n"
    )
    assert sse_events(block) == [
        ("message_start", b'{"type":"message_start"}'),
        ("ping", b"{}"),
        ("e", b" spaced"),
        ("f", b"1"),
    ]


def test_a_block_of_named_events_only_is_read_in_one_pass() -> None:
    block = b'event: message_start\ndata: {"a":1}\n\nevent: ping \ndata: {}\n\nevent: e\ndata:  x\n\n'
    assert sse_events(block) == [("message_start", b'{"a":1}'), ("ping", b"{}"), ("e", b" x")]
    assert sse_events(block + b": keep-alive\n\n") == sse_events(block)  # not only named events


@pytest.mark.parametrize(
    "block",
    [
        b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',  # what OpenAI sends: split in C
        b"data: x\n\n",
        b"data: \n\n",  # an empty data line
        b'data: {"a":1}\n\n: keep-alive\n\ndata: x\n\n',  # a comment between two events
        b'data: {"a":\ndata: 1}\n\ndata: x\n\n',  # an event of two data lines
        b"data: a\n\n\n\ndata: b\n\n",  # two blank lines in a row
        b"data: a\n\nevent: e\ndata: b\n\n",  # a named event after a plain one
        b"data:x\n\ndata: y\n\n",  # no space after the colon
        b"data: a\n\nid: 3\n\ndata: b\n\n",
        b"data: a\n\ndata: b\n\nretry: 10\n\n",
        b"data: a\n\ndata: b",  # no blank line at its end
        b"data: a\ndata: b\n\n",  # one event of two data lines
    ],
)
def test_the_data_of_each_event_is_what_sse_events_reads(block: bytes) -> None:
    assert sse_data(block) == [data for _, data in sse_events(block)]


def test_a_block_of_one_line_data_events_is_split_whole() -> None:
    assert sse_data(b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n') == [
        b'{"a":1}',
        b'{"b":2}',
        b"[DONE]",
    ]
    assert sse_data(b'data: {"a":\ndata: 1}\n\ndata: x\n\n') == [b'{"a":\n1}', b"x"]
