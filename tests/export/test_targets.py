"""How configured targets and the OTEL_EXPORTER_OTLP_* variables become `ResolvedTarget`s: whole
values, one table row per rule."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from tfgw.config import OtelTargetSettings, Settings, parse
from tfgw.errors import ConfigError, NotFoundError
from tfgw.export.targets import (
    INDEFINITE_TIMEOUT_S,
    ResolvedTarget,
    describe,
    resolve_target,
    resolve_targets,
    target_names,
)

KEY = "ak-0123456789abcdef"
SPACE = "U3BhY2U6MTIzNDU2Nzg="
MW_KEY = "mw0123456789abcdefgh"
ARIZE_HEADERS = {
    "authorization": KEY,
    "api_key": KEY,
    "arize-space-id": SPACE,
    "space_id": SPACE,
    "arize-interface": "otel",
}
ARIZE = f'kind = "arize"\nspace_id = "{SPACE}"\napi_key = "{KEY}"\n'


def target(body: str, environ: dict[str, str] | None = None, *, tracing: str = "") -> ResolvedTarget:
    """The one target `[otel.targets.t]` with `body`, resolved (no OTEL_* variables)."""
    settings = parse(f"{tracing}[otel.targets.t]\n{body}", "t.toml", resolve_secrets=False)
    resolved = resolve_targets(settings, environ or {})
    assert list(resolved) == ["t"]
    return resolved["t"]


def env_target(environ: dict[str, str], config: str = "") -> ResolvedTarget | None:
    return resolve_targets(parse(config, "t.toml"), environ).get("env")


# -- configured targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            ARIZE,
            ResolvedTarget(name="t", kind="arize", protocol="grpc", endpoint="otlp.arize.com:443",
                           insecure=False, headers=ARIZE_HEADERS, project="default",
                           exclude_request_data=False, compression="gzip", timeout=10.0, enabled=True,
                           secrets=(KEY, SPACE)),
            id="arize-grpc-default",
        ),
        pytest.param(
            ARIZE + 'protocol = "http/protobuf"\n',
            ResolvedTarget(name="t", kind="arize", protocol="http/protobuf",
                           endpoint="https://otlp.arize.com/v1/traces", headers=ARIZE_HEADERS,
                           secrets=(KEY, SPACE)),
            id="arize-http",
        ),
        pytest.param(
            ARIZE + 'protocol = "http/protobuf"\nendpoint = "https://otlp.eu-west-1a.arize.com/v1"\n',
            ResolvedTarget(name="t", kind="arize", protocol="http/protobuf",
                           endpoint="https://otlp.eu-west-1a.arize.com/v1/traces", headers=ARIZE_HEADERS,
                           secrets=(KEY, SPACE)),
            id="arize-otel-style-v1-endpoint-gets-traces",
        ),
        pytest.param(
            ARIZE + 'headers = { "X-Team" = "llm", "Arize-Interface" = "custom" }\n',
            ResolvedTarget(name="t", kind="arize", protocol="grpc", endpoint="otlp.arize.com:443",
                           headers={**{k: v for k, v in ARIZE_HEADERS.items() if k != "arize-interface"},
                                    "x-team": "llm", "arize-interface": "custom"},
                           secrets=(KEY, SPACE)),
            id="arize-user-headers-merged-and-lowercased-for-grpc",
        ),
        pytest.param(
            f'kind = "middleware"\nendpoint = "https://uid.middleware.io:443"\napi_key = "{MW_KEY}"\n',
            ResolvedTarget(name="t", kind="middleware", protocol="http/protobuf",
                           endpoint="https://uid.middleware.io:443/v1/traces",
                           headers={"authorization": MW_KEY}, secrets=(MW_KEY,)),
            id="middleware",
        ),
        pytest.param(
            f'kind = "middleware"\nendpoint = "https://uid.middleware.io:443"\napi_key = "{MW_KEY}"\n'
            'protocol = "grpc"\n',
            ResolvedTarget(name="t", kind="middleware", protocol="grpc", endpoint="uid.middleware.io:443",
                           headers={"authorization": MW_KEY}, secrets=(MW_KEY,)),
            id="middleware-grpc",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "http://127.0.0.1:4318"\nprotocol = "http/json"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/json",
                           endpoint="http://127.0.0.1:4318/v1/traces", insecure=True),
            id="otlp-http-json-plaintext",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "http://127.0.0.1:4318/v1/traces"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/protobuf",
                           endpoint="http://127.0.0.1:4318/v1/traces", insecure=True),
            id="otlp-endpoint-with-v1-traces-kept",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "https://collector.example.com/otlp/"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/protobuf",
                           endpoint="https://collector.example.com/otlp/v1/traces"),
            id="otlp-base-path-and-trailing-slash",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "collector:4317"\nprotocol = "grpc"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="grpc", endpoint="collector:4317", insecure=False),
            id="grpc-bare-host-port-is-tls",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "http://collector:4317"\nprotocol = "grpc"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="grpc", endpoint="collector:4317", insecure=True),
            id="grpc-http-is-plaintext",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "https://[::1]:4317/ignored"\nprotocol = "grpc"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="grpc", endpoint="[::1]:4317"),
            id="grpc-ipv6-path-ignored",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "https://collector"\nprotocol = "grpc"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="grpc", endpoint="collector:443"),
            id="grpc-default-port",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "http://c:4318"\nproject = "p"\nexclude_request_data = true\n'
            'compression = "none"\ntimeout = 2.5\nenabled = false\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/protobuf", endpoint="http://c:4318/v1/traces",
                           insecure=True, project="p", exclude_request_data=True, compression=None,
                           timeout=2.5, enabled=False),
            id="every-option",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "http://c:4318"\n'
            'headers = { Authorization = "Bearer tok-123456789", x-team = "llm", x-custom = "env:CUSTOM" }\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/protobuf", endpoint="http://c:4318/v1/traces",
                           insecure=True,
                           headers={"Authorization": "Bearer tok-123456789", "x-team": "llm",
                                    "x-custom": "custom-secret-value"},
                           secrets=("Bearer tok-123456789", "custom-secret-value")),
            id="secret-headers-by-name-and-by-env-reference",
        ),
        pytest.param(
            'kind = "otlp"\nendpoint = "https://user:pa55word-123@c.example.com"\n',
            ResolvedTarget(name="t", kind="otlp", protocol="http/protobuf",
                           endpoint="https://user:pa55word-123@c.example.com/v1/traces",
                           secrets=("pa55word-123",)),
            id="password-in-url-is-a-secret",
        ),
    ],
)  # fmt: skip
def test_configured_target(body: str, expected: ResolvedTarget) -> None:
    assert target(body, {"CUSTOM": "custom-secret-value"}) == expected


def test_project_and_exclusion_come_from_tracing_unless_the_target_says() -> None:
    tracing = '[tracing]\nproject = "gateway"\nexclude_request_data = true\n\n'
    got = target('kind = "otlp"\nendpoint = "http://c:4318"\n', tracing=tracing)
    assert (got.project, got.exclude_request_data) == ("gateway", True)
    got = target('kind = "otlp"\nendpoint = "http://c:4318"\nproject = "own"\n', tracing=tracing)
    assert (got.project, got.exclude_request_data) == ("own", True)


def test_conventions_and_metrics_come_from_the_table() -> None:
    base = 'kind = "otlp"\nendpoint = "http://c:4318"\n'
    got = target(base + 'conventions = ["gen_ai"]\nmetrics = true\n')
    assert (got.conventions, got.metrics) == (("gen_ai",), True)
    got = target(base + 'conventions = ["gen_ai", "openinference"]\n')
    assert (got.conventions, got.metrics) == (("openinference", "gen_ai"), False)
    got = target(base)
    assert (got.conventions, got.metrics) == (("openinference", "gen_ai"), False)


def test_env_references_resolve_from_environ_or_stay_as_written() -> None:
    body = 'kind = "arize"\nspace_id = "env:SPACE"\napi_key = "env:KEY"\n'
    assert target(body, {"SPACE": SPACE, "KEY": KEY}) == target(ARIZE)
    assert target(body, {"SPACE": SPACE}) == ResolvedTarget(
        name="t",
        kind="arize",
        protocol="grpc",
        endpoint="otlp.arize.com:443",
        headers={**ARIZE_HEADERS, "authorization": "env:KEY", "api_key": "env:KEY"},
        secrets=(SPACE,),
        unset_env=("KEY",),
    )


def test_a_disabled_target_needs_no_secret_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFGW_TEST_UNSET_KEY", raising=False)
    source = (
        '[otel.targets.t]\nkind = "middleware"\nendpoint = "https://u.middleware.io"\n'
        'api_key = "env:TFGW_TEST_UNSET_KEY"\nenabled = false\n'
    )
    settings = parse(source, "t.toml")
    assert (settings.otel_targets["t"].api_key, settings.secrets()) == ("env:TFGW_TEST_UNSET_KEY", ())
    assert resolve_targets(settings, {})["t"] == ResolvedTarget(
        name="t",
        kind="middleware",
        protocol="http/protobuf",
        endpoint="https://u.middleware.io/v1/traces",
        headers={"authorization": "env:TFGW_TEST_UNSET_KEY"},
        enabled=False,
        unset_env=("TFGW_TEST_UNSET_KEY",),
    )
    with pytest.raises(ConfigError) as info:
        parse(source.replace("enabled = false", "enabled = true"), "t.toml")
    assert info.value.message == (
        "t.toml:4: otel.targets.t.api_key: environment variable TFGW_TEST_UNSET_KEY is not set"
    )


def test_settings_read_with_secrets_resolved_give_the_same_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFGW_TEST_TOKEN", "token-from-the-environment")
    source = (
        '[otel.targets.t]\nkind = "otlp"\nendpoint = "http://c:4318"\n'
        'headers = { x-a = "env:TFGW_TEST_TOKEN" }\n'
    )
    resolved = resolve_targets(parse(source, "t.toml"), {})["t"]
    unresolved = resolve_targets(
        parse(source, "t.toml", resolve_secrets=False), {"TFGW_TEST_TOKEN": "token-from-the-environment"}
    )["t"]
    assert resolved == unresolved
    assert resolved.secrets == ("token-from-the-environment",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('kind = "otlp"\nendpoint = "collector:4318"\n',
         "t.toml: otel.targets.t.endpoint: must be an http:// or https:// URL for protocol http/protobuf, "
         "got 'collector:4318'"),
        ('kind = "otlp"\nendpoint = "ftp://collector:4318"\nprotocol = "http/json"\n',
         "t.toml: otel.targets.t.endpoint: must be an http:// or https:// URL for protocol http/json, "
         "got 'ftp://collector:4318'"),
        ('kind = "otlp"\nendpoint = "unix:///tmp/otlp.sock"\nprotocol = "grpc"\n',
         "t.toml: otel.targets.t.endpoint: must be https://host:port, http://host:port or host:port for "
         "protocol grpc, got 'unix:///tmp/otlp.sock'"),
        ('kind = "otlp"\nendpoint = "http://collector:port"\n',
         "t.toml: otel.targets.t.endpoint: invalid port in 'http://collector:port'"),
    ],
)  # fmt: skip
def test_unusable_endpoint_is_a_config_error_naming_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        target(body)
    assert (info.value.message, info.value.exit_code) == (message, 2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('kind = "arize"\napi_key = "k"\n',
         "t.toml:1: otel.targets.t.space_id: is required for kind 'arize'"),
        ('kind = "arize"\nspace_id = "s"\n',
         "t.toml:1: otel.targets.t.api_key: is required for kind 'arize'"),
        ('kind = "arize"\nspace_id = ""\napi_key = "k"\n',
         "t.toml:3: otel.targets.t.space_id: is required for kind 'arize'"),
        ('kind = "middleware"\napi_key = "k"\n',
         "t.toml:1: otel.targets.t.endpoint: is required for kind 'middleware'"),
        ('kind = "middleware"\nendpoint = "https://x.middleware.io"\n',
         "t.toml:1: otel.targets.t.api_key: is required for kind 'middleware'"),
        ('kind = "otlp"\n', "t.toml:1: otel.targets.t.endpoint: is required for kind 'otlp'"),
        ('kind = "otlp"\nendpoint = "http://c"\napi_key = "k"\n',
         "t.toml:4: otel.targets.t.api_key: is not used by kind 'otlp': send credentials as headers, "
         'e.g. headers = { authorization = "env:VAR" }'),
        ('kind = "otlp"\nendpoint = "http://c"\nspace_id = "s"\n',
         "t.toml:4: otel.targets.t.space_id: is only used by kind 'arize', not 'otlp'"),
        ('kind = "otlp"\nendpoint = "http://c"\ncompression = "br"\n',
         "t.toml:4: otel.targets.t.compression: must be one of gzip, none, got 'br'"),
        ('kind = "otlp"\nendpoint = "http://c"\ntimeout = 0\n',
         "t.toml:4: otel.targets.t.timeout: must be > 0, got 0.0"),
        ('kind = "otlp"\nendpoint = "http://c"\nprotocol = "thrift"\n',
         "t.toml:4: otel.targets.t.protocol: must be one of grpc, http/protobuf, http/json, got 'thrift'"),
    ],
)  # fmt: skip
def test_config_rules_of_targets(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"[otel.targets.t]\n{body}", "t.toml", resolve_secrets=False)
    assert info.value.message == message


def test_target_names_are_kept_plain_for_file_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse('[otel.targets."../x"]\nkind = "otlp"\nendpoint = "http://c"\n', "t.toml")
    assert info.value.message == (
        "t.toml:1: otel.targets.../x: a target name may only use letters, digits, '-' and '_' (64 at most)"
    )


def test_settings_made_in_code_are_checked_too() -> None:
    settings = Settings(otel_targets=MappingProxyType({"a": OtelTargetSettings(name="a", kind="arize")}))
    with pytest.raises(ConfigError) as info:
        resolve_targets(settings, {})
    assert info.value.message == "<config>: otel.targets.a.space_id: is required for kind 'arize'"


# -- the implicit env target -----------------------------------------------------------------------

V = "OTEL_EXPORTER_OTLP_"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {f"{V}ENDPOINT": "http://collector:4318"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="http://collector:4318/v1/traces", insecure=True),
            id="generic-endpoint-gets-v1-traces",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "https://collector:4318/mycollector/"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="https://collector:4318/mycollector/v1/traces"),
            id="generic-endpoint-base-path",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "https://collector:4318/mycollector"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="https://collector:4318/mycollector/v1/traces"),
            id="generic-endpoint-base-path-without-slash",
        ),
        pytest.param(
            {f"{V}TRACES_ENDPOINT": "http://collector:4318"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="http://collector:4318/", insecure=True),
            id="traces-endpoint-as-is-root-path",
        ),
        pytest.param(
            {f"{V}TRACES_ENDPOINT": "https://c.example.com/otlp/v1/spans", f"{V}ENDPOINT": "http://other:4318"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="https://c.example.com/otlp/v1/spans"),
            id="traces-endpoint-wins",
        ),
        pytest.param(
            {f"{V}TRACES_ENDPOINT": "", f"{V}ENDPOINT": "http://other:4318"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf",
                           endpoint="http://other:4318/v1/traces", insecure=True),
            id="empty-means-unset",
        ),
        pytest.param(
            {f"{V}TRACES_ENDPOINT": "https://c.example.com/v1/traces",
             f"{V}TRACES_HEADERS": "Authorization=Bearer%20abc123def456,x-scope-id=a%2Cb, ,k=v=w",
             f"{V}TRACES_PROTOCOL": "HTTP/JSON", f"{V}TRACES_TIMEOUT": "2500",
             f"{V}TRACES_COMPRESSION": "none", f"{V}TRACES_INSECURE": "true"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/json",
                           endpoint="https://c.example.com/v1/traces",
                           headers={"authorization": "Bearer abc123def456", "x-scope-id": "a,b", "k": "v=w"},
                           compression=None, timeout=2.5,
                           secrets=("Bearer abc123def456", "a,b", "v=w")),
            id="every-traces-variable",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "http://c:4318", f"{V}HEADERS": "a=1,b=2", f"{V}TRACES_HEADERS": "c=3",
             f"{V}PROTOCOL": "grpc", f"{V}TRACES_PROTOCOL": "http/protobuf", f"{V}TIMEOUT": "1000",
             f"{V}TRACES_TIMEOUT": "3000", f"{V}COMPRESSION": "none", f"{V}TRACES_COMPRESSION": "gzip"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf", endpoint="http://c:4318/v1/traces",
                           insecure=True, headers={"c": "3"}, timeout=3.0, secrets=("3",)),
            id="traces-variables-win-over-generic-ones",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "http://c:4318", f"{V}HEADERS": "a=1,b=2", f"{V}PROTOCOL": "grpc",
             f"{V}TIMEOUT": "0", f"{V}COMPRESSION": "NONE"},
            ResolvedTarget(name="env", kind="otlp", protocol="grpc", endpoint="c:4318", insecure=True,
                           headers={"a": "1", "b": "2"}, compression=None, timeout=INDEFINITE_TIMEOUT_S,
                           secrets=("1", "2")),
            id="generic-variables-and-timeout-0-is-no-limit",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "collector:4317", f"{V}PROTOCOL": "grpc"},
            ResolvedTarget(name="env", kind="otlp", protocol="grpc", endpoint="collector:4317",
                           insecure=False),
            id="grpc-bare-is-tls",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "collector:4317", f"{V}PROTOCOL": "grpc", f"{V}INSECURE": "True"},
            ResolvedTarget(name="env", kind="otlp", protocol="grpc", endpoint="collector:4317",
                           insecure=True),
            id="grpc-bare-insecure",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "https://collector:4317", f"{V}PROTOCOL": "grpc", f"{V}INSECURE": "true"},
            ResolvedTarget(name="env", kind="otlp", protocol="grpc", endpoint="collector:4317",
                           insecure=False),
            id="grpc-https-wins-over-insecure",
        ),
        pytest.param(
            {f"{V}ENDPOINT": "http://collector:4317", f"{V}PROTOCOL": "grpc", f"{V}INSECURE": "false"},
            ResolvedTarget(name="env", kind="otlp", protocol="grpc", endpoint="collector:4317",
                           insecure=True),
            id="grpc-http-wins-over-insecure",
        ),
        pytest.param({f"{V}HEADERS": "a=b"}, None, id="no-endpoint-no-target"),
        pytest.param({f"{V}ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None, id="sdk-disabled"),
        pytest.param({f"{V}ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None,
                     id="traces-exporter-none"),
        pytest.param(
            {f"{V}ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console, otlp"},
            ResolvedTarget(name="env", kind="otlp", protocol="http/protobuf", endpoint="http://c:4318/v1/traces",
                           insecure=True),
            id="traces-exporter-includes-otlp",
        ),
    ],
)  # fmt: skip
def test_env_target(environ: dict[str, str], expected: ResolvedTarget | None) -> None:
    assert env_target(environ) == expected


def test_env_target_takes_project_and_exclusion_from_tracing() -> None:
    got = env_target(
        {f"{V}ENDPOINT": "http://c:4318"}, '[tracing]\nproject = "gw"\nexclude_request_data = true\n'
    )
    assert got is not None
    assert (got.project, got.exclude_request_data) == ("gw", True)
    assert (got.conventions, got.metrics) == (("openinference", "gen_ai"), False)


def test_a_config_target_named_env_wins_over_the_variables() -> None:
    config = '[otel.targets.env]\nkind = "otlp"\nendpoint = "http://mine:4318"\n'
    resolved = resolve_targets(parse(config, "t.toml"), {f"{V}ENDPOINT": "http://theirs:4318"})
    assert list(resolved) == ["env"]
    assert resolved["env"].endpoint == "http://mine:4318/v1/traces"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({f"{V}PROTOCOL": "thrift"},
         "environment: OTEL_EXPORTER_OTLP_PROTOCOL: must be one of grpc, http/protobuf, http/json, "
         "got 'thrift'"),
        ({f"{V}TRACES_PROTOCOL": "http"},
         "environment: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: must be one of grpc, http/protobuf, http/json, "
         "got 'http'"),
        ({f"{V}INSECURE": "yes"},
         "environment: OTEL_EXPORTER_OTLP_INSECURE: must be true or false, got 'yes'"),
        ({f"{V}TIMEOUT": "-1"},
         "environment: OTEL_EXPORTER_OTLP_TIMEOUT: must be a whole number of milliseconds (>= 0), got '-1'"),
        ({f"{V}TRACES_TIMEOUT": "1.5s"},
         "environment: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: must be a whole number of milliseconds (>= 0), "
         "got '1.5s'"),
        ({f"{V}COMPRESSION": "br"},
         "environment: OTEL_EXPORTER_OTLP_COMPRESSION: must be gzip or none, got 'br'"),
        ({f"{V}HEADERS": "a=1,Bearer sk-secret-0123456789"},
         "environment: OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value (expected k1=v1,k2=v2)"),
        ({f"{V}TRACES_HEADERS": "=value"},
         "environment: OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 1 is not key=value (expected k1=v1,k2=v2)"),
        ({f"{V}ENDPOINT": "collector:4318"},
         "environment: OTEL_EXPORTER_OTLP_ENDPOINT: must be an http:// or https:// URL for protocol "
         "http/protobuf, got 'collector:4318'"),
        ({f"{V}TRACES_ENDPOINT": "grpc://collector:4317", f"{V}PROTOCOL": "grpc"},
         "environment: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: must be https://host:port, http://host:port or "
         "host:port for protocol grpc, got 'grpc://collector:4317'"),
    ],
)  # fmt: skip
def test_bad_variable_is_a_config_error_naming_it(environ: dict[str, str], message: str) -> None:
    environ = {f"{V}ENDPOINT": "http://c:4318", **environ}
    with pytest.raises(ConfigError) as info:
        env_target(environ)
    assert (info.value.message, info.value.key, info.value.exit_code) == (message, message.split(": ")[1], 2)
    assert "secret" not in info.value.message


# -- one target, names, describe -------------------------------------------------------------------


def test_resolve_target_reads_only_the_one_asked_for() -> None:
    settings = parse('[otel.targets.a]\nkind = "otlp"\nendpoint = "http://c:4318"\n', "t.toml")
    broken = {f"{V}ENDPOINT": "http://c:4318", f"{V}PROTOCOL": "thrift"}
    assert resolve_target(settings, "a", broken).endpoint == "http://c:4318/v1/traces"
    assert target_names(settings, broken) == ["a", "env"]
    assert target_names(settings, {}) == ["a"]
    with pytest.raises(NotFoundError) as info:
        resolve_target(settings, "b", {f"{V}ENDPOINT": "http://c:4318"})
    assert (info.value.message, info.value.exit_code) == ("no export target b (have: a, env)", 1)
    with pytest.raises(NotFoundError) as info:
        resolve_target(Settings(), "env", {})
    assert info.value.message == "no export target env (have: none)"


def test_describe_masks_every_secret() -> None:
    assert describe(target(ARIZE)) == {
        "name": "t",
        "kind": "arize",
        "protocol": "grpc",
        "endpoint": "otlp.arize.com:443",
        "insecure": False,
        "headers": {
            "authorization": "ak-…cdef",
            "api_key": "ak-…cdef",
            "arize-space-id": "…Nzg=",
            "space_id": "…Nzg=",
            "arize-interface": "otel",
        },
        "project": "default",
        "exclude_request_data": False,
        "conventions": ["openinference", "gen_ai"],
        "left_out": [],
        "metrics": False,
        "compression": "gzip",
        "timeout": 10.0,
        "enabled": True,
        "unset_env": [],
    }
    body = (
        'kind = "otlp"\nendpoint = "https://user:pa55word-123@c.example.com/"\n'
        'headers = { authorization = "Bearer tk-0123456789abcdef", x-team = "llm" }\n'
    )
    view = describe(target(body))
    assert (view["endpoint"], view["headers"]) == (
        "https://user:…-123@c.example.com/v1/traces",
        {"authorization": "…cdef", "x-team": "llm"},
    )


def test_describe_names_what_a_target_of_one_convention_goes_without() -> None:
    arize = describe(target(ARIZE + 'conventions = ["gen_ai"]\n'))
    collector = describe(target('kind = "otlp"\nendpoint = "http://c"\nconventions = ["openinference"]\n'))
    assert (arize["conventions"], arize["left_out"][:3]) == (
        ["gen_ai"],
        ["llm.model_name", "llm.request.model_name", "llm.response.model_name"],  # arize keeps the span kind
    )
    assert (collector["conventions"], collector["left_out"][:3]) == (
        ["openinference"],
        ["gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model"],
    )
