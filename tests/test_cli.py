"""The CLI as a user runs it: real subprocesses, whole outputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tfgw.cli import app
from tfgw.config import load
from tfgw.keys import hash_key
from tfgw.policy.counters import table_path
from tfgw.policy.limits import Limits


def tfgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfgw", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 8787\nprot = 1\n",
         "bad.toml:3: server.prot: unknown key (allowed: host, port, workers, max_body_bytes, "
         "body_timeout, graceful_timeout, state_dir, cache_max_mb, reload)"),
        ("[server]\nport = \"high\"\n", "bad.toml:2: server.port: expected an integer, got a string"),
        ("[providers.p]\nkind = \"openai\"\napi_key = \"env:TFGW_TEST_UNSET_VAR\"\n",
         "bad.toml:3: providers.p.api_key: environment variable TFGW_TEST_UNSET_VAR is not set"),
        ("[server\n", "bad.toml:1: invalid TOML: Expected ']' at the end of a table declaration"),
    ],
)  # fmt: skip
def test_bad_config_exits_2_naming_file_line_and_key(text: str, message: str) -> None:
    Path("bad.toml").write_text(text)
    done = tfgw("serve", "--config", "bad.toml")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"tfgw: {message}\n")


def test_missing_config_exits_2() -> None:
    done = tfgw("serve")
    assert done.returncode == 2
    assert done.stderr == (
        "tfgw: tfgw.toml: no config file found (looked at --config, $TFGW_CONFIG, ./tfgw.toml, "
        "~/.config/tfgw/config.toml); run `tfgw init` (or `tfgw init --demo`) first\n"
    )


REFUSED = (
    "tfgw: --demo: server.host: refusing to listen on 0.0.0.0 without gateway keys: anyone who can reach "
    "it could use your provider keys. Add one with `tfgw keys add NAME`, or listen on 127.0.0.1.\n"
)


def test_serve_demo_says_it_ignores_the_config_it_found() -> None:
    """Refused before it binds (0.0.0.0 without keys), so nothing is left running: what --demo says
    about ./tfgw.toml comes first, on stderr, in one line."""
    assert tfgw("serve", "--demo", "--host", "0.0.0.0").stderr == REFUSED
    assert tfgw("init", "--demo").returncode == 0
    assert tfgw("serve", "--demo", "--host", "0.0.0.0").stderr == (
        "tfgw: warning: --demo ignores tfgw.toml; run `tfgw serve` without --demo to use it\n" + REFUSED
    )
    for name in ("phoenix", "arize"):
        added = tfgw("otel", "set", "otlp", "--name", name, "--endpoint", "http://127.0.0.1:6006")
        assert added.returncode == 0
    done = tfgw("serve", "--demo", "--host", "0.0.0.0")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "tfgw: warning: --demo ignores tfgw.toml and its 2 export targets (phoenix, arize); "
        "run `tfgw serve` without --demo to use it\n" + REFUSED,
    )


def test_init_writes_configs_that_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tfgw("init", "--demo").returncode == 0
    demo = load("tfgw.toml")
    assert list(demo.models) == ["demo", "demo-embed"]
    again = tfgw("init", "--demo")
    assert (again.returncode, again.stderr) == (
        2,
        "tfgw: tfgw.toml: already exists (use --force to overwrite)\n",
    )
    assert tfgw("init", "--path", "real.toml").returncode == 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-b-0123456789")
    real = load("real.toml")
    assert sorted(real.providers) == ["anthropic", "openai"]
    assert real.models["gpt-4o-mini"].fallbacks == ("claude-haiku",)


def test_keys_add_list_revoke_keep_the_rest_of_the_file() -> None:
    original = "# my gateway\n[server]\nport = 9000  # not the default\n"
    Path("tfgw.toml").write_text(original)

    added = tfgw("keys", "add", "ci", "--rpm", "60")
    assert added.returncode == 0
    key = added.stdout.strip()
    assert re.fullmatch(r"tfgw-[A-Za-z0-9_\-]{43}", key)
    assert added.stdout == key + "\n"
    assert added.stderr == "added key 'ci' to tfgw.toml; it is shown only this once\n"
    assert tfgw("keys", "add", "batch", "--tpm", "1000").returncode == 0

    text = Path("tfgw.toml").read_text()
    assert text.startswith(original)
    assert key not in text
    first = load("tfgw.toml").keys[0]
    assert (first.name, first.hash, first.rpm, first.tpm) == (
        "ci",
        hash_key(key),
        60,
        None,
    )

    listed = tfgw("keys", "list", "--json")
    assert listed.returncode == 0
    assert key not in listed.stdout
    unused = (
        '"budget_usd_day":null,"budget_usd_month":null,'
        '"usage":{"rpm":0,"tpm":0,"usd_day":0.0,"usd_month":0.0}'
    )
    assert listed.stdout == (
        f'[{{"name":"ci","hash":"{hash_key(key)[:15]}…","rpm":60,"tpm":null,{unused}}},'
        f'{{"name":"batch","hash":"{load("tfgw.toml").keys[1].hash[:15]}…","rpm":null,"tpm":1000,{unused}}}]\n'
    )

    duplicate = tfgw("keys", "add", "ci")
    assert (duplicate.returncode, duplicate.stderr) == (
        2,
        "tfgw: tfgw.toml: keys: a key named 'ci' already exists\n",
    )

    assert tfgw("keys", "revoke", "ci").returncode == 0
    assert [k.name for k in load("tfgw.toml").keys] == ["batch"]
    assert Path("tfgw.toml").read_text().startswith(original)
    missing = tfgw("keys", "revoke", "ci")
    assert (missing.returncode, missing.stderr) == (2, "tfgw: tfgw.toml: keys: no key named 'ci'\n")


KEYS_WITH_LIMITS = f"""[tracing]
dir = "data/traces"

[[keys]]
name = "ci"
hash = "{hash_key("tfgw-ci")}"
rpm = 600
tpm = 200000
budget_usd_day = 5.0
budget_usd_month = 100.0

[[keys]]
name = "batch"
hash = "{hash_key("tfgw-batch")}"
"""


def test_keys_list_shows_the_usage_next_to_each_limit_and_budget() -> None:
    """What the gateway counted in the state dir (beside the traces), read through the CLI; before
    the gateway has counted anything, zeros (and no file is made)."""
    Path("tfgw.toml").write_text(KEYS_WITH_LIMITS)
    settings = load("tfgw.toml")
    state = table_path(settings.tracing.state_path(settings.server.state_dir))
    assert state == Path("data/state/limits.bin")
    runner = CliRunner()
    before = runner.invoke(app, ["keys", "list", "--json"])
    assert (before.exit_code, before.stdout) == (0, _keys_json(0, 0, 0.0) + "\n")
    assert not state.exists()

    limits = Limits(settings.keys, state)
    for _ in range(12):
        limits.settle(limits.admit(settings.keys[0], 100), 125, 0.1025)
    limits.close()
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "120"})
    hashes = [k.hash[:15] + "…" for k in settings.keys]
    assert (listed.exit_code, listed.stdout) == (
        0,
        " name   hash              rpm     tpm          today           this month       \n"
        f" ci     {hashes[0]}  12/600  1500/200000  $1.23 of $5.00  $1.23 of $100.00 \n"
        f" batch  {hashes[1]}  0       0            $0.00           $0.00            \n",
    )
    as_json = runner.invoke(app, ["keys", "list", "--json"])
    assert (as_json.exit_code, as_json.stdout) == (0, _keys_json(12, 1500, 1.23) + "\n")


def _keys_json(requests: int, tokens: int, usd: float) -> str:
    ci, batch = (hash_key(k)[:15] + "…" for k in ("tfgw-ci", "tfgw-batch"))
    return (
        f'[{{"name":"ci","hash":"{ci}","rpm":600,"tpm":200000,"budget_usd_day":5.0,"budget_usd_month":100.0,'
        f'"usage":{{"rpm":{requests},"tpm":{tokens},"usd_day":{usd},"usd_month":{usd}}}}},'
        f'{{"name":"batch","hash":"{batch}","rpm":null,"tpm":null,"budget_usd_day":null,"budget_usd_month":null,'
        '"usage":{"rpm":0,"tpm":0,"usd_day":0.0,"usd_month":0.0}}]'
    )


def test_the_cli_starts_without_loading_grpc_or_protobuf() -> None:
    """Only the commands that export (exporter, otel test, replay) pay for grpc and protobuf."""
    code = "import sys, tfgw.cli; print(sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "[]\n")


def test_replay_timeout_default_is_the_same_in_the_cli_and_the_library() -> None:
    from tfgw import replay
    from tfgw.cli import replay as cli_replay

    assert cli_replay.DEFAULT_TIMEOUT_S == replay.DEFAULT_TIMEOUT_S
