"""A stream passed on as it came (`PassThrough`): its bytes relayed untouched, its events read on the
side for the span. A block of named one-line events is read in one regex pass that hands over a
plain text event's text alone (`EventReader.text_events`); every event of another shape, and every
other block, is read event by event as before: both ways give the same chunks and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tfgw.errors import ProviderError
from tfgw.providers.anthropic import StreamTranslator
from tfgw.providers.base import StreamBatch
from tfgw.providers.http import EventReader, PassThrough
from tfgw.providers.responses import ResponsesReader


class Reads:
    """An aiohttp response whose body arrives in the given reads."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = iter(reads)
        self.content = self

    async def readany(self) -> bytes:
        """The next read, b"" once the body has ended (as aiohttp's `StreamReader`)."""
        return next(self.reads, b"")

    def release(self) -> None:
        pass


class Client:
    provider = "up"


def event(name: str, data: Any) -> bytes:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"event: " + name.encode() + b"\ndata: " + raw + b"\n\n"


def read(reader: EventReader, *reads: bytes) -> tuple[list[StreamBatch], str | None]:
    """Every batch of the stream, and the failure it ended with (its message; relayed or not)."""
    stream = PassThrough(Client(), Reads(*reads), reader)  # type: ignore[arg-type]
    batches: list[StreamBatch] = []

    async def run() -> str | None:
        try:
            async for batch in stream:
                batches.append(batch)
        except ProviderError as exc:
            return f"{exc.message} (relayed: {exc.relayed})"
        return None

    return batches, asyncio.run(run())


def event_by_event(reader: EventReader) -> EventReader:
    """`reader` without its text pattern: every event read one by one (`text_of`, `feed`)."""
    reader.text_events = None  # the instance's own: the class keeps its pattern
    return reader


def delta(text: bytes, index: bytes = b"0") -> bytes:
    """Anthropic's text delta as it sends it, with `text` as given (a JSON string, quotes and all)."""
    return b'{"type":"content_block_delta","index":%s,"delta":{"type":"text_delta","text":%s}}' % (
        index,
        text,
    )


START = {
    "type": "message_start",
    "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5, "output_tokens": 1}},
}
HEAD = {"id": "msg_1", "object": "chat.completion.chunk", "created": 0, "model": "claude-x"}
STOP = event("message_stop", {"type": "message_stop"})


BARE = {**HEAD, "id": "", "model": "m"}  # before any message_start


def chunk(delta: dict[str, Any], finish: str | None = None, head: dict[str, Any] = HEAD) -> dict[str, Any]:
    return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(completion: int) -> dict[str, Any]:
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": completion,
        "total_tokens": 5 + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    return {**HEAD, "choices": [], "usage": usage}


MESSAGE = b"".join(
    [
        event("message_start", START),
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        event("ping", {"type": "ping"}),
        event("content_block_delta", delta(b'"Hi \\"you\\" "')),
        event("content_block_delta", delta('"ünï ☃ \\u00e9\\n"'.encode())),
        event("content_block_delta", delta(b'""')),  # says nothing: no chunk
        event("content_block_delta", delta(b'"at 12"', b"12")),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 13,
                "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            },
        ),
        event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 13,
                "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
            },
        ),
        event("content_block_stop", {"type": "content_block_stop", "index": 13}),
        event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        ),
        STOP,
    ]
)
TOOL = {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
MESSAGE_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    'Hi "you" ',
    "ünï ☃ é\n",
    "at 12",
    chunk({"tool_calls": [TOOL]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
    chunk({}, "tool_calls"),
]


def test_a_message_stream_reads_its_text_deltas_as_text_alone_in_one_pass() -> None:
    pattern = StreamTranslator.text_events
    assert pattern is not None
    texts = [text for text, _, _ in pattern.findall(MESSAGE) if text]
    assert texts == [b'"Hi \\"you\\" "', '"ünï ☃ \\u00e9\\n"'.encode(), b'""', b'"at 12"']
    expected = ([(MESSAGE, MESSAGE_CHUNKS), (b"", [usage_chunk(7)])], None)
    assert read(StreamTranslator("m", created=0), MESSAGE) == expected
    assert read(event_by_event(StreamTranslator("m", created=0)), MESSAGE) == expected


INVALID = "provider 'up' sent an invalid SSE event (relayed: False)"


@pytest.mark.parametrize(
    ("data", "fast", "chunks", "failure"),
    [
        # not the exact shape: read by `text_of` (the same text) or `feed` (a chunk)
        (
            b'{"type":"content_block_delta","delta":{"text":"x","type":"text_delta"},"index":0}',
            False,
            ["x"],
            None,
        ),
        (
            b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}',
            False,
            [chunk({"content": "x"}, head=BARE)],
            None,
        ),
        (delta(b'"x"') + b" ", False, ["x"], None),
        # not JSON: the provider's failure, read either way
        (delta(b'"x"', b"01"), False, [], INVALID),
        (delta(b'"bad \\x"'), True, [], INVALID),
        (delta(b'"\xff"'), True, [], INVALID),
    ],
)
def test_a_text_delta_of_another_shape_or_not_json_reads_as_event_by_event(
    data: bytes, fast: bool, chunks: list[Any], failure: str | None
) -> None:
    block = event("content_block_delta", data) + STOP
    assert StreamTranslator.text_events is not None
    texts = [text for text, _, _ in StreamTranslator.text_events.findall(block)]
    assert texts == ([data[data.rindex(b":") + 1 : -2], b""] if fast else [b"", b""])
    expected = (
        [(block, chunks), (b"", [{**BARE, "choices": [], "usage": None}])],
        failure,
    )
    assert read(StreamTranslator("m", created=0), block) == expected
    assert read(event_by_event(StreamTranslator("m", created=0)), block) == expected


def test_a_text_delta_under_another_name_is_read_by_that_name() -> None:
    ping = event("ping", delta(b'"x"'))  # ignored by its name, whatever it says
    assert read(StreamTranslator("m", created=0), ping + STOP)[0][0] == (ping + STOP, [])


def test_an_error_event_fails_the_stream_after_the_events_around_it() -> None:
    error = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    block = event("message_start", START) + event("content_block_delta", delta(b'"Hi"')) + error
    after = event("content_block_delta", delta(b'"more"')) + STOP
    expected = (
        [
            (block, [chunk({"role": "assistant", "content": ""}), "Hi"]),
            (after, ["more"]),
            (b"", [usage_chunk(1)]),
        ],
        "anthropic stream error: overloaded_error: Overloaded (relayed: True)",
    )
    assert read(StreamTranslator("m", created=0), block, after) == expected
    assert read(event_by_event(StreamTranslator("m", created=0)), block, after) == expected


def test_a_block_that_is_not_only_named_one_line_events_is_read_event_by_event() -> None:
    comment = b": keep-alive\n\n" + event("content_block_delta", delta(b'"Hi"'))
    two_lines = (
        b"event: content_block_delta\ndata: "
        + delta(b'"a"')[:30]
        + b"\ndata: "
        + delta(b'"a"')[30:]
        + b"\n\n"
    )
    expected = (
        [
            (comment, ["Hi"]),
            (two_lines, ["a"]),
            (b"", [{**BARE, "choices": [], "usage": None}]),
        ],
        "provider 'up' ended the stream before message_stop (relayed: False)",
    )
    assert read(StreamTranslator("m", created=0), comment, two_lines) == expected


def responses_delta(fields: bytes) -> bytes:
    return event("response.output_text.delta", b'{"type":"response.output_text.delta"' + fields + b"}")


CREATED = event(
    "response.created", {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o"}}
)
COMPLETED = event(
    "response.completed",
    {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "model": "gpt-4o",
            "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5},
        },
    },
)
RESPONSES_HEAD = {"id": "resp_1", "object": "chat.completion.chunk", "model": "gpt-4o"}


def test_a_responses_stream_reads_its_text_deltas_as_text_alone_whatever_their_fields() -> None:
    deltas = [
        responses_delta(
            b',"sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi ",'
            b'"logprobs":[],"obfuscation":"ab"'
        ),
        responses_delta(b',"delta":"\\"there\\""'),
        responses_delta(b',"delta":"","sequence_number":-1'),  # says nothing: no chunk
        # not the fast shape: read event by event, to the same text
        responses_delta(b',"delta":"!","logprobs":[{"token":"!"}]'),
        responses_delta(b',"delta":"a","delta":"b"'),  # JSON's last one counts
        responses_delta(b', "delta": "?"'),
    ]
    broken = responses_delta(b',"item_id":"\xff","delta":"x"')  # not UTF-8: not JSON, either way
    block = CREATED + b"".join(deltas) + COMPLETED
    assert ResponsesReader.text_events is not None
    texts = [text for text, _, _ in ResponsesReader.text_events.findall(block)]
    assert texts == [b"", b'"Hi "', b'"\\"there\\""', b'""', b"", b"", b"", b""]
    usage = {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    expected = (
        [
            (
                block,
                [
                    {
                        **RESPONSES_HEAD,
                        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
                    },
                    "Hi ",
                    '"there"',
                    "!",
                    "b",
                    "?",
                    {**RESPONSES_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {"id": "resp_1", "model": "gpt-4o", "choices": [], "usage": usage},
                ],
            ),
            (b"", []),
        ],
        None,
    )
    assert read(ResponsesReader(), block) == expected
    assert read(event_by_event(ResponsesReader()), block) == expected
    assert [text for text, _, _ in ResponsesReader.text_events.findall(broken)] == [b""]
    invalid = ([(broken, []), (b"", [])], INVALID)
    assert read(ResponsesReader(), broken) == invalid
    assert read(event_by_event(ResponsesReader()), broken) == invalid
