"""The README's newcomer path, as a new user types it, in one test: `tfgw init --demo`, `tfgw otel
set otlp ...`, `tfgw serve`, one request with the `openai` SDK, the spans at a real OTLP/HTTP
receiver on loopback, and `tfgw otel status` saying they were delivered.

The working directory and HOME are a fresh temp dir (tests/conftest.py), so the config is
./tfgw.toml there and the trace log is the default one under that HOME.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai
import orjson

from tests.e2e.gateway import Gateway
from tests.fakes.otlp import OtlpHttpReceiver

T = TypeVar("T")

SPANS = ["POST /v1/chat/completions", "auth", "chat demo-1", "model.resolve"]


def tfgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tfgw", *args], capture_output=True, text=True, timeout=30)


def poll(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
    """`check()`'s first result that is not None, asking until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return found


def test_from_the_demo_to_an_export_target() -> None:
    home = Path.home()
    assert Path.cwd() == home  # both the temp dir tests/conftest.py made for this test
    with OtlpHttpReceiver() as rx:
        init = tfgw("init", "--demo")
        assert (init.returncode, init.stdout, init.stderr) == (0, "", "wrote tfgw.toml\n")
        added = tfgw("otel", "set", "otlp", "--name", "local", "--endpoint", rx.base_url)
        assert (added.returncode, added.stdout, added.stderr) == (
            0,
            f"target local (otlp, http/protobuf {rx.url}) written to tfgw.toml\n",
            "",
        )

        with Gateway(None) as gw:
            sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10)
            with sdk as client:
                raw = client.chat.completions.with_raw_response.create(
                    model="demo", messages=[{"role": "user", "content": "hi there"}]
                )
            assert raw.parse().choices[0].message.content == (
                "Hello from tfgw's demo provider. You said: hi there"
            )
            trace_id = raw.headers["x-tfgw-trace-id"]

            def spans_of_the_request() -> list[dict[str, Any]] | None:
                spans = [s for s in rx.spans if s["traceId"] == trace_id]
                return spans if len(spans) >= len(SPANS) else None

            spans = poll("the request's spans at the receiver", spans_of_the_request)
            assert sorted(s["name"] for s in spans) == SPANS

            def delivered() -> dict[str, Any] | None:
                done = tfgw("otel", "status", "--json")
                assert (done.returncode, done.stderr) == (0, "")
                report = orjson.loads(done.stdout)
                return report if (report["local"]["delivered"] or 0) >= len(spans) else None

            status = poll("tfgw otel status counting them delivered", delivered)["local"]
        assert gw.logs() == ""  # nothing to say while all goes well
    assert (status["state"], status["reason"], status["delivered"]) == ("running", None, len(SPANS))
    assert list((home / ".local/share/tfgw/traces").glob("tfgw-*.jsonl")) != []
