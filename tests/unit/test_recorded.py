"""The `recorded` provider: the index of recorded calls (tfgw.providers.recordings) and answers
served from it (tfgw.providers.recorded), recorded and replayed through the app's test client with
the built-in mock provider."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from tfgw.config import ProviderSettings, Settings, TracingSettings, demo_settings
from tfgw.gateway import create_app
from tfgw.providers.base import Call
from tfgw.providers.recorded import (
    RecordedProvider,
    RecordingNotFoundError,
    recorded_settings,
    stream_chunks,
    unusable_files,
)
from tfgw.providers.recordings import (
    CHAT,
    Loaded,
    Recording,
    Recordings,
    first_difference,
    load,
    normalise,
    request_key,
)
from tfgw.tracing import otlp

CHAT_BODY = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
MESSAGES_BODY: dict[str, Any] = {
    "model": "demo",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi claude"}],
}
RESPONSES_BODY = {"model": "demo", "input": "hi responses"}


def run(settings: Settings, test: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        app = create_app(settings)
        async with app.test_app() as test_app:
            await test(test_app.test_client())

    asyncio.run(main())


def traced(directory: Path, settings: Settings | None = None, **tracing: Any) -> Settings:
    base = settings or demo_settings()
    return replace(base, tracing=TracingSettings(dir=str(directory), **tracing))


def sse_data(raw: str | bytes) -> list[Any]:
    out = []
    text = raw.decode() if isinstance(raw, bytes) else raw
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(orjson.loads(line[6:]))
    return out


def folded(chunks: list[dict[str, Any]]) -> tuple[str, list[str | None], Any]:
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    return text, [f for f in finishes if f], usage


async def record_everything(client: Client) -> dict[str, Any]:
    """One of each call, answered by the mock provider: what the replay must give back."""
    out: dict[str, Any] = {}
    out["json"] = await (await client.post("/v1/chat/completions", json=CHAT_BODY)).get_json()
    tools = {**CHAT_BODY, "tools": TOOLS}
    out["tools"] = await (await client.post("/v1/chat/completions", json=tools)).get_json()
    stream = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    out["stream"] = sse_data(await (await client.post("/v1/chat/completions", json=stream)).get_data())
    out["messages"] = await (await client.post("/v1/messages", json=MESSAGES_BODY)).get_json()
    out["responses"] = await (await client.post("/v1/responses", json=RESPONSES_BODY)).get_json()
    return out


def record(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    directory = tmp_path / "recorded"
    answers: dict[str, Any] = {}

    async def test(client: Client) -> None:
        answers.update(await record_everything(client))

    run(traced(directory), test)
    return directory, answers


def replaying(tmp_path: Path, directory: Path, **provider: Any) -> Settings:
    settings = recorded_settings(traced(tmp_path / "replayed"), [directory])
    rec = replace(settings.providers["recorded"], **provider)
    return replace(settings, providers={**settings.providers, "recorded": rec})


def test_every_recorded_call_is_answered_again_as_it_was(tmp_path: Path) -> None:
    directory, recorded = record(tmp_path)
    replayed: dict[str, Any] = {}

    async def test(client: Client) -> None:
        replayed.update(await record_everything(client))

    run(replaying(tmp_path, directory), test)
    assert replayed["json"] == recorded["json"]
    assert replayed["tools"] == recorded["tools"]
    assert replayed["messages"] == recorded["messages"]
    assert replayed["responses"] == {
        **recorded["responses"],
        "created_at": replayed["responses"]["created_at"],
    }
    assert folded(replayed["stream"]) == folded(recorded["stream"])
    assert folded(recorded["stream"])[1] == ["stop"]


def only_file(directory: Path) -> str:
    [path] = sorted(directory.glob("*.jsonl"))
    return str(path)


def test_a_miss_is_the_routes_own_400_naming_the_closest_recording_and_the_first_difference(
    tmp_path: Path,
) -> None:
    directory, _ = record(tmp_path)
    file = only_file(directory)
    got: dict[str, Any] = {}

    async def test(client: Client) -> None:
        changed = {**CHAT_BODY, "messages": [{"role": "user", "content": "hello where"}]}
        chat = await client.post("/v1/chat/completions", json=changed)
        got["chat"] = chat.status_code, await chat.get_json()
        hotter = {**CHAT_BODY, "temperature": 0.5}
        got["param"] = await (await client.post("/v1/chat/completions", json=hotter)).get_json()
        longer = {**MESSAGES_BODY, "messages": [*MESSAGES_BODY["messages"], {"role": "user", "content": "x"}]}
        messages = await client.post("/v1/messages", json=longer)
        got["messages"] = messages.status_code, await messages.get_json()

    run(replaying(tmp_path, directory), test)
    message = f"no recorded answer for this request; the closest recording ({file}:1) differs at"
    assert got["chat"] == (
        400,
        {
            "error": {
                "message": f"{message} messages[0].content",
                "type": "invalid_request_error",
                "param": "messages[0].content",
                "code": "recording_not_found",
            }
        },
    )
    assert got["param"]["error"]["message"] == f"{message} temperature"
    assert got["messages"] == (
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": message.replace(":1)", ":4)") + " messages[1]",
            },
        },
    )


def test_on_miss_forward_calls_that_provider_and_a_recording_is_still_served(tmp_path: Path) -> None:
    directory, recorded = record(tmp_path)
    settings = replaying(tmp_path, directory, on_miss="forward:mock")
    got: dict[str, Any] = {}

    async def test(client: Client) -> None:
        got["hit"] = await (await client.post("/v1/chat/completions", json=CHAT_BODY)).get_json()
        changed = {**CHAT_BODY, "messages": [{"role": "user", "content": "something new"}]}
        got["miss"] = await (await client.post("/v1/chat/completions", json=changed)).get_json()

    run(settings, test)
    assert got["hit"] == recorded["json"]
    assert got["miss"]["choices"][0]["message"]["content"] == (
        "Hello from tfgw's demo provider. You said: something new"
    )


def test_normalise_keeps_what_changes_the_answer_and_drops_the_rest() -> None:
    body = {
        "model": "gpt", "messages": [{"role": "user", "content": "hi", "name": None}], "stream": True,
        "stream_options": {"include_usage": True}, "user": "u1", "metadata": {"a": "b"}, "store": True,
        "max_completion_tokens": 10, "stop": "END", "n": 1, "temperature": 0.2, "seed": None,
        "tools": TOOLS, "tool_choice": "auto", "response_format": {"type": "json_object"},
    }  # fmt: skip
    assert normalise(body) == {
        "model": "gpt",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "stop": ["END"],
        "temperature": 0.2,
        "tools": TOOLS,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
    }
    assert normalise({"model": "gpt", "n": 2, "messages": []}) == {"model": "gpt", "n": 2, "messages": []}


TOOL_A, TOOL_B = {"tools": [{"function": {"name": "a"}}]}, {"tools": [{"function": {"name": "b"}}]}


@pytest.mark.parametrize(
    ("recorded", "asked", "path"),
    [
        ({"model": "a", "messages": [1]}, {"model": "b", "messages": [2]}, "model"),
        ({"model": "a", "top_p": 1, "messages": [1]}, {"model": "a", "messages": [2]}, "messages[0]"),
        ({"model": "a", "top_p": 1}, {"model": "a"}, "top_p"),
        ({"messages": [{"role": "user", "content": "x"}]}, {"messages": [{"role": "user"}]},
         "messages[0].content"),
        ({"messages": [1]}, {"messages": [1, 2]}, "messages[1]"),
        (TOOL_A, TOOL_B, "tools[0].function.name"),
        ({"temperature": 1}, {"temperature": 1.0}, "temperature"),
        ({"model": "a"}, {"model": "a"}, None),
    ],
)  # fmt: skip
def test_first_difference(recorded: Any, asked: Any, path: str | None) -> None:
    assert first_difference(recorded, asked) == path


def indexed(*recorded: Recording, body: dict[str, Any] = CHAT_BODY) -> Recordings:
    """An index of `recorded`, each a recording of `body`."""
    index = load([])
    for rec in recorded:
        index.add(request_key(normalise(body)), rec, None)
    return index


def recording(answer: dict[str, Any], **timing: Any) -> Recording:
    return Recording(orjson.dumps(answer).decode(), CHAT, True, "gpt", b"", 0, **timing)


COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1796000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three four five"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
}  # fmt: skip


def test_a_recorded_stream_is_cut_into_as_many_pieces_as_it_was_streamed() -> None:
    # role, 2 pieces, finish and usage: 5 chunks recorded
    chunks = stream_chunks(recording(COMPLETION, chunks=5), want_usage=False)
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1796000000,
        "model": "gpt-4o-mini",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    assert chunks == [
        (chunk({"role": "assistant", "content": ""}), True),
        (chunk({"content": "one two three"}), True),
        (chunk({"content": " four five"}), True),
        (chunk({}, "stop"), True),
        ({**base, "choices": [], "usage": COMPLETION["usage"]}, False),
    ]
    words = [
        c["choices"][0]["delta"].get("content") for c, _ in stream_chunks(recording(COMPLETION), True)[1:-2]
    ]
    assert words == ["one", " two", " three", " four", " five"]


def test_pace_recorded_waits_the_recorded_time_to_first_token_and_between_chunks() -> None:
    rec = recording(COMPLETION, ttft=0.3, spacing=0.05, chunks=5)
    settings = ProviderSettings("rec", "recorded", "", pace="recorded")
    provider = RecordedProvider(settings, indexed(rec))

    async def main() -> list[float]:
        began = time.monotonic()
        stream = await provider.open_stream(Call("gpt-4o-mini", CHAT_BODY, settings_timeouts()))
        return [time.monotonic() - began async for frames, _ in stream if frames]

    times = asyncio.run(main())
    assert len(times) == 5  # four chunks and [DONE]: the usage chunk is not sent
    assert 0.3 <= times[0] < 0.3 * 1.2
    gaps = [b - a for a, b in itertools.pairwise(times[:4])]
    assert all(0.05 <= gap < 0.05 * 1.5 for gap in gaps), gaps


def settings_timeouts() -> Any:
    from tfgw.config import Timeouts

    return Timeouts()


def test_files_written_with_exclude_request_data_cannot_serve_answers_and_say_so(tmp_path: Path) -> None:
    directory = tmp_path / "excluded"

    async def test(client: Client) -> None:
        await client.post("/v1/chat/completions", json=CHAT_BODY)
        await client.post("/v1/chat/completions", json={**CHAT_BODY, "stream": True})

    run(traced(directory, exclude_request_data=True), test)
    index = load([directory])
    assert (len(index), index.excluded) == (0, {only_file(directory): 2})
    assert unusable_files(index) == [
        f"{only_file(directory)}: written with exclude_request_data: its 2 LLM spans hold no request or"
        " answer, so they cannot serve answers"
    ]


def test_embeddings_are_answered_only_when_their_vectors_were_recorded(tmp_path: Path) -> None:
    directory = tmp_path / "emb"
    body = {"model": "demo-embed", "input": ["a b", "c"]}

    async def test(client: Client) -> None:
        assert (await client.post("/v1/embeddings", json=body)).status_code == 200

    run(traced(directory), test)
    index = load([directory])
    assert (len(index), index.no_vectors) == (0, 1)
    provider = RecordedProvider(ProviderSettings("rec", "recorded", ""), index)
    with pytest.raises(RecordingNotFoundError) as missed:
        asyncio.run(provider.embeddings(Call("demo-embed-1", body, settings_timeouts())))
    assert missed.value.message == (
        "no recorded answer for this request: the recordings of provider 'rec' hold 1 embeddings calls"
        " without their vectors (tfgw records the inputs, not the vectors)"
    )
    # a span that has them (another writer's, or an edited file) answers
    vectors = {
        "object": "list",
        "model": "emb-1",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
    }
    line = embeddings_line(body, vectors)
    (directory / "more.jsonl").write_bytes(orjson.dumps(line) + b"\n")
    provider = RecordedProvider(ProviderSettings("rec", "recorded", ""), load([directory]))
    reply = asyncio.run(provider.embeddings(Call("emb-1", body, settings_timeouts())))
    assert (reply.data, orjson.loads(reply.body)) == (vectors, vectors)


def embeddings_line(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    attrs = {
        "gen_ai.operation.name": "embeddings",
        "input.value": orjson.dumps(body).decode(),
        "output.value": orjson.dumps(answer).decode(),
    }
    span = {
        "traceId": "1" * 32,
        "spanId": "2" * 16,
        "name": "embeddings emb-1",
        "kind": 3,
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": otlp.attributes(attrs),
    }
    return otlp.export_request({}, [span])


def test_gz_files_are_read_and_a_torn_last_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory, _ = record(tmp_path)
    source = Path(only_file(directory))
    packed = tmp_path / "packed"
    packed.mkdir()
    raw = source.read_bytes()
    (packed / "a.jsonl.gz").write_bytes(gzip.compress(raw + raw[:100]))  # a writer that crashed mid-line
    index = load([packed])
    assert len(index) == len(load([directory])) == 5
    assert [r.message for r in caplog.records] == [
        f"{packed / 'a.jsonl.gz'}:6: skipped: a torn last line (a writer that crashed mid-write)"
    ]


def test_several_recordings_of_one_request_are_served_in_turn_same_mode_first() -> None:
    first, second = recording(COMPLETION), recording({**COMPLETION, "id": "chatcmpl-2"})
    whole = replace(recording({**COMPLETION, "id": "chatcmpl-3"}), stream=False)
    index = indexed(first, whole, second)
    asked = normalise({**CHAT_BODY, "stream": True})
    served = [index.find(asked, stream=True) for _ in range(3)]
    assert served == [first, second, first]
    assert index.find(asked, stream=False) is whole


def test_a_loaded_index_is_reused_while_its_files_are_unchanged(tmp_path: Path) -> None:
    directory, _ = record(tmp_path)
    loaded = Loaded()
    index = loaded.get([directory])
    assert loaded.get([directory]) is index
    Path(only_file(directory)).write_bytes(Path(only_file(directory)).read_bytes()[:-1] + b"\n\n")
    assert loaded.get([directory]) is not index


WHAT = "a trace file or directory"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["here"], "tfgw: here: a PATH is only taken with --recorded (tfgw serve --recorded PATH...)"),
        (["--recorded"], f"tfgw: --recorded: give at least one PATH ({WHAT}) to answer from"),
        (["--recorded", "missing"], "tfgw: --recorded: cannot read {tmp}/missing: No such file or directory"),
    ],
)
def test_serve_refuses_bad_recorded_arguments_with_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "tfgw", "serve", "--port", "0", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, message.format(tmp=tmp_path), "")


def test_serve_recorded_from_files_that_hold_no_requests_says_which_and_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    directory = tmp_path / "excluded"

    async def test(client: Client) -> None:
        await client.post("/v1/chat/completions", json=CHAT_BODY)

    run(traced(directory, exclude_request_data=True), test)
    command = [sys.executable, "-m", "tfgw", "serve", "--port", "0", "--recorded", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    file = only_file(directory)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"tfgw: warning: {file}: written with exclude_request_data: its 1 LLM span hold no request or"
            " answer, so they cannot serve answers",
            f"tfgw: --recorded {directory}: no recorded answers in 1 trace file(s)",
        ],
    )


def test_recorded_settings_send_every_model_to_one_recorded_provider(tmp_path: Path) -> None:
    directory, _ = record(tmp_path)
    settings = recorded_settings(traced(tmp_path / "t"), [directory])
    assert {name: m.targets for name, m in settings.models.items()} == {
        "demo": (replace(demo_settings().models["demo"].targets[0], provider="recorded"),),
        "demo-embed": (replace(demo_settings().models["demo-embed"].targets[0], provider="recorded"),),
    }
    assert settings.providers["recorded"] == ProviderSettings(
        "recorded", "recorded", "", traces=(str(directory.resolve()),)
    )
    assert (settings.path, settings.server.reload) == (None, False)
    bare = recorded_settings(None, [directory])
    assert {name: m.targets for name, m in bare.models.items()} == {"demo": (replace(
        demo_settings().models["demo"].targets[0], provider="recorded"),)}  # fmt: skip


def test_a_stream_recording_answers_a_whole_request_and_a_whole_one_a_stream(tmp_path: Path) -> None:
    directory = tmp_path / "modes"
    streamed = {**CHAT_BODY, "stream": True}
    whole = {**CHAT_BODY, "messages": [{"role": "user", "content": "whole"}]}
    recorded: dict[str, Any] = {}

    async def record_them(client: Client) -> None:
        recorded["stream"] = sse_data(
            await (await client.post("/v1/chat/completions", json=streamed)).get_data()
        )
        recorded["whole"] = await (await client.post("/v1/chat/completions", json=whole)).get_json()

    run(traced(directory), record_them)
    replayed: dict[str, Any] = {}

    async def replay(client: Client) -> None:
        replayed["whole"] = await (await client.post("/v1/chat/completions", json=CHAT_BODY)).get_json()
        as_stream = {**whole, "stream": True}
        replayed["stream"] = sse_data(
            await (await client.post("/v1/chat/completions", json=as_stream)).get_data()
        )

    run(replaying(tmp_path, directory), replay)
    text, finishes, _ = folded(recorded["stream"])
    assert replayed["whole"]["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finishes[0]}
    ]
    message = recorded["whole"]["choices"][0]["message"]["content"]
    assert folded(replayed["stream"])[:2] == (message, ["stop"])


def test_a_miss_whose_closest_recording_is_gone_says_so(tmp_path: Path) -> None:
    directory, _ = record(tmp_path)
    index = load([directory])
    file = only_file(directory)
    Path(file).unlink()
    assert index.closest(normalise({**CHAT_BODY, "temperature": 2})) == (f"{file}:1", None)
    provider = RecordedProvider(ProviderSettings("rec", "recorded", ""), index)
    with pytest.raises(RecordingNotFoundError) as missed:
        asyncio.run(provider.chat(Call("demo-1", {**CHAT_BODY, "temperature": 2}, settings_timeouts())))
    assert missed.value.message == (
        f"no recorded answer for this request; the closest recording ({file}:1) cannot be read again to"
        " say where it differs"
    )


def test_an_anthropic_providers_messages_are_answered_again_in_the_same_shape(tmp_path: Path) -> None:
    from tests.fakes.upstream import FakeUpstream
    from tfgw.config import ModelSettings, Target

    directory = tmp_path / "claude"
    streamed = {**MESSAGES_BODY, "stream": True, "messages": [{"role": "user", "content": "stream it"}]}
    got: dict[str, list[Any]] = {"recorded": [], "replayed": []}

    def calls(into: list[Any]) -> Callable[[Client], Awaitable[None]]:
        async def test(client: Client) -> None:
            headers = {"anthropic-version": "2023-06-01"}
            into.append(
                await (await client.post("/v1/messages", json=MESSAGES_BODY, headers=headers)).get_json()
            )
            raw = await (await client.post("/v1/messages", json=streamed, headers=headers)).get_data()
            into.append([event for event in sse_data(raw) if event["type"] != "ping"])

        return test

    with FakeUpstream() as up:
        claude = ProviderSettings("claude", "anthropic", up.url, api_key="k", api_version="2023-06-01")
        model = ModelSettings("demo", (Target("claude", "claude-3-5-haiku"),))
        settings = replace(demo_settings(), providers={"claude": claude}, models={"demo": model})
        run(traced(directory, settings), calls(got["recorded"]))
    run(replaying(tmp_path, directory), calls(got["replayed"]))
    (whole, events), (again, replayed) = got["recorded"], got["replayed"]
    usage = {k: whole["usage"][k] for k in ("input_tokens", "output_tokens")}
    assert again == {**whole, "usage": usage}  # the cache counts of 0 are not said again
    assert [e["type"] for e in replayed] == [e["type"] for e in events]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "".join(e["delta"].get("text", "") for e in replayed if e["type"] == "content_block_delta") == text
    assert replayed[-2]["delta"]["stop_reason"] == events[-2]["delta"]["stop_reason"] == "end_turn"
