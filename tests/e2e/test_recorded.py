"""`tfgw serve --recorded`: traffic recorded through a real gateway against the fake upstream, the
upstream stopped, the same requests answered from the trace directory by another gateway process,
through the official openai and anthropic SDKs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.e2e.conftest import GATEWAY_KEY, OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.upstream import FakeUpstream
from tfgw.tracing import otlp

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]
#: the upstream's wait before it answers a gpt-4o-mini call: the time to first token to reproduce
UPSTREAM_TTFT = 0.3
STREAM_GAP = 0.02


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def chat_json(c: openai.OpenAI) -> Any:
    return c.chat.completions.create(model="gpt", messages=user("json please")).model_dump()


def chat_tools(c: openai.OpenAI) -> Any:
    return c.chat.completions.create(model="gpt", messages=user("tools please"), tools=TOOLS).model_dump()


def claude_chat(c: openai.OpenAI) -> Any:
    return c.chat.completions.create(model="claude", messages=user("claude chat please")).model_dump()


@dataclass
class Streamed:
    text: str
    finishes: list[str]
    usage: Any
    chunks: int
    ttft: float  # seconds from the request to its first chunk, as the client saw it
    duration: float
    trace_id: str


def chat_stream(c: openai.OpenAI) -> Streamed:
    began = time.monotonic()
    with c.chat.completions.with_streaming_response.create(
        model="gpt", messages=user("stream please"), stream=True, stream_options={"include_usage": True}
    ) as response:
        trace_id = response.headers["x-tfgw-trace-id"]
        text, usage = "", None
        finishes: list[str] = []
        times: list[float] = []
        for chunk in response.parse():
            times.append(time.monotonic() - began)
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finishes += [choice.finish_reason] if choice.finish_reason else []
            usage = chunk.usage.model_dump() if chunk.usage else usage
    return Streamed(text, finishes, usage, len(times), times[0], times[-1] - times[0], trace_id)


def claude_messages(c: anthropic.Anthropic) -> Any:
    message = c.messages.create(model="claude", max_tokens=64, messages=user("claude messages please"))
    return _message(message)


def claude_stream(c: anthropic.Anthropic) -> Any:
    with c.messages.stream(model="claude", max_tokens=64, messages=user("claude stream please")) as stream:
        return _message(stream.get_final_message())


def _message(m: anthropic.types.Message) -> Any:
    """What the brief asks to be the same: content, usage (tokens) and the stop reason."""
    usage = (m.usage.input_tokens, m.usage.output_tokens)
    return ([block.model_dump() for block in m.content], usage, m.stop_reason, m.model, m.id)


OPENAI_CALLS: dict[str, Callable[[openai.OpenAI], Any]] = {
    "json": chat_json, "tools": chat_tools, "stream": chat_stream, "claude-chat": claude_chat,
}  # fmt: skip
ANTHROPIC_CALLS: dict[str, Callable[[anthropic.Anthropic], Any]] = {
    "messages": claude_messages, "messages-stream": claude_stream,
}  # fmt: skip


def everything(url: str) -> dict[str, Any]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20) as c:
        out = {name: call(c) for name, call in OPENAI_CALLS.items()}
    with anthropic.Anthropic(base_url=url, api_key=GATEWAY_KEY, max_retries=0, timeout=20) as c:
        out |= {name: call(c) for name, call in ANTHROPIC_CALLS.items()}
    return out


@dataclass
class Recording:
    config: Path
    dir: Path
    answers: dict[str, Any]

    def file(self) -> str:
        [segment] = sorted(self.dir.glob("*.jsonl"))
        return str(segment)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    """Every call made once through a gateway to the fake upstream, whose traces are then whole
    (the gateway stopped) and whose upstream is gone."""
    base = tmp_path_factory.mktemp("recorded")
    env = {"E2E_OPENAI_KEY": OPENAI_KEY}
    with FakeUpstream() as up:
        up.delay_model("gpt-4o-mini", UPSTREAM_TTFT)
        up.stream_delay(STREAM_GAP)
        config = base / "record.toml"
        config.write_text(gateway_config(up.url, base / "traces"))
        with Gateway(config, env=env) as gw:
            answers = everything(gw.url)
        url = up.url
    replay = base / "replay.toml"  # the same models, the upstream's address dead, traces elsewhere
    replay.write_text(gateway_config(url, base / "replayed"))
    yield Recording(replay, base / "traces", answers)


def test_recorded_answers_are_the_same_for_both_sdks_with_the_upstream_gone(recording: Recording) -> None:
    with Gateway(recording.config, "--recorded", str(recording.dir), env={"E2E_OPENAI_KEY": "unused"}) as gw:
        replayed = everything(gw.url)
    recorded = recording.answers
    for name in ("json", "tools", "claude-chat", "messages", "messages-stream"):
        assert replayed[name] == recorded[name], name
    stream, again = recorded["stream"], replayed["stream"]
    assert (again.text, again.finishes, again.usage) == (stream.text, stream.finishes, stream.usage)
    assert (stream.finishes, stream.usage["total_tokens"] > 0) == (["stop"], True)
    assert recorded["tools"]["choices"][0]["finish_reason"] == "tool_calls"
    assert recorded["messages-stream"][2] == "end_turn"


def test_a_paced_replay_takes_the_recorded_time_to_first_token(recording: Recording, tmp_path: Path) -> None:
    config = tmp_path / "paced.toml"
    config.write_text(
        f'[tracing]\ndir = "{tmp_path / "paced"}"\n\n[providers.rec]\nkind = "recorded"\n'
        f'traces = ["{recording.dir}"]\npace = "recorded"\n\n[[models]]\nname = "gpt"\n'
        'targets = [{ provider = "rec", model = "gpt-4o-mini" }]\n'
    )
    with Gateway(config) as gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0) as c:
        paced = chat_stream(c)
    stream = recording.answers["stream"]
    assert (paced.text, paced.usage, paced.chunks) == (stream.text, stream.usage, stream.chunks)
    recorded_ttft = ttft_ms(TraceFiles(recording.dir), stream.trace_id)
    assert recorded_ttft >= UPSTREAM_TTFT * 1000
    assert abs(ttft_ms(TraceFiles(tmp_path / "paced"), paced.trace_id) / recorded_ttft - 1) < 0.2
    # the client sees the first chunk no sooner than the recorded TTFT (its own clock also counts
    # connecting, so the recording run's first request is no reference for it)
    assert paced.ttft * 1000 >= 0.8 * recorded_ttft, (paced.ttft, recorded_ttft)
    # the chunks after the first are paced too: never faster than recorded (slower on a busy machine)
    assert 0.8 < paced.duration / stream.duration < 3, (paced.duration, stream.duration)


def ttft_ms(traces: TraceFiles, trace_id: str) -> float:
    spans = otlp.spans_of(traces.raw(trace_id))
    [value] = [
        otlp.decode_attributes(span["attributes"])["tfgw.stream.time_to_first_token_ms"]
        for _, span in spans
        if span["name"] == "stream"
    ]
    return float(value)


def test_a_miss_is_a_400_in_each_sdks_shape_naming_the_first_field_that_differs(
    recording: Recording,
) -> None:
    file = recording.file()
    with Gateway(recording.config, "--recorded", str(recording.dir), env={"E2E_OPENAI_KEY": "unused"}) as gw:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0) as c:
            with pytest.raises(openai.BadRequestError) as chat:
                c.chat.completions.create(model="gpt", messages=user("json please!"))
            with pytest.raises(openai.BadRequestError) as hotter:
                c.chat.completions.create(model="gpt", messages=user("json please"), temperature=0.1)
        with anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0) as a:
            longer = [*user("claude messages please"), {"role": "assistant", "content": "x"}]
            with pytest.raises(anthropic.BadRequestError) as messages:
                a.messages.create(model="claude", max_tokens=64, messages=longer)
    said = "no recorded answer for this request; the closest recording"
    assert orjson.loads(chat.value.response.content) == {
        "error": {
            "message": f"{said} ({file}:1) differs at messages[0].content",
            "type": "invalid_request_error",
            "param": "messages[0].content",
            "code": "recording_not_found",
        }
    }
    assert hotter.value.body == {
        "message": f"{said} ({file}:1) differs at temperature",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "recording_not_found",
    }
    assert orjson.loads(messages.value.response.content) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"{said} ({file}:5) differs at messages[1]"},
    }


def test_with_no_config_every_recorded_model_is_served(recording: Recording) -> None:
    with (
        Gateway(None, "--recorded", str(recording.dir)) as gw,
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0) as c,
    ):
        names = sorted(m.id for m in c.models.list())
        again = chat_json(c)
    assert (names, again) == (["claude", "gpt"], recording.answers["json"])
