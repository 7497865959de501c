"""`tfgw traces tail` beside a real gateway: started before the trace log exists, across a segment
rotation, and stopped with SIGTERM, also when it ignores SIGINT as a job started with `&` does."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests import processes
from tests.e2e.conftest import GATEWAY_KEY, MAX_BODY, OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from tests.test_traces_cli import start_tail
from tfgw.tracing.reader import read_rows

ENV = {"E2E_OPENAI_KEY": OPENAI_KEY}
HELLO = [{"role": "user", "content": "hello there world"}]
#: a message of about 100 KB: with the answer that echoes it, a trace line of some 400 KB, so that
#: a few of them fill a 1 MB segment (`segment_max_mb` is a whole number of megabytes)
BIG = [{"role": "user", "content": "lorem ipsum " * 9000}]


def waiting(log: Path) -> str:
    return f"tfgw: waiting for the trace log in {log} to appear (^C to stop)\n"


def following(log: Path) -> str:
    return f"tfgw: following {log} (^C to stop)\n"


def write_config(tmp_path: Path, upstream: FakeUpstream, log: Path, *, segment_max_mb: int = 64) -> Path:
    text = gateway_config(upstream.url, log)
    text = text.replace(f"max_body_bytes = {MAX_BODY}", f"max_body_bytes = {4 * 1024 * 1024}")
    config = tmp_path / "tfgw.toml"
    config.write_text(text.replace("[tracing]\n", f"[tracing]\nsegment_max_mb = {segment_max_mb}\n"))
    return config


@contextlib.contextmanager
def client_of(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20) as c:
        yield c


def test_tail_started_before_the_log_exists_sees_the_first_request(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    log = tmp_path / "traces"
    child, out, err = start_tail("--json", "--dir", str(log))
    try:
        assert err.next(10) == waiting(log)
        with Gateway(write_config(tmp_path, upstream, log), env=ENV) as gw, client_of(gw) as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt", messages=HELLO)  # type: ignore[arg-type]
            answered = time.monotonic()
            row = orjson.loads(out.next(2.0))
            assert time.monotonic() - answered < 2.0
        assert err.next() == following(log)
    finally:
        code = processes.stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])  # waiting said once, no traceback
    assert isinstance(row.pop("time"), int) and isinstance(row.pop("duration_ms"), float)
    assert row == {
        "trace_id": raw.headers["x-tfgw-trace-id"],
        "name": "POST /v1/chat/completions",
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


def test_tail_shows_the_model_a_request_refused_as_invalid_named(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """`{"model": "gpt"}` without messages is a 400 before any model is resolved; its line still
    names the model (the gateway records `tfgw.model.requested` before it validates the body)."""
    log = tmp_path / "traces"
    log.mkdir()
    child, out, err = start_tail("--dir", str(log))
    try:
        assert err.next(10) == following(log)
        with Gateway(write_config(tmp_path, upstream, log), env=ENV) as gw:
            answer = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "gpt"},
                headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            )
            line = out.next(2.0).rstrip()
    finally:
        code = processes.stop(child)
    assert (code, out.rest(), err.rest(), answer.status_code) == (0, [], [], 400)
    trace = answer.headers["x-tfgw-trace-id"][:8]
    pattern = (
        rf"\d\d:\d\d:\d\d\.\d{{3}}  {trace}  gpt {{19}}- {{11}}error 400 +[\d.]+ ms +- +-  BadRequestError"
    )
    assert re.fullmatch(pattern, line), line


def test_tail_follows_the_log_across_a_segment_rotation(tmp_path: Path, upstream: FakeUpstream) -> None:
    log = tmp_path / "traces"
    child, out, err = start_tail("--json", "--dir", str(log))
    rows, after_rotation = [], 0
    try:
        assert err.next(10) == waiting(log)
        config = write_config(tmp_path, upstream, log, segment_max_mb=1)
        with Gateway(config, env=ENV) as gw, client_of(gw) as client:
            for _ in range(12):  # until two requests were written after the first rotation
                raw = client.chat.completions.with_raw_response.create(model="gpt", messages=BIG)  # type: ignore[arg-type]
                answered = time.monotonic()
                rows.append(orjson.loads(out.next(2.0)))
                assert time.monotonic() - answered < 2.0
                assert rows[-1]["trace_id"] == raw.headers["x-tfgw-trace-id"]
                if len(list(log.glob("tfgw-*.jsonl"))) > 1:
                    after_rotation += 1
                    if after_rotation == 2:
                        break
        assert err.next() == following(log)
    finally:
        code = processes.stop(child)
    assert (code, out.rest(), err.rest(), after_rotation) == (0, [], [], 2)
    assert rows == list(read_rows(log))  # every request, as the log itself has it


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_tail_stops_on_sigterm_with_exit_0(tmp_path: Path, sigint: str) -> None:
    """As a supervisor or `kill` stops it; in a background job (`&`, nohup, some CI runners) SIGINT
    is ignored, and SIGTERM still stops it."""
    (tmp_path / "traces").mkdir()
    with _sigint_ignored() if sigint == "ignored" else contextlib.nullcontext():
        child, out, err = start_tail("--dir", str(tmp_path / "traces"))
    try:
        assert err.next(10) == following(tmp_path / "traces")
        if sigint == "ignored":
            child.send_signal(signal.SIGINT)
            err.none_within(0.5)
            assert child.poll() is None  # ^C does not reach it; SIGTERM must
        sent = time.monotonic()
        code = processes.stop(child, timeout=5)
        assert time.monotonic() - sent < 2.0
    finally:
        processes.stop(child)
    assert (code, out.rest(), err.rest()) == (0, [], [])


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Children started in the block inherit SIGINT ignored, as from a non-interactive shell's `&`."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
