"""Provider faults on every route, against a real `tfgw serve` and a faulty upstream on loopback
(`tests.fakes.faulty`): each fault gives a clean error in the route's shape (or the fallback's
answer), a stream cut after its first byte ends with the route's error event, and the trace says
what happened. What each fault gives is the table of docs/faults.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.e2e.traces import TraceFiles
from tests.fakes.faulty import FaultyUpstream, refused_url
from tests.fakes.upstream import FakeUpstream
from tfgw.keys import hash_key

KEY = "tfgw-faults-key"
TIMEOUT = "{ connect = 0.3, first_token = 0.3, total = 5.0 }"
#: provider name: (kind, path under the upstream's URL, extra settings, the stream's terminal event)
PROVIDERS = {
    "fo": ("openai", "/v1", "", "[DONE]"),
    "fa": ("anthropic", "", "", "message_stop"),
    "fr": ("openai", "/v1", "responses = true", "response.completed"),
}
#: route: (path, the providers it reaches: the first by translation where the route is not chat)
ROUTES = {
    "chat": ("/v1/chat/completions", ("fo", "fa")),
    "messages": ("/v1/messages", ("fo", "fa")),
    "responses": ("/v1/responses", ("fo", "fr")),
    "embeddings": ("/v1/embeddings", ("fo",)),
}
FAULTS = ("refused", "reset_body", "reset_stream", "slow_headers", "slow_first_token", "truncate",
          "invalid_json", "storm")  # fmt: skip
CASES = [
    pytest.param(
        route, provider, fault, stream, id=f"{route}-{provider}-{fault}-{'stream' if stream else 'json'}"
    )
    for route, (_, providers) in ROUTES.items()
    for provider in providers
    for fault in FAULTS
    for stream in (False, True)
    if not (stream and route == "embeddings")
]


def faults_config(faulty: str, refused: str, good: str, traces: Path) -> str:
    """One alias `<provider>-<fault>` per provider and fault (the fault is the upstream model's
    name), `storm-retried` (three runs, every one a 503) and `storm-then-good` (a fallback)."""
    parts = [f'[tracing]\ndir = "{traces}"\nproject = "faults"\n\n[routing]\nunhealthy_after = 0\n',
             f'[[keys]]\nname = "faults"\nhash = "{hash_key(KEY)}"\n']  # fmt: skip
    for name, (kind, path, extra, _) in PROVIDERS.items():
        for provider, url in ((name, faulty), (f"{name}-refused", refused)):
            parts.append(
                f'[providers.{provider}]\nkind = "{kind}"\nbase_url = "{url}{path}"\napi_key = "k"\n{extra}\n'
            )
        for fault in (*FAULTS, "drip"):  # drip: for the client that goes away (test_client_faults)
            provider = f"{name}-refused" if fault == "refused" else name
            target = f'{{ provider = "{provider}", model = "{fault}" }}'
            parts.append(f'[[models]]\nname = "{name}-{fault}"\ntargets = [{target}]\ntimeout = {TIMEOUT}\n')
    parts.append(f'[providers.good]\nkind = "openai"\nbase_url = "{good}/v1"\napi_key = "k"\n')
    parts.append('[[models]]\nname = "good"\ntargets = [{ provider = "good", model = "gpt-4o-mini" }]\n')
    storm = '[{ provider = "fo", model = "storm" }]'
    parts.append(f'[[models]]\nname = "storm-then-good"\ntargets = {storm}\nfallbacks = ["good"]\n')
    parts.append(f'[[models]]\nname = "storm-retried"\ntargets = {storm}\nretries = 2\n')
    return "\n".join(parts)


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def fault_traces(tmp_path_factory: pytest.TempPathFactory) -> TraceFiles:
    return TraceFiles(tmp_path_factory.mktemp("fault-traces"))


@pytest.fixture(scope="module")
def fgw(
    faulty: FaultyUpstream,
    shared_upstream: FakeUpstream,
    fault_traces: TraceFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("fgw") / "tfgw.toml"
    config.write_text(faults_config(faulty.url, refused_url(), shared_upstream.url, fault_traces.dir))
    with Gateway(config) as gw:
        yield gw


def request_body(route: str, model: str, stream: bool) -> dict[str, Any]:
    if route == "embeddings":
        return {"model": model, "input": "hello"}
    if route == "responses":
        return {"model": model, "input": "hello", "stream": stream}
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
        "stream": stream,
    }


def failure(provider: str, fault: str, stream: bool) -> tuple[int, str, str, str]:
    """(HTTP status, message, tfgw error code, span error.type) of `fault` at `provider`: a fault
    before the first byte is an error answer, one after it (a stream's) the stream's last event."""
    p = f"provider '{provider}'"
    timed_out = (504, f"{p} timed out", "provider_timeout")
    if fault == "refused":
        status, message, code = (
            502,
            f"provider '{provider}-refused' is unreachable: ClientConnectorError",
            "provider_error",
        )
    elif fault == "storm":
        return 502, f"{p} returned HTTP 503", "provider_error", "503"
    elif fault == "slow_headers" or (fault == "slow_first_token" and not stream):
        status, message, code = timed_out
    elif fault == "slow_first_token":
        status, message, code = 200, timed_out[1], timed_out[2]
    elif fault == "invalid_json" and stream:
        status, message, code = 200, f"{p} sent an invalid SSE event", "provider_error"
    elif fault == "invalid_json":
        not_json = "not JSON" if provider == "fa" else "not a JSON object"
        status, message, code = 502, f"{p} returned a body that is {not_json}", "provider_error"
    elif stream:  # reset_body, reset_stream, truncate: the stream ends before its terminal event
        status, message, code = 200, f"{p} ended the stream before {PROVIDERS[provider][3]}", "provider_error"
    else:
        status, message, code = 502, f"{p} failed: ClientPayloadError", "provider_error"
    return status, message, code, code


def error_body(route: str, message: str, code: str) -> dict[str, Any]:
    if route == "messages":
        return {"type": "error", "error": {"type": "api_error", "message": message}}
    return {"error": {"message": message, "type": "api_error", "param": None, "code": code}}


def last_event(route: str, provider: str, message: str, code: str) -> bytes:
    """The route's event that ends a stream cut after its first byte."""
    if route == "chat":
        return b"data: " + orjson.dumps(error_body(route, message, code)) + b"\n\n"
    if route == "messages":
        return b"event: error\ndata: " + orjson.dumps(error_body(route, message, code)) + b"\n\n"
    if provider == "fr":  # the Responses API passed on: its `error` event
        data = {"type": "error", "code": code, "message": message, "param": None}
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
    return b"event: response.failed\n"  # translated: its terminal `response.failed`, checked below


def outcome(traces: TraceFiles, trace_id: str) -> dict[str, Any]:
    """What the trace says: each span's status, HTTP status and error.type, by span name."""
    spans = traces.spans(trace_id)
    return {
        span["name"] if span["kind"] != "CLIENT" else "llm": (
            span["status"],
            span["attributes"].get("http.response.status_code"),
            span["attributes"].get("error.type"),
        )
        for span in spans
        if span["name"] not in ("auth", "model.resolve")
    }


def post(gw: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(("route", "provider", "fault", "stream"), CASES)
def test_provider_fault(
    fgw: Gateway, fault_traces: TraceFiles, route: str, provider: str, fault: str, stream: bool
) -> None:
    path = ROUTES[route][0]
    reply = post(fgw, path, request_body(route, f"{provider}-{fault}", stream))
    status, message, code, error_type = failure(provider, fault, stream)
    failed = {"code": 2, "message": message}
    assert reply.status_code == status, reply.text
    spans = outcome(fault_traces, reply.headers["x-tfgw-trace-id"])
    root = next(name for name in spans if name not in ("llm", "stream"))
    if status != 200:
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == error_body(route, message, code)
        assert spans == {
            root: (failed, status, error_type),
            "llm": (failed, None, error_type),
        }
        return
    assert reply.headers["content-type"].startswith("text/event-stream")
    tail = last_event(route, provider, message, code)
    assert tail in reply.content and reply.content.endswith(b"\n\n")
    if tail.startswith(b"event: response.failed"):
        failed_event = orjson.loads(reply.content[reply.content.rindex(tail) + len(tail) + 6 :])
        assert failed_event["response"]["error"] == {"code": "server_error", "message": message}
    else:
        assert reply.content.endswith(tail)
    for terminal in (b"data: [DONE]", b"event: message_stop", b"event: response.completed"):
        assert terminal not in reply.content  # no answer cut short passes for a whole one
    assert spans == {
        root: (failed, 200, error_type),
        "llm": (failed, None, error_type),
        "stream": (failed, None, error_type),
    }


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_storm_falls_back(fgw: Gateway, fault_traces: TraceFiles, stream: bool) -> None:
    reply = post(fgw, "/v1/chat/completions", request_body("chat", "storm-then-good", stream))
    assert reply.status_code == 200
    if stream:
        assert reply.content.endswith(b"data: [DONE]\n\n")
        frames = [orjson.loads(f[6:]) for f in reply.content.split(b"\n\n") if f.startswith(b"data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in frames if c["choices"])
    else:
        text = reply.json()["choices"][0]["message"]["content"]
    assert text == "echo: hello"
    spans = fault_traces.spans(reply.headers["x-tfgw-trace-id"])
    runs = [
        (s["attributes"]["gen_ai.request.model"], s["attributes"].get("error.type"))
        for s in spans
        if s["kind"] == "CLIENT"
    ]
    assert runs == [("storm", "503"), ("gpt-4o-mini", None)]


def test_storm_retried_gives_one_error(
    fgw: Gateway, faulty: FaultyUpstream, fault_traces: TraceFiles
) -> None:
    before = faulty.calls["storm"]
    reply = post(fgw, "/v1/chat/completions", request_body("chat", "storm-retried", False))
    assert (reply.status_code, reply.json()) == (
        502,
        error_body("chat", "provider 'fo' returned HTTP 503", "provider_error"),
    )
    assert faulty.calls["storm"] - before == 3
    spans = fault_traces.spans(reply.headers["x-tfgw-trace-id"])
    assert [s["attributes"].get("error.type") for s in spans if s["kind"] == "CLIENT"] == ["503"] * 3


def test_cut_streams_through_the_sdks(fgw: Gateway) -> None:
    """What the official SDKs make of a stream cut after its first byte: an error, not a hang or a
    whole-looking answer."""
    with openai.OpenAI(base_url=f"{fgw.url}/v1", api_key=KEY, max_retries=0, timeout=10) as client:
        with pytest.raises(openai.APIError, match=r"ended the stream before \[DONE\]"):
            for _ in client.chat.completions.create(
                model="fo-truncate", messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                pass
        events = [e.type for e in client.responses.create(model="fo-truncate", input="hi", stream=True)]
        assert events[-1] == "response.failed"
    claude = anthropic.Anthropic(base_url=fgw.url, api_key=KEY, max_retries=0, timeout=10)
    with claude, pytest.raises(anthropic.APIStatusError, match="ended the stream before message_stop"):
        for _ in claude.messages.create(
            model="fa-reset_stream",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        ):
            pass
