from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tfgw.config import (
    CacheSettings,
    GuardrailSettings,
    KeySettings,
    ModelSettings,
    Price,
    ProviderSettings,
    RoutingSettings,
    ServerSettings,
    Target,
    Timeouts,
    find_config,
    load,
    parse,
)
from tfgw.errors import ConfigError

MINIMAL = """
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1/"
api_key = "env:UP_KEY"

[[models]]
name = "m"
targets = [{ provider = "up", model = "gpt-x" }]
"""


def error_of(source: str, file: str = "t.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse(source, file)
    assert info.value.exit_code == 2
    return info.value.message


def test_minimal_config_gets_defaults_and_resolves_env_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-upstream-secret-1234")
    settings = parse(MINIMAL, "t.toml")
    assert settings.server == ServerSettings()
    assert dict(settings.providers) == {
        "up": ProviderSettings(name="up", kind="openai", base_url="http://127.0.0.1:9/v1",
                               api_key="sk-upstream-secret-1234"),
    }  # fmt: skip
    assert dict(settings.models) == {"m": ModelSettings(name="m", targets=(Target("up", "gpt-x"),))}
    assert settings.secrets() == ("sk-upstream-secret-1234",)


def test_unresolved_secrets_are_kept_as_references() -> None:
    settings = parse(MINIMAL, "t.toml", resolve_secrets=False)
    assert settings.providers["up"].api_key == "env:UP_KEY"


def test_example_config_covers_every_section_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "GROQ_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                "ARIZE_SPACE_ID", "ARIZE_API_KEY"):  # fmt: skip
        monkeypatch.setenv(var, f"secret-value-of-{var}")
    settings = load(REPO / "configs" / "tfgw.example.toml")
    assert settings.server == ServerSettings(host="127.0.0.1", port=8787, workers=1, max_body_bytes=10485760,
                                             graceful_timeout=30.0)  # fmt: skip
    assert settings.keys == (
        KeySettings(name="ci", hash="sha256:" + "0" * 64, rpm=600, tpm=200000, budget_usd_day=5.0,
                    budget_usd_month=100.0),
    )  # fmt: skip
    assert sorted(settings.providers) == ["anthropic", "azure", "groq", "mock", "openai"]
    assert settings.providers["azure"].api_version == "2024-10-21"
    assert dict(settings.providers["openai"].headers) == {"OpenAI-Organization": "org-example"}
    assert {name: p.responses for name, p in settings.providers.items()} == {
        "openai": True,
        "groq": False,
        "azure": False,
        "anthropic": False,
        "mock": False,
    }
    assert settings.models["gpt-4o"] == ModelSettings(
        name="gpt-4o",
        targets=(Target("openai", "gpt-4o", 3.0), Target("azure", "gpt-4o-deployment", 1.0)),
        fallbacks=("claude-sonnet",),
        price=Price(2.5, 10.0),
        retries=1,
        timeout=Timeouts(connect=5.0, first_token=60.0, total=600.0),
        strategy="weighted",
        cache=CacheSettings(ttl=300.0),
    )
    assert settings.routing == RoutingSettings(unhealthy_after=3, cooldown=30.0)
    assert settings.guardrails == (
        GuardrailSettings(name="no-pii", kind="pii", patterns=("email", "credit_card"),
                          stages=("input", "output"), action="redact", models=("*",)),
    )  # fmt: skip
    assert settings.otel_targets["arize"].api_key == "secret-value-of-ARIZE_API_KEY"
    assert settings.otel_targets["collector"].protocol == "http/protobuf"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "[server]\nport = 8787\nprot = 1\n",
            "t.toml:3: server.prot: unknown key (allowed: host, port, workers, "
            "max_body_bytes, body_timeout, graceful_timeout, state_dir, cache_max_mb, reload)",
        ),
        (
            "[buss]\n",
            "t.toml:1: buss: unknown key (allowed: server, keys, providers, models, guardrails, routing, "
            "tracing, otel, bus)",
        ),
        ('[bus]\nkind = "kafka"\n', "t.toml:2: bus.kind: must be one of local, nats, got 'kafka'"),
        (
            '[bus]\nurl = "http://n:4222"\n',
            "t.toml:2: bus.url: must start with nats://, tls://, ws:// or wss://, got 'http://n:4222'",
        ),
        (
            '[bus]\nurl = ["nats://a:4222", "b:4222"]\n',
            "t.toml:2: bus.url[1]: must start with nats://, tls://, ws:// or wss://, got 'b:4222'",
        ),
        ('[bus]\nuser = "u"\n', "t.toml:2: bus.user: needs password too"),
        (
            '[bus]\ntoken = "t"\ncreds = "c.creds"\n',
            "t.toml:3: bus.creds: give one way to authenticate, not both token and creds",
        ),
        ('[bus]\ntls = { cert = "c.pem" }\n', "t.toml:2: bus.tls.cert: cert and key go together"),
        ("[bus]\nreplicas = 0\n", "t.toml:2: bus.replicas: must be > 0, got 0"),
        ('[server]\nport = "8787"\n', "t.toml:2: server.port: expected an integer, got a string"),
        ("[server]\nworkers = 0\n", "t.toml:2: server.workers: must be > 0, got 0"),
        ("[server]\nhost = true\n", "t.toml:2: server.host: expected a string, got a boolean"),
        (
            MINIMAL + '\n[[models]]\nname = "n"\ntargets = [{ provider = "nope", model = "x" }]\n',
            "t.toml:13: models[1].targets[0].provider: unknown provider 'nope' (no [providers.nope])",
        ),
        (MINIMAL + 'fallbacks = ["ghost"]\n', "t.toml:10: models[0].fallbacks[0]: unknown model 'ghost'"),
        (
            '[providers.x]\nkind = "bedrock"\n',
            "t.toml:2: providers.x.kind: must be one of openai, azure, anthropic, mock, recorded, got"
            " 'bedrock'",
        ),
        (
            '[providers.x]\nbase_url = "http://h"\n',
            "t.toml:1: providers.x.kind: is required (one of openai, azure, anthropic, mock, recorded)",
        ),
        (
            '[providers.x]\nkind = "anthropic"\nresponses = true\n',
            "t.toml:3: providers.x.responses: is only for kind 'openai', not 'anthropic'",
        ),
        (
            '[[keys]]\nname = "a"\nhash = "md5:1"\n',
            "t.toml:3: keys[0].hash: must be 'sha256:' followed by 64 hex digits",
        ),
        ("[server\nport = 1\n", "t.toml:1: invalid TOML: Expected ']' at the end of a table declaration"),
        (
            '[tracing]\nexclude_request_data = "yes"\n',
            "t.toml:2: tracing.exclude_request_data: expected a boolean, got a string",
        ),
        (
            '[otel.targets.t]\nkind = "otlp"\nendpoint = "http://c"\nconventions = ["gen_ai", "otel"]\n',
            "t.toml:4: otel.targets.t.conventions[1]: must be one of openinference, gen_ai, got 'otel'",
        ),
        (
            '[otel.targets.nats]\nkind = "otlp"\nendpoint = "http://c"\n',
            "t.toml:1: otel.targets.nats: the target name 'nats' is reserved (the NATS publisher's cursor)",
        ),
        (
            '[otel.targets.t]\nkind = "otlp"\nendpoint = "http://c"\nconventions = []\n',
            "t.toml:4: otel.targets.t.conventions: needs at least one of openinference, gen_ai",
        ),
        (
            '[otel.targets.t]\nkind = "otlp"\nendpoint = "http://c"\nmetrics = 1\n',
            "t.toml:4: otel.targets.t.metrics: expected a boolean, got an integer",
        ),
        (
            '[providers.x]\nkind = "openai"\nsystem = 1\n',
            "t.toml:3: providers.x.system: expected a string, got an integer",
        ),
    ],
)
def test_bad_config_names_file_line_and_key(
    source: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UP_KEY", "sk-upstream-secret-1234")
    assert error_of(source) == message


def test_missing_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UP_KEY", raising=False)
    assert error_of(MINIMAL) == "t.toml:5: providers.up.api_key: environment variable UP_KEY is not set"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    assert find_config() is None
    user = _isolated_home / ".config" / "tfgw" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert find_config() == user
    (_isolated_home / "tfgw.toml").write_text("")
    assert find_config() == Path("tfgw.toml")
    monkeypatch.setenv("TFGW_CONFIG", str(tmp_path / "env.toml"))
    assert find_config() == tmp_path / "env.toml"
    assert find_config(tmp_path / "explicit.toml") == tmp_path / "explicit.toml"


@pytest.mark.parametrize(
    ("base_url", "setting", "responses"),
    [
        ("https://api.openai.com/v1", None, True),
        ("https://api.openai.com/v1/", None, True),
        ("https://api.openai.com/v1", "false", False),
        ("http://127.0.0.1:8000/v1", None, False),
        ("http://127.0.0.1:8000/v1", "true", True),
    ],
)
def test_responses_defaults_to_openais_own_api(base_url: str, setting: str | None, responses: bool) -> None:
    line = f"responses = {setting}\n" if setting else ""
    settings = parse(f'[providers.x]\nkind = "openai"\nbase_url = "{base_url}"\n{line}', "t.toml")
    assert settings.providers["x"].responses is responses


RECORDED = """
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[providers.rec]
kind = "recorded"
traces = ["recordings/", "/abs/old.jsonl.gz"]
on_miss = "forward:up"
pace = "recorded"
"""


def test_a_recorded_provider_reads_its_traces_relative_to_the_config_file() -> None:
    settings = parse(RECORDED, "conf/tfgw.toml")
    assert settings.providers["rec"] == ProviderSettings(
        name="rec",
        kind="recorded",
        base_url="",
        traces=("conf/recordings", "/abs/old.jsonl.gz"),
        on_miss="forward:up",
        pace="recorded",
    )
    bare = parse('[providers.rec]\nkind = "recorded"\ntraces = ["r.jsonl"]\n', "/etc/tfgw/t.toml")
    assert bare.providers["rec"] == ProviderSettings(
        name="rec", kind="recorded", base_url="", traces=("/etc/tfgw/r.jsonl",), on_miss="error", pace="none"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('[providers.rec]\nkind = "recorded"\n', "t.toml:1: providers.rec.traces: is required for kind"
         " 'recorded' (trace files or directories)"),
        ('[providers.rec]\nkind = "recorded"\ntraces = "r/"\n',
         "t.toml:3: providers.rec.traces: expected an array, got a string"),
        ('[providers.rec]\nkind = "recorded"\ntraces = ["r/"]\nbase_url = "http://h"\n',
         "t.toml:4: providers.rec.base_url: is not used by kind 'recorded' (it has traces, on_miss, pace)"),
        ('[providers.rec]\nkind = "recorded"\ntraces = ["r/"]\non_miss = "retry"\n',
         "t.toml:4: providers.rec.on_miss: must be 'error' or 'forward:<provider>', got 'retry'"),
        ('[providers.rec]\nkind = "recorded"\ntraces = ["r/"]\non_miss = "forward:ghost"\n',
         "t.toml:4: providers.rec.on_miss: forwards to unknown provider 'ghost' (no [providers.ghost])"),
        ('[providers.rec]\nkind = "recorded"\ntraces = ["r/"]\non_miss = "forward:rec"\n',
         "t.toml:4: providers.rec.on_miss: forwards to 'rec', a recorded provider: name a real one"),
        ('[providers.rec]\nkind = "recorded"\ntraces = ["r/"]\npace = "fast"\n',
         "t.toml:4: providers.rec.pace: must be one of none, recorded, got 'fast'"),
        ('[providers.up]\nkind = "openai"\ntraces = ["r/"]\n',
         "t.toml:3: providers.up.traces: is only for kind 'recorded', not 'openai'"),
    ],
)  # fmt: skip
def test_bad_recorded_provider_names_file_line_and_key(source: str, message: str) -> None:
    assert error_of(source) == message


def test_target_conventions_metrics_and_provider_system_are_read() -> None:
    settings = parse(
        '[providers.x]\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\nsystem = "groq"\n'
        '[otel.targets.t]\nkind = "otlp"\nendpoint = "http://c"\n'
        'conventions = ["gen_ai", "openinference", "gen_ai"]\nmetrics = true\n'
        '[otel.targets.u]\nkind = "otlp"\nendpoint = "http://c"\n',
        "t.toml",
    )
    assert settings.providers["x"].system == "groq"
    t, u = settings.otel_targets["t"], settings.otel_targets["u"]
    assert (t.conventions, t.metrics) == (("openinference", "gen_ai"), True)
    assert (u.conventions, u.metrics) == (("openinference", "gen_ai"), False)


def test_the_bus_is_local_by_default_and_nats_reads_its_servers_credentials_and_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tfgw.config import BusSettings
    from tfgw.config_bus import TlsSettings

    assert parse("", "t.toml").bus == BusSettings()
    monkeypatch.setenv("TFGW_TEST_NATS_PASSWORD", "nats-secret-0123")
    settings = parse(
        '[bus]\nkind = "nats"\nurl = ["nats://a:4222", "tls://b:4222"]\nuser = "tfgw"\n'
        'password = "env:TFGW_TEST_NATS_PASSWORD"\ntls = { ca = "ca.pem" }\nreplicas = 3\n'
        "max_age_hours = 24\nmax_mb = 512\n",
        "t.toml",
    )
    assert settings.bus == BusSettings(
        kind="nats",
        urls=("nats://a:4222", "tls://b:4222"),
        user="tfgw",
        password="nats-secret-0123",
        tls=TlsSettings(ca="ca.pem"),
        replicas=3,
        max_age_hours=24.0,
        max_mb=512,
    )
    assert "nats-secret-0123" in settings.secrets()
    assert "nats-secret-0123" not in repr(settings.bus)
