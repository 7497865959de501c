"""One full run with every kind of secret tfgw holds, then every artifact of it searched for each.

The run (once for the module): a real `nats-server -js` that wants a user and password, a fake
OpenAI/Anthropic provider that wants its keys, a fake OTLP receiver behind two export targets
(a `middleware` one with an api key, an `otlp` one with an `authorization` header), and
`tfgw serve --exporter` with a gateway key, publishing to NATS and exporting from the stream. It
serves JSON, a stream, Anthropic Messages, a provider error that quotes the provider key, a prompt
holding a user's secret (redacted by a guardrail), requests with headers and fields meant to leak
or to redirect, then `/metrics`, `/readyz` and the CLI are asked.

What is searched: every file the run left (trace files, rows, cursors, the state dir, the NATS
store, the logs of every process), the gateway's stdout, every answer it gave, the CLI's output,
and what the receiver was sent (its bodies). A secret may appear only masked (`sk-…wxyz`): neither
it nor its middle may be found. Where each secret legitimately goes (the provider's key to the
provider, an exporter's key to its backend) is checked too, so the search is not vacuous.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.fakes.otlp import OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream, Recorded
from tests.nats import NatsServer
from tests.processes import spawn, stop
from tfgw.keys import hash_key

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-secprov-4f1c9a7d2e8b6031aa57c0de"
ANTHROPIC_KEY = "sk-ant-secprov-9b2e77d1c40a5f63e81d"
GATEWAY_KEY = "tfgw-secgw-7Qm2Zp9Kx4Lr8Vt1Nw6Hy3Bc5Df0Gj"
MW_KEY = "mwkey-secexp-3a8d61f0b97c24e5d1aa"
OTLP_TOKEN = "otlptok-secexp-c19e04b7a63d58f2e0bb"
NATS_USER = "tfgw"
NATS_PASSWORD = "natspw-secbus-62d0f9a4c17e3b85a9cc"
#: in a prompt; a guardrail redacts it before anything records it
USER_SECRET = "zz-user-secret-8e41c7a09bd2f356"
#: sent by the client in headers a provider must never see
CLIENT_SECRET = "clientsecret-d7a2c9f0e14b8635"
SECRETS = {
    "provider key": PROVIDER_KEY,
    "anthropic key": ANTHROPIC_KEY,
    "gateway key": GATEWAY_KEY,
    "exporter api key": MW_KEY,
    "exporter header token": OTLP_TOKEN,
    "NATS password": NATS_PASSWORD,
    "user's secret in a prompt": USER_SECRET,
}
ENV = {
    "SEC_PROVIDER_KEY": PROVIDER_KEY,
    "SEC_ANTHROPIC_KEY": ANTHROPIC_KEY,
    "SEC_MW_KEY": MW_KEY,
    "SEC_OTLP_AUTH": f"Bearer {OTLP_TOKEN}",
    "SEC_NATS_PASSWORD": NATS_PASSWORD,
}
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
HELLO = [{"role": "user", "content": "hello there"}]


def config_text(root: Path, upstream: str, nats: str, receiver: str) -> str:
    return f"""
[server]
state_dir = "{root / "state"}"

[tracing]
dir = "{root / "traces"}"
project = "security"

[[keys]]
name = "sec"
hash = "{hash_key(GATEWAY_KEY)}"

[bus]
kind = "nats"
url = "{nats}"
user = "{NATS_USER}"
password = "env:SEC_NATS_PASSWORD"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "env:SEC_PROVIDER_KEY"

[providers.claude]
kind = "anthropic"
base_url = "{upstream}"
api_key = "env:SEC_ANTHROPIC_KEY"

[[models]]
name = "gpt"
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[[models]]
name = "claude"
targets = [{{ provider = "claude", model = "claude-3-5-haiku" }}]

[[guardrails]]
name = "user-secrets"
kind = "regex"
patterns = ["zz-user-secret-[0-9a-f]+"]
stage = ["input", "output"]
action = "redact"

[otel.targets.mw]
kind = "middleware"
endpoint = "{receiver}"
api_key = "env:SEC_MW_KEY"

[otel.targets.plain]
kind = "otlp"
endpoint = "{receiver}"
headers = {{ authorization = "env:SEC_OTLP_AUTH" }}
"""


@dataclass
class Run:
    """What the run left: text blobs by where they came from, and what the fakes received."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    upstream: list[Recorded] = field(default_factory=list)
    trap: list[Recorded] = field(default_factory=list)
    export_headers: list[dict[str, str]] = field(default_factory=list)
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    #: each CLI command's exit code
    codes: dict[str, int] = field(default_factory=dict)
    upstream_host: str = ""
    trap_url: str = ""

    def answer(self, name: str, response: httpx.Response) -> None:
        self.blobs[f"answer {name}"] = _headers_and_body(response)
        body = response.json() if "json" in response.headers.get("content-type", "") else response.text
        self.answers[name] = (response.status_code, body)


def _headers_and_body(response: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
    return head + b"\n" + response.content


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def serve_requests(gw: Gateway, up: FakeUpstream, trap: FakeUpstream, run: Run) -> None:
    """The requests of the run, each kind a secret could ride on."""
    url = gw.url
    with openai.OpenAI(base_url=f"{url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20) as client:
        client.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": f"my key is {USER_SECRET}, keep it"}],
            extra_headers={"x-tfgw-session-id": "s-1", "x-tfgw-user-id": "u-1", "x-tfgw-metadata": '{"a":1}'},
        )
        for _ in client.chat.completions.create(model="gpt", messages=HELLO, stream=True):  # type: ignore[arg-type]
            pass
    leaky = {**AUTH, "x-client-secret": CLIENT_SECRET, "cookie": f"session={CLIENT_SECRET}"}
    leaky |= {"x-forwarded-for": "10.9.9.9", "proxy-authorization": f"Basic {CLIENT_SECRET}"}
    messages = {"model": "claude", "max_tokens": 16, "messages": HELLO}
    headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "cookie": CLIENT_SECRET}
    run.answer("messages", httpx.post(f"{url}/v1/messages", json=messages, headers=headers, timeout=20))
    redirect = {"base_url": trap.url, "api_base": f"{trap.url}/v1", "url": trap.url, "endpoint": trap.url}
    chat = {"model": "gpt", "messages": HELLO, **redirect, "extra_headers": {"host": "evil"}}
    run.answer("leaky headers", httpx.post(f"{url}/v1/chat/completions", json=chat, headers=leaky))
    for model in (f"{trap.url}/v1", f"up/x@127.0.0.1:{trap.port}", f"up/../../{trap.url}"):
        body = {"model": model, "messages": HELLO}
        run.answer(f"model {model}", httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH))
    up.fail_next(401, {"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}.", "type": "x"}})
    run.answer("provider 401", httpx.post(f"{url}/v1/chat/completions", json=chat, headers=AUTH))
    up.fail_next(500, f"upstream broke holding {PROVIDER_KEY}".encode())
    run.answer("provider 500", httpx.post(f"{url}/v1/chat/completions", json=chat, headers=AUTH))
    wrong = {"authorization": f"Bearer {GATEWAY_KEY}x"}
    run.answer("wrong key", httpx.post(f"{url}/v1/chat/completions", json=chat, headers=wrong))


def ask_probes(gw: Gateway, run: Run) -> None:
    """/metrics once the exporter's deriver counted the run, /readyz with and without a key."""

    def counted() -> bool:
        answer = httpx.get(f"{gw.url}/metrics", headers=AUTH, timeout=5)
        run.answer("metrics", answer)
        return answer.status_code == 200 and 'model="claude"' in answer.text

    wait_until(counted, 20, "/metrics counting the run")
    run.answer("readyz", httpx.get(f"{gw.url}/readyz", headers=AUTH, timeout=5))
    run.answer("readyz without a key", httpx.get(f"{gw.url}/readyz", timeout=5))
    run.answer("metrics without a key", httpx.get(f"{gw.url}/metrics", timeout=5))


def ask_cli(config: Path, run: Run, trace_id: str) -> None:
    """Every CLI command that shows config, keys, export status or traces, run side by side."""
    commands = [
        ["otel", "list"], ["otel", "show", "mw"], ["otel", "show", "plain"], ["otel", "status"],
        ["otel", "status", "--json"], ["otel", "test", "plain"], ["keys", "list"], ["keys", "list", "--json"],
        ["traces", "list"], ["traces", "show", trace_id], ["traces", "show", trace_id, "--json"],
    ]  # fmt: skip
    env = {**os.environ, **ENV, "COLUMNS": "200"}
    started = [
        (args, spawn([sys.executable, "-m", "tfgw", *args, "--config", str(config)], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for args in commands
    ]  # fmt: skip
    for args, process in started:
        out, err = process.communicate(timeout=60)
        stop(process)
        run.blobs[f"tfgw {' '.join(args)}"] = out + b"\n" + err
        run.codes[f"tfgw {' '.join(args)}"] = process.returncode


def collect_files(root: Path, run: Run) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        run.blobs[f"file {path.relative_to(root)}"] = gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("secured")
    run = Run()
    nats_args = ("--user", NATS_USER, "--pass", NATS_PASSWORD)
    with (
        FakeUpstream() as up,
        FakeUpstream() as trap,
        OtlpHttpReceiver() as rx,
        NatsServer(root / "nats", args=nats_args) as nats,
    ):
        config = root / "tfgw.toml"
        config.write_text(config_text(root, up.url, nats.url, rx.url))
        with Gateway(config, "--exporter", env=ENV) as gw:
            serve_requests(gw, up, trap, run)
            wait_until(lambda: _exported(rx) >= 2 * 7, 30, "every request's spans at both targets")
            ask_probes(gw, run)
            trace_id = run_trace_id(root / "traces")
            ask_cli(config, run, trace_id)
            gw.stop()
            assert gw.process is not None and gw.process.stdout is not None
            run.blobs["gateway stdout"] = gw.process.stdout.read().encode()
        run.upstream, run.trap = up.requests, trap.requests
        run.upstream_host, run.trap_url = f"127.0.0.1:{up.port}", trap.url
        run.export_headers = [r.headers for r in rx.requests]
        run.blobs |= {f"export body {i}": r.body for i, r in enumerate(rx.requests)}
        run.blobs |= {f"export decoded {i}": orjson.dumps(r.request) for i, r in enumerate(rx.requests)}
    collect_files(root, run)
    yield run


def _exported(rx: OtlpHttpReceiver) -> int:
    """Root spans the receiver accepted, both targets together."""
    return sum(1 for r in rx.requests if r.accepted for s in r.spans if not s.get("parentSpanId"))


def run_trace_id(traces: Path) -> str:
    for path in sorted(traces.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            data = orjson.loads(line)
            return str(data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"])
    raise AssertionError(f"no trace in {traces}")


def leaks(blob: bytes) -> list[str]:
    """The secrets `blob` holds, whole or their middle (a masked form keeps only the ends)."""
    return [
        name for name, secret in SECRETS.items() if secret.encode() in blob or secret[6:-5].encode() in blob
    ]


def test_no_secret_in_any_artifact_of_a_full_run(secured: Run) -> None:
    found = {where: names for where, blob in secured.blobs.items() if (names := leaks(blob))}
    assert found == {}
    kinds = {where.split(" ", 1)[0] for where in secured.blobs}
    assert kinds == {"answer", "file", "tfgw", "gateway", "export"}
    files = [where for where in secured.blobs if where.startswith("file ")]
    expected_files = ("traces/", "state/", "nats/nats-store/", "nats/nats-server.log", "tfgw.toml.stderr")
    for expected in (f"file {name}" for name in expected_files):
        assert any(where.startswith(expected) for where in files), (expected, files)


def test_the_secrets_went_where_they_belong_and_masked_where_shown(secured: Run) -> None:
    """The search above is not vacuous: each secret was in use in the run."""
    sent = {(r.path, r.headers.get("authorization") or r.headers.get("x-api-key")) for r in secured.upstream}
    assert ("/v1/chat/completions", f"Bearer {PROVIDER_KEY}") in sent
    assert ("/v1/messages", ANTHROPIC_KEY) in sent
    exported = {h.get("authorization") for h in secured.export_headers}
    assert exported == {MW_KEY, f"Bearer {OTLP_TOKEN}"}
    assert secured.answers["provider 401"] == (
        401,
        {"error": {"message": "Incorrect API key provided: sk-…c0de.", "type": "x"}},
    )
    assert secured.answers["provider 500"][0] == 502
    assert "header authorization  mwkey-…d1aa" in secured.blobs["tfgw otel show mw"].decode()
    prompts = [m["content"] for r in secured.upstream if r.body for m in r.body.get("messages", ())]
    assert "my key is [REDACTED:user-secrets], keep it" in prompts


def test_readyz_details_and_metrics_only_with_the_key(secured: Run) -> None:
    status, details = secured.answers["readyz"]
    names = ["config", "export", "models", "status", "tracing", "version", "worker"]
    assert (status, sorted(details)) == (200, names)
    assert secured.answers["readyz without a key"] == (200, {"status": "ready"})
    status, body = secured.answers["metrics without a key"]
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")


def test_every_cli_command_of_the_run_succeeded(secured: Run) -> None:
    failed = {command: code for command, code in secured.codes.items() if code}
    assert failed == {}
    assert len(secured.codes) == 11


def test_otel_status_reaches_a_nats_that_wants_a_password_from_env(secured: Run) -> None:
    assert secured.codes["tfgw otel status"] == 0, secured.blobs["tfgw otel status"]


#: the headers a provider gets: its own key, the Anthropic version, and the HTTP client's own
OPENAI_HEADERS = [
    "accept",
    "accept-encoding",
    "authorization",
    "content-length",
    "content-type",
    "host",
    "user-agent",
]
ANTHROPIC_HEADERS = [
    "accept", "accept-encoding", "anthropic-version", "content-length", "content-type", "host", "user-agent",
    "x-api-key",
]  # fmt: skip


def test_the_provider_gets_its_own_key_and_none_of_the_clients_headers(secured: Run) -> None:
    """The client's Authorization and x-api-key (the gateway key), its cookies, proxy credentials
    and any other header stay with the gateway, whatever the route."""
    seen = [(r.path, sorted(r.headers)) for r in secured.upstream]
    assert seen == [
        ("/v1/chat/completions", OPENAI_HEADERS),
        ("/v1/chat/completions", OPENAI_HEADERS),
        ("/v1/messages", ANTHROPIC_HEADERS),
        *[("/v1/chat/completions", OPENAI_HEADERS)] * 5,  # leaky headers, 2 models, 401, 500
    ]
    keys = {r.headers.get("authorization") or r.headers["x-api-key"] for r in secured.upstream}
    assert keys == {f"Bearer {PROVIDER_KEY}", ANTHROPIC_KEY}
    assert {(r.headers["host"], r.headers["user-agent"]) for r in secured.upstream} == {
        (secured.upstream_host, "tfgw")
    }
    assert not [r for r in secured.upstream if CLIENT_SECRET in orjson.dumps(r.headers).decode()]


def test_no_request_field_sends_a_call_anywhere_but_the_configured_provider(secured: Run) -> None:
    """URLs come from the config only: `base_url`, `api_base`, `url`, `endpoint` in a body and URLs
    in `model` reach the configured provider (as body fields and a model name) or nothing."""
    assert secured.trap == []
    status, body = secured.answers[f"model {secured.trap_url}/v1"]
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    port = secured.trap_url.rsplit(":", 1)[1]
    models = [r.body["model"] if r.body else None for r in secured.upstream]
    gpt, claude = "gpt-4o-mini", "claude-3-5-haiku"
    assert models == [gpt, gpt, claude, gpt, f"x@127.0.0.1:{port}", f"../../{secured.trap_url}", gpt, gpt]
