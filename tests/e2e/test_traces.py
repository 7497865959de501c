"""Every request through the real gateway becomes a trace in its log: span tree and attributes.

Spans are compared whole after `normalise()` (decoded attributes, parents by name, timings
checked and replaced by "<float>"), so an attribute that appears, disappears or changes fails a
test.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import GATEWAY_KEY, PROVIDER_KEYS
from tests.e2e.gateway import Gateway
from tests.e2e.traces import CALLER, TraceFiles, by_name, diff
from tests.fakes.upstream import CREATED, TOOL_ARGUMENTS, FakeUpstream
from tests.processes import running

HELLO = [{"role": "user", "content": "hello there world"}]
ROOT = "POST /v1/chat/completions"
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]


def root_of(status: int = 200, model: str = "gpt", **extra: object) -> dict[str, object]:
    return {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": status,
        "openinference.span.kind": "CHAIN",
        "tfgw.key.name": "e2e",
        "tfgw.model.requested": model,
        **extra,
    }


AUTH = {
    "name": "auth",
    "kind": "INTERNAL",
    "parent": ROOT,
    "status": {},
    "attributes": {"tfgw.auth.outcome": "ok", "tfgw.key.name": "e2e"},
}


def resolve(requested: str, provider: str, model: str, **extra: object) -> dict[str, object]:
    return {
        "name": "model.resolve",
        "kind": "INTERNAL",
        "parent": ROOT,
        "status": {},
        "attributes": {
            "tfgw.model.requested": requested,
            "tfgw.route.provider": provider,
            "tfgw.route.model": model,
            "tfgw.route.attempt": 1,
            **extra,
        },
    }


def openai_llm(port: int, **extra: object) -> dict[str, object]:
    """The attributes every call of the `gpt` alias (provider `up`, gpt-4o-mini) carries."""
    return {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "llm.model_name": "gpt-4o-mini",
        "llm.request.model_name": "gpt-4o-mini",
        "llm.response.model_name": "gpt-4o-mini",
        "llm.provider": "openai",  # an unknown host: the kind's name (the config's is tfgw.route.provider)
        "llm.system": "openai",
        "server.address": "127.0.0.1",
        "server.port": port,
        "tfgw.route.provider": "up",
        "tfgw.route.model": "gpt-4o-mini",
        "tfgw.route.attempt": 1,
        **extra,
    }


def usage(prompt: int, completion: int, price: tuple[float, float] | None = (0.25, 2.0)) -> dict[str, object]:
    out: dict[str, object] = {
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
        "llm.token_count.total": prompt + completion,
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
    }
    if price:
        cost_in, cost_out = prompt * price[0] / 1e6, completion * price[1] / 1e6
        out |= {
            "llm.cost.prompt": cost_in,
            "llm.cost.completion": cost_out,
            "llm.cost.total": cost_in + cost_out,
        }
    return out


def test_chat_with_tools_is_one_trace_with_every_attribute(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt",
        messages=messages,
        tools=TOOLS,
        temperature=0.5,
        max_tokens=50,
        top_p=0.9,
        stop=["\n"],
    )
    reply = raw.parse()
    trace_id = raw.headers["x-tfgw-trace-id"]
    assert float(raw.headers["x-tfgw-overhead-ms"]) >= 0
    request = {"model": "gpt", "messages": messages, "tools": TOOLS, "temperature": 0.5,
               "max_tokens": 50, "top_p": 0.9, "stop": ["\n"]}  # fmt: skip
    params = {"temperature": 0.5, "max_tokens": 50, "top_p": 0.9, "stop": ["\n"], "model": "gpt-4o-mini"}
    expected = [
        {
            "name": ROOT,
            "kind": "SERVER",
            "parent": None,
            "status": {},
            "attributes": root_of(
                **{
                    "input.value": "weather in Paris?",
                    "input.mime_type": "text/plain",
                    "tfgw.overhead_ms": "<float>",
                }
            ),
        },
        AUTH,
        resolve("gpt", "up", "gpt-4o-mini"),
        {
            "name": "chat gpt-4o-mini",
            "kind": "CLIENT",
            "parent": ROOT,
            "status": {},
            "attributes": openai_llm(
                up.port,
                **usage(6, 2),
                **{
                    "gen_ai.request.temperature": 0.5,
                    "gen_ai.request.max_tokens": 50,
                    "gen_ai.request.top_p": 0.9,
                    "gen_ai.request.stop_sequences": ["\n"],
                    "gen_ai.response.id": reply.id,
                    "gen_ai.response.finish_reasons": ["tool_calls"],
                    "llm.finish_reason": "tool_calls",
                    "llm.invocation_parameters": params,
                    "llm.input_messages.0.message.role": "system",
                    "llm.input_messages.0.message.content": "You answer briefly.",
                    "llm.input_messages.1.message.role": "user",
                    "llm.input_messages.1.message.contents.0.message_content.type": "text",
                    "llm.input_messages.1.message.contents.0.message_content.text": "weather in Paris?",
                    "llm.tools.0.tool.json_schema": TOOLS[0],
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": TOOL_ARGUMENTS,
                    "input.value": request,
                    "input.mime_type": "application/json",
                    "output.value": raw.http_response.json(),
                    "output.mime_type": "application/json",
                },
            ),
        },
    ]
    spans = traces.spans(trace_id)
    assert diff(spans[3]["attributes"], expected[3]["attributes"]) == {}
    assert spans == expected


def test_stream_with_caller_context(client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt",
        messages=HELLO,
        stream=True,
        extra_headers={
            "traceparent": f"00-{caller_trace}-{caller_span}-01",
            "tracestate": "vendor=1",
            "x-tfgw-session-id": "session-7",
            "x-tfgw-user-id": "user-42",
            "x-tfgw-metadata": '{"team": "search", "tier": 2}',
        },
    )
    chunks = list(raw.parse())
    assert all(c.usage is None for c in chunks)  # the gateway asked for usage; the client did not
    assert up.requests[0].body["stream_options"] == {"include_usage": True}
    assert raw.headers["x-tfgw-trace-id"] == caller_trace
    line = traces.raw(caller_trace)
    spans = traces.spans(caller_trace)
    assert [(s["name"], s["parent"]) for s in spans] == [
        (ROOT, CALLER),
        ("auth", ROOT),
        ("model.resolve", ROOT),
        ("chat gpt-4o-mini", ROOT),
        ("stream", "chat gpt-4o-mini"),
    ]
    root_span = line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert root_span["parentSpanId"] == caller_span
    context = {"session.id": "session-7", "user.id": "user-42", "metadata": {"team": "search", "tier": 2}}
    named = by_name(spans)
    assert named[ROOT]["attributes"] == root_of(
        **context,
        **{
            "input.value": "hello there world",
            "input.mime_type": "text/plain",
            "output.value": "echo: hello there world",
            "output.mime_type": "text/plain",
            "tfgw.overhead_ms": "<float>",
        },
    )
    output = {"id": "chatcmpl-fake1", "object": "chat.completion", "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: hello there world"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}  # fmt: skip
    assert named["chat gpt-4o-mini"] == {
        "name": "chat gpt-4o-mini",
        "kind": "CLIENT",
        "parent": ROOT,
        "status": {},
        "events": [{"name": "First Token Stream Event"}],
        "attributes": openai_llm(
            up.port,
            **usage(3, 4),
            **context,
            **{
                "gen_ai.conversation.id": "session-7",
                "gen_ai.request.stream": True,
                "gen_ai.response.time_to_first_chunk": "<float>",
                "gen_ai.response.id": "chatcmpl-fake1",
                "gen_ai.response.finish_reasons": ["stop"],
                "llm.finish_reason": "stop",
                "llm.invocation_parameters": {"stream": True, "model": "gpt-4o-mini"},
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "hello there world",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "echo: hello there world",
                "input.value": {"model": "gpt", "messages": HELLO, "stream": True},
                "input.mime_type": "application/json",
                "output.value": output,
                "output.mime_type": "application/json",
            },
        ),
    }
    # role chunk, 4 text pieces ("echo: ", "hello ", "there ", "world"), finish chunk, usage chunk
    assert named["stream"] == {
        "name": "stream",
        "kind": "INTERNAL",
        "parent": "chat gpt-4o-mini",
        "status": {},
        "attributes": {
            "tfgw.stream.time_to_first_token_ms": "<float>",
            "tfgw.stream.cancelled": False,
            "tfgw.stream.chunks": 7,
        },
    }


def test_stream_with_include_usage_relays_the_usage_chunk(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    llm = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))["chat gpt-4o-mini"]["attributes"]
    assert {k: v for k, v in llm.items() if "token" in k} == {
        k: v for k, v in usage(3, 4).items() if "token" in k
    }
    assert llm["llm.invocation_parameters"] == {
        "stream": True,
        "stream_options": {"include_usage": True},
        "model": "gpt-4o-mini",
    }


def test_anthropic_stream_usage_from_message_start_and_delta(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=HELLO, stream=True)
    chunks = list(raw.parse())
    assert all(c.usage is None for c in chunks)
    spans = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))
    llm = spans["chat claude-3-5-haiku"]
    assert llm["attributes"] == {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-3-5-haiku",
        "gen_ai.response.model": "claude-3-5-haiku",
        "gen_ai.response.id": "msg_fake1",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": "<float>",
        "llm.model_name": "claude-3-5-haiku",
        "llm.request.model_name": "claude-3-5-haiku",
        "llm.response.model_name": "claude-3-5-haiku",
        "llm.provider": "anthropic",
        "llm.system": "anthropic",
        "llm.finish_reason": "stop",
        "llm.invocation_parameters": {"stream": True, "model": "claude-3-5-haiku"},
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "hello there world",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "echo: hello there world",
        **usage(3, 4, price=None),
        "llm.token_count.prompt_details.cache_read": 0,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "input.value": {"model": "claude", "messages": HELLO, "stream": True},
        "input.mime_type": "application/json",
        "output.value": llm["attributes"]["output.value"],
        "output.mime_type": "application/json",
        "server.address": "127.0.0.1",
        "server.port": up.port,
        "tfgw.route.provider": "claude",
        "tfgw.route.model": "claude-3-5-haiku",
        "tfgw.route.attempt": 1,
    }
    assert llm["attributes"]["output.value"]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_embeddings_span(client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles) -> None:
    raw = client.embeddings.with_raw_response.create(model="emb", input=["one two", "three"])
    spans = traces.spans(raw.headers["x-tfgw-trace-id"])
    assert [s["name"] for s in spans] == [
        "POST /v1/embeddings",
        "auth",
        "model.resolve",
        "embeddings text-embedding-3-small",
    ]
    assert spans[0]["attributes"] == {
        "http.request.method": "POST",
        "url.path": "/v1/embeddings",
        "http.response.status_code": 200,
        "openinference.span.kind": "CHAIN",
        "tfgw.key.name": "e2e",
        "tfgw.model.requested": "emb",
        "tfgw.overhead_ms": "<float>",
        "input.value": ["one two", "three"],
        "input.mime_type": "application/json",
    }
    assert spans[3]["attributes"] == {
        "openinference.span.kind": "EMBEDDING",
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.response.model": "text-embedding-3-small",
        "embedding.model_name": "text-embedding-3-small",
        "embedding.invocation_parameters": {"encoding_format": "base64", "model": "text-embedding-3-small"},
        "embedding.embeddings.0.embedding.text": "one two",
        "embedding.embeddings.1.embedding.text": "three",
        "llm.token_count.prompt": 3,
        "llm.token_count.total": 3,
        "gen_ai.usage.input_tokens": 3,
        "input.value": {"model": "emb", "input": ["one two", "three"], "encoding_format": "base64"},
        "input.mime_type": "application/json",
        "server.address": "127.0.0.1",
        "server.port": up.port,
        "tfgw.route.provider": "up",
        "tfgw.route.model": "text-embedding-3-small",
        "tfgw.route.attempt": 1,
    }


def test_fallback_attempts_are_sibling_spans(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.fail_next(503, path="/v1/chat/completions")
    raw = client.chat.completions.with_raw_response.create(model="gpt-then-claude", messages=HELLO)
    spans = traces.spans(raw.headers["x-tfgw-trace-id"])
    assert [(s["name"], s["parent"], s["status"]) for s in spans] == [
        (ROOT, None, {}),
        ("auth", ROOT, {}),
        ("model.resolve", ROOT, {}),
        ("chat gpt-4o", ROOT, {"code": 2, "message": "provider 'up' returned HTTP 503"}),
        ("chat claude-3-5-haiku", ROOT, {}),
    ]
    failed, answered = spans[3], spans[4]
    assert failed["events"] == [
        {
            "name": "exception",
            "attributes": {
                "exception.type": "tfgw.errors.UpstreamStatusError",
                "exception.message": "provider 'up' returned HTTP 503",
                "exception.stacktrace": "<stacktrace>",
            },
        }
    ]
    keys = ("error.type", "tfgw.route.attempt", "llm.token_count.prompt")
    assert {k: failed["attributes"].get(k) for k in keys} == {
        "error.type": "503",
        "tfgw.route.attempt": 1,
        "llm.token_count.prompt": None,  # a failed attempt has no usage: absent, not 0
    }
    assert "output.value" not in failed["attributes"]
    assert {k: answered["attributes"][k] for k in ("tfgw.route.attempt", "tfgw.route.fallback_reason")} == {
        "tfgw.route.attempt": 2,
        "tfgw.route.fallback_reason": "503",
    }
    assert spans[2]["attributes"]["tfgw.route.fallbacks"] == ["claude/claude-3-5-haiku"]


def test_failed_request_is_an_error_trace(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.fail_next(503, times=2)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-then-claude", messages=HELLO)
    spans = traces.spans(info.value.response.headers["x-tfgw-trace-id"])
    root = spans[0]
    attributes = root["attributes"]
    assert (root["status"], attributes["error.type"], attributes["http.response.status_code"]) == (
        {"code": 2, "message": "provider 'claude' returned HTTP 503"},
        "503",
        502,
    )
    assert [s["status"].get("code") for s in spans] == [2, None, None, 2, 2]


def test_rejected_key_is_traced_without_the_key(gateway: Gateway, traces: TraceFiles) -> None:
    wrong = "tfgw-not-a-key-0123456789abcdef"
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt", "messages": HELLO},
        headers={"authorization": f"Bearer {wrong}"},
    )
    assert answer.status_code == 401
    spans = traces.spans(answer.headers["x-tfgw-trace-id"])
    assert [(s["name"], s["status"].get("code"), s["attributes"].get("error.type")) for s in spans] == [
        (ROOT, 2, "invalid_api_key"),
        ("auth", 2, "invalid_api_key"),
    ]
    assert spans[1]["attributes"]["tfgw.auth.outcome"] == "rejected"
    assert wrong.encode() not in traces.everything()


def test_client_disconnect_mid_stream_finishes_the_trace(
    gateway: Gateway, up: FakeUpstream, traces: TraceFiles
) -> None:
    up.slow_stream_chunks(count=200, delay=0.02)
    body = orjson.dumps({"model": "gpt", "messages": HELLO, "stream": True})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {GATEWAY_KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request)
        head = b""
        while b"data: " not in head:
            head += sock.recv(4096)
    trace_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-tfgw-trace-id:")
    )
    spans = by_name(traces.spans(trace_id))
    stream = spans["stream"]
    assert stream["status"]["code"] == 2
    assert stream["attributes"]["tfgw.stream.cancelled"] is True
    assert stream["attributes"]["error.type"] == "cancelled"
    assert 0 < stream["attributes"]["tfgw.stream.chunks"] < 200
    assert spans[ROOT]["attributes"]["tfgw.stream.cancelled"] is True
    deadline = time.monotonic() + 5
    while up.stream_disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.stream_disconnects == 1


def test_no_key_ever_reaches_the_trace_log(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    client.chat.completions.create(model="gpt", messages=HELLO)
    client.chat.completions.create(model="claude", messages=HELLO)
    client.chat.completions.create(model="azure-gpt", messages=HELLO)
    raw = client.chat.completions.with_raw_response.create(model="gpt", messages=HELLO)
    traces.raw(raw.headers["x-tfgw-trace-id"])
    written = traces.everything()
    for secret in (GATEWAY_KEY, *PROVIDER_KEYS):
        assert secret.encode() not in written
    assert CREATED  # the fake provider's answers were recorded


def test_tail_json_sees_a_request_within_two_seconds(
    client: openai.OpenAI, up: FakeUpstream, trace_dir: Path
) -> None:
    command = [sys.executable, "-m", "tfgw", "traces", "tail", "--json", "--dir", str(trace_dir)]
    with running(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tail:
        assert tail.stderr is not None and tail.stdout is not None
        assert b"following" in tail.stderr.readline()
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=HELLO)
        sent = time.monotonic()
        ready, _, _ = select.select([tail.stdout], [], [], 2.0)
        assert ready, "tail printed nothing within 2 s"
        row = orjson.loads(tail.stdout.readline())
        assert time.monotonic() - sent < 2.0
    assert isinstance(row.pop("time"), int) and isinstance(row.pop("duration_ms"), float)
    assert row == {
        "trace_id": raw.headers["x-tfgw-trace-id"],
        "name": ROOT,
        "model": "gpt",
        "response_model": "gpt-4o-mini",
        "provider": "up",
        "key": "e2e",
        "status": "ok",
        "http_status": 200,
        "error_type": None,
        "ttft_ms": None,
        "tokens_in": 3,
        "tokens_out": 4,
        "cost": 0.00000875,
        "stream": False,
        "attempts": 1,
        "finish_reason": "stop",
        "spans": 4,
        "project": "e2e",
        "route": "/v1/chat/completions",
        "operation": "chat",
        "provider_system": "openai",
        "tokens_cached": None,
        "tokens_reasoning": None,
        "cache_hit": None,
        "retries": 0,
        "fallbacks": 0,
        "chunks": None,
        "guardrails": None,
        "refusal": None,
    }


def test_everything_the_gateway_wrote_passes_traces_check(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles, trace_dir: Path
) -> None:
    client.chat.completions.create(
        model="gpt", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    raw = client.embeddings.with_raw_response.create(model="emb", input="one")
    traces.raw(raw.headers["x-tfgw-trace-id"])  # written: nothing is half-appended now
    done = subprocess.run(
        [sys.executable, "-m", "tfgw", "traces", "check", "--json", str(trace_dir)],
        capture_output=True,
        timeout=60,
    )
    report = orjson.loads(done.stdout)
    assert (done.returncode, report["errors"], report["warnings"], report["findings"]) == (0, 0, 0, [])
    assert report["spans"] >= 10 and report["traces"] >= 2


def test_metadata_that_is_not_a_json_object_is_a_traced_400(gateway: Gateway, traces: TraceFiles) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt", "messages": HELLO},
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-tfgw-metadata": "[1, 2]"},
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "error": {
                "message": "The x-tfgw-metadata header must be a JSON object.",
                "type": "invalid_request_error",
                "param": "x-tfgw-metadata",
                "code": None,
            }
        },
    )
    (root,) = traces.spans(answer.headers["x-tfgw-trace-id"])
    assert (root["status"]["code"], root["attributes"]["http.response.status_code"]) == (2, 400)


def test_a_provider_that_refuses_stream_options_is_not_asked_and_its_usage_is_absent(
    client: openai.OpenAI, up: FakeUpstream, traces: TraceFiles
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="plain/gpt-4o-mini", messages=HELLO, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        == "echo: hello there world"
    )
    assert "stream_options" not in up.requests[0].body
    llm = by_name(traces.spans(raw.headers["x-tfgw-trace-id"]))["chat gpt-4o-mini"]["attributes"]
    assert [k for k in llm if k.startswith(("llm.token_count", "gen_ai.usage", "llm.cost"))] == []
    assert llm["gen_ai.response.finish_reasons"] == ["stop"]
