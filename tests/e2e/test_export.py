"""Export end to end: the real gateway, its exporter child process, and real OTLP receivers.

Every receiver here is a real server on 127.0.0.1 started by the test (tests/fakes/otlp.py); the
gateway is `tfgw serve` as a real process, which starts its exporter (`python -m tfgw.export`) as
its child.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import OPENAI_KEY, gateway_config
from tests.e2e.gateway import Gateway
from tests.fakes.otlp import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream
from tests.processes import spawn, stop

HELLO = [{"role": "user", "content": "tell me about the secret plan"}]
MW_KEY = "mw-api-key-0123456789abcdef"
ARIZE_KEY = "arize-api-key-0123456789abcdef"
ENV = {"E2E_OPENAI_KEY": OPENAI_KEY, "MW_KEY": MW_KEY, "ARIZE_KEY": ARIZE_KEY}


def llm_spans(spans: list[dict]) -> list[dict]:
    return [
        s
        for s in spans
        if any(a["key"] == "openinference.span.kind" and a["value"] == {"stringValue": "LLM"}
               for a in s.get("attributes", ()))
    ]  # fmt: skip


def attributes(span: dict) -> dict:
    from tfgw.tracing.otlp import decode_attributes

    return decode_attributes(span.get("attributes", ()))


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def write_config(tmp_path: Path, upstream: FakeUpstream, targets: str) -> Path:
    config = tmp_path / "tfgw.toml"
    text = gateway_config(upstream.url, tmp_path / "traces")
    start = text.index("[[keys]]")  # no gateway keys: these tests are about export
    config.write_text(text[:start] + text[text.index("[providers.up]") :] + targets)
    return config


def chat(gw: Gateway, n: int = 1) -> None:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        for _ in range(n):
            client.chat.completions.create(model="gpt", messages=HELLO)


def test_serve_and_its_exporter_run_their_own_tfgw_whatever_the_working_directory_holds(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """`tfgw serve` runs on as `python -m tfgw.serving` and starts its exporter as `python -m
    tfgw.export`: started in a directory that holds a `tfgw/` of its own (an old checkout, say),
    both still run the tfgw that was started (with `-P`: `-m` alone puts the working directory
    first on sys.path), so the request is answered and its spans delivered."""
    here = tmp_path / "elsewhere"
    (here / "tfgw").mkdir(parents=True)
    (here / "tfgw" / "__init__.py").write_text('raise ImportError("the tfgw/ of the working directory")\n')
    with OtlpHttpReceiver() as receiver:
        with Gateway(write_config(tmp_path, upstream, mw_target(receiver)), env=ENV, cwd=here) as gw:
            chat(gw)
            spans = receiver.wait_for(4, timeout=10)
        names = sorted(s["name"] for s in spans)
        assert names == ["POST /v1/chat/completions", "auth", "chat gpt-4o-mini", "model.resolve"]
        assert "the tfgw/ of the working directory" not in gw.logs()


def test_middleware_gets_protobuf_with_its_raw_key_and_arize_gets_grpc_metadata(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as mw, OtlpGrpcReceiver() as arize:
        config = write_config(
            tmp_path,
            upstream,
            f"""
[otel.targets.mw]
kind = "middleware"
endpoint = "{mw.base_url}"
api_key = "env:MW_KEY"

[otel.targets.arize]
kind = "arize"
endpoint = "{arize.url}"
space_id = "space-1"
api_key = "env:ARIZE_KEY"
project = "checkout"
""",
        )
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            mw.wait_for(4)
            arize.wait_for(4)
            status = httpx.get(f"{gw.url}/readyz").json()["export"]
        assert gw.logs() == ""  # delivering quietly: nothing logged per request sent
    (to_mw,) = [r for r in mw.requests if r.spans]
    assert (to_mw.path, to_mw.content_type, to_mw.headers["authorization"]) == (
        "/v1/traces",
        "application/x-protobuf",
        MW_KEY,
    )
    assert to_mw.resources[0]["openinference.project.name"] == "e2e"
    (to_arize,) = [r for r in arize.requests if r.spans]
    arize_headers = ("authorization", "api_key", "arize-space-id", "space_id", "arize-interface")
    assert {k: to_arize.headers[k] for k in arize_headers} == {
        "authorization": ARIZE_KEY,
        "api_key": ARIZE_KEY,
        "arize-space-id": "space-1",
        "space_id": "space-1",
        "arize-interface": "otel",
    }  # fmt: skip
    resource = to_arize.resources[0]
    assert (resource["openinference.project.name"], resource["model_id"]) == ("checkout", "checkout")
    (llm,) = llm_spans(to_arize.spans)
    assert attributes(llm)["llm.input_messages.0.message.content"] == HELLO[0]["content"]
    assert set(status) == {"mw", "arize"}


def mw_target(receiver: OtlpHttpReceiver, extra: str = "") -> str:
    return f"""
[otel.targets.mw]
kind = "middleware"
endpoint = "{receiver.base_url}"
api_key = "env:MW_KEY"
{extra}
"""


def timed_chats(gw: Gateway, n: int) -> list[float]:
    took = []
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        for _ in range(n):
            start = time.monotonic()
            client.chat.completions.create(model="gpt", messages=HELLO)  # raises on any failure
            took.append(time.monotonic() - start)
    return took


def test_an_outage_and_a_gateway_restart_lose_no_span_and_slow_no_request(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw))
        with Gateway(config, env=ENV) as gw:
            chat(gw)  # one delivered before the outage
            mw.wait_for(4)
            mw.fail_next(503, times=10_000, retry_after=0.2)
            took = timed_chats(gw, 25)
            deadline = time.monotonic() + 5
            while not any(r.status == "503" for r in mw.requests) and time.monotonic() < deadline:
                time.sleep(0.02)
            mw.down()
            took += timed_chats(gw, 25)
            retrying = httpx.get(f"{gw.url}/readyz").json()["export"]["mw"]
        assert retrying["state"] in ("retrying", "running") and retrying["last_error"].startswith("retrying")
        mw.reset()
        with Gateway(config, env=ENV):  # the gateway (and its exporter) restarted during the outage
            mw.up()
            spans = mw.wait_for(50 * 4, timeout=20)
            time.sleep(0.5)  # nothing more arrives: no span twice
            spans = mw.spans
    assert len(took) == 50 and max(took) < 1.0, f"slowest request {max(took):.3f} s"
    llm = llm_spans(spans)
    assert len(llm) == 50
    assert len({s["spanId"] for s in llm}) == 50
    assert len(spans) == 200


def test_a_permanent_rejection_is_counted_not_retried_forever(tmp_path: Path, upstream: FakeUpstream) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw))
        with Gateway(config, env=ENV) as gw:
            mw.fail_next(400, times=1, message="span attribute too long")
            chat(gw)
            deadline = time.monotonic() + 5
            while not mw.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            chat(gw)  # what comes after the rejected batch is delivered
            mw.wait_for(4)
            time.sleep(0.5)
            status = httpx.get(f"{gw.url}/readyz").json()["export"]["mw"]
    assert [r.status for r in mw.requests] == ["400", "200"]
    assert (status["rejected"], status["delivered"]) == (4, 4)
    assert status["last_error"] == "rejected (400): span attribute too long"


def test_exclude_request_data_per_target_sends_no_prompt_text_but_the_log_keeps_it(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw, "exclude_request_data = true"))
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            mw.wait_for(4)
    assert {r.content_encoding for r in mw.requests} == {"gzip"}
    sent = b"".join(gzip.decompress(r.body) for r in mw.requests)
    assert b"llm.input_messages.0.message.role" in sent  # the decompressed protobuf, as sent
    for word in (b"secret", b"plan"):
        assert word not in sent
    (llm,) = llm_spans(mw.spans)
    assert attributes(llm)["llm.token_count.prompt"] == 6
    local = b"".join(p.read_bytes() for p in (tmp_path / "traces").glob("*.jsonl"))
    assert b"tell me about the secret plan" in local


def otel(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfgw", "otel", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ENV},
    )


def test_otel_test_exit_codes(tmp_path: Path, upstream: FakeUpstream) -> None:
    with OtlpHttpReceiver() as mw, OtlpGrpcReceiver() as grpc_receiver:
        config = write_config(
            tmp_path,
            upstream,
            mw_target(mw)
            + f"""
[otel.targets.collector]
kind = "otlp"
protocol = "grpc"
endpoint = "{grpc_receiver.url}"
""",
        )
        accepted = otel(config, "test", "mw", "--json")
        (request,) = mw.requests
        mw.fail_next(400, message="bad span")
        rejected = otel(config, "test", "mw")
        mw.fail_next(503, times=1000)
        unavailable = otel(config, "test", "mw", "--timeout", "1")
        via_grpc = otel(config, "test", "collector")
    result = orjson.loads(accepted.stdout)
    assert (accepted.returncode, result["accepted"], result["spans"], result["status"]) == (0, True, 3, "200")
    assert {s["traceId"] for s in request.spans} == {result["trace_id"]}
    assert [attributes(s)["llm.model_name"] for s in llm_spans(request.spans)] == ["gpt-4o-mini"]
    assert (rejected.returncode, rejected.stderr) == (1, "")
    assert rejected.stdout.startswith("mw: rejected (400, ") and rejected.stdout.endswith(": bad span\n")
    assert unavailable.returncode == 1 and "still failing after 1 s" in unavailable.stdout
    assert via_grpc.returncode == 0 and via_grpc.stdout.startswith("collector: accepted (OK, ")
    assert MW_KEY not in accepted.stdout + rejected.stdout + unavailable.stdout


def test_otel_status_reads_what_the_exporter_did(tmp_path: Path, upstream: FakeUpstream) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw))
        with Gateway(config, env=ENV) as gw:
            chat(gw, 2)
            mw.wait_for(8)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                done = otel(config, "status", "--json")
                report = orjson.loads(done.stdout)["mw"]
                if report["delivered"] == 8:
                    break
                time.sleep(0.1)
    assert done.returncode == 0
    keys = ("state", "delivered", "rejected", "dropped", "pending_bytes", "last_error")
    assert {k: report[k] for k in keys} == {
        "state": "running",
        "delivered": 8,
        "rejected": 0,
        "dropped": 0,
        "pending_bytes": 0,
        "last_error": None,
    }  # fmt: skip


def test_http_json_follows_the_otlp_json_rules(tmp_path: Path, upstream: FakeUpstream) -> None:
    with OtlpHttpReceiver() as collector:
        target = f"""
[otel.targets.collector]
kind = "otlp"
protocol = "http/json"
endpoint = "{collector.base_url}/v1/traces"
compression = "none"
"""
        config = write_config(tmp_path, upstream, target)
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            collector.wait_for(4)
    (request,) = [r for r in collector.requests if r.spans]
    assert (request.content_type, request.content_encoding) == ("application/json", None)
    body = orjson.loads(request.body)
    (span,) = [s for s in body["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["kind"] == 3]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
    assert len(span["spanId"]) == 16 and len(span["parentSpanId"]) == 16
    assert isinstance(span["startTimeUnixNano"], str) and span["startTimeUnixNano"].isdigit()
    tokens = next(a for a in span["attributes"] if a["key"] == "llm.token_count.prompt")
    assert tokens == {"key": "llm.token_count.prompt", "value": {"intValue": "6"}}


def test_a_crashed_exporter_is_restarted_and_resumes_from_its_cursor(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw))
        with Gateway(config, env=ENV) as gw:
            chat(gw)
            mw.wait_for(4)
            (child,) = exporter_pids(config)
            os.kill(child, signal.SIGKILL)
            chat(gw, 3)  # written while no exporter runs
            mw.wait_for(16, timeout=15)
            (restarted,) = exporter_pids(config)
            assert restarted != child
            assert "tfgw: exporter exited with -9; restarting" in gw.logs()
    assert len(llm_spans(mw.spans)) == 4


def test_tfgw_exporter_runs_alone_beside_gateways_that_do_not_export(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with OtlpHttpReceiver() as mw:
        config = write_config(tmp_path, upstream, mw_target(mw))
        gateway_config = tmp_path / "gateway.toml"  # the same log; this gateway starts no exporter
        gateway_config.write_text(config.read_text() + "enabled = false\n")
        command = [sys.executable, "-m", "tfgw", "exporter", "--config", str(config)]
        with spawn(command, env={**os.environ, **ENV}, stderr=subprocess.PIPE) as exporter:
            try:
                deadline = time.monotonic() + 10  # its cursor exists once it runs
                while not (tmp_path / "traces" / ".cursors" / "mw.json").exists():
                    assert time.monotonic() < deadline, "the exporter never started"
                    time.sleep(0.05)
                with Gateway(gateway_config, env=ENV) as gw:
                    chat(gw, 2)
                mw.wait_for(8, timeout=10)
            finally:
                stop(exporter, 15)
                _, err = exporter.communicate(timeout=15)
    assert exporter.returncode == 0, err
    assert len(llm_spans(mw.spans)) == 2


def exporter_pids(config: Path) -> list[int]:
    """The exporter child processes `tfgw serve --config CONFIG` runs."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pattern = f"tfgw.export --nice 10 --parent [0-9]+ --config {config}"
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        if pids:
            return pids
        time.sleep(0.05)
    return []
