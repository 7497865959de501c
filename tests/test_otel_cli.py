"""`tfgw otel set | list | show | remove` as a user runs them: whole files, whole outputs, and no
secret ever printed in clear."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tfgw.cli import main
from tfgw.config import load

KEY = "ak-0123456789abcdef"
SPACE = "U3BhY2U6MTIzNDU2Nzg="
MW_KEY = "mw-secret-0123456789"

ORIGINAL = """\
# my gateway
[server]
port = 9000  # not the default

# where traces go
[otel.targets.arize]
kind = "arize"   # Arize AX
space_id = "env:ARIZE_SPACE_ID"
api_key = "env:ARIZE_API_KEY"
project = "my-app"          # shown in Arize

# the rest
[tracing]
project = "gw"
"""


@pytest.fixture(autouse=True)
def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variable of the caller's shell, no terminal overrides; secrets unset."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
            monkeypatch.delenv(name)
    for name in ("ARIZE_API_KEY", "ARIZE_SPACE_ID", "MW_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config() -> Path:
    path = Path("tfgw.toml")
    path.write_text(ORIGINAL)
    return path


def tfgw(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process, through `main()` and its error handler."""
    saved = sys.argv
    sys.argv = ["tfgw", *args]
    try:
        with pytest.raises(SystemExit) as done:
            main()
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    for secret in (KEY, SPACE, MW_KEY):
        assert secret not in out + err
    return int(done.value.code or 0), out, err


# -- set -------------------------------------------------------------------------------------------


def test_set_adds_a_target_keeping_the_rest_of_the_file(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    done = tfgw(capsys, "otel", "set", "middleware", "--endpoint", "https://uid.middleware.io:443",
                "--api-key", MW_KEY)  # fmt: skip
    assert done == (
        0,
        "target middleware (middleware, http/protobuf https://uid.middleware.io:443/v1/traces) "
        "written to tfgw.toml\n",
        "tfgw: warning: the API key is stored in clear in tfgw.toml; prefer --api-key env:VAR, "
        "which reads it from $VAR when tfgw starts\n",
    )
    assert config.read_text() == ORIGINAL + (
        "\n"
        "[otel.targets.middleware]\n"
        'kind = "middleware"\n'
        'endpoint = "https://uid.middleware.io:443"\n'
        f'api_key = "{MW_KEY}"\n'
    )


def test_set_warns_about_a_credential_header_in_clear(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    done = tfgw(capsys, "otel", "set", "otlp", "--name", "c", "--endpoint", "http://c:4318",
                "--header", f"Authorization=Bearer {MW_KEY}", "--header", "x-team=llm")  # fmt: skip
    assert done == (
        0,
        "target c (otlp, http/protobuf http://c:4318/v1/traces) written to tfgw.toml\n",
        "tfgw: warning: header Authorization is stored in clear in tfgw.toml; prefer "
        "--header Authorization=env:VAR, which reads it from $VAR when tfgw starts\n",
    )


def test_set_with_every_option(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    done = tfgw(capsys, "otel", "set", "otlp", "--name", "phoenix", "--endpoint", "http://127.0.0.1:6006",
                "--protocol", "http/json", "--header", "x-team=llm", "--header", "authorization=env:PHX",
                "--project", "p", "--exclude-request-data", "--disable")  # fmt: skip
    assert done == (
        0,
        "target phoenix (otlp, http/json http://127.0.0.1:6006/v1/traces) written to tfgw.toml\n",
        "",
    )
    assert config.read_text() == ORIGINAL + (
        "\n"
        "[otel.targets.phoenix]\n"
        'kind = "otlp"\n'
        'endpoint = "http://127.0.0.1:6006"\n'
        'protocol = "http/json"\n'
        'project = "p"\n'
        "exclude_request_data = true\n"
        "enabled = false\n"
        'headers = { x-team = "llm", authorization = "env:PHX" }\n'
    )


def test_set_conventions_and_metrics(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    done = tfgw(capsys, "otel", "set", "otlp", "--name", "c", "--endpoint", "http://c:4318",
                "--conventions", " gen_ai ,openinference,gen_ai", "--metrics")  # fmt: skip
    assert done == (0, "target c (otlp, http/protobuf http://c:4318/v1/traces) written to tfgw.toml\n", "")
    table = (
        "\n"
        "[otel.targets.c]\n"
        'kind = "otlp"\n'
        'endpoint = "http://c:4318"\n'
        'conventions = [\n    "openinference",\n    "gen_ai",\n]\n'
    )
    assert config.read_text() == ORIGINAL + table + "metrics = true\n"
    assert (
        tfgw(capsys, "otel", "set", "otlp", "--name", "c", "--conventions", "gen_ai", "--no-metrics")[0] == 0
    )
    assert config.read_text() == ORIGINAL + table.replace('    "openinference",\n', "") + "metrics = false\n"
    target = load(config, resolve_secrets=False).otel_targets["c"]
    assert (target.conventions, target.metrics) == (("gen_ai",), False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gen_ai,otel", "tfgw: --conventions: must be a comma list of openinference, gen_ai, got 'otel'\n"),
        (
            "OpenInference",
            "tfgw: --conventions: must be a comma list of openinference, gen_ai, got 'OpenInference'\n",
        ),
        (" , ", "tfgw: --conventions: needs at least one of openinference, gen_ai\n"),
    ],
)
def test_set_bad_conventions_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], config: Path, value: str, message: str
) -> None:
    assert tfgw(capsys, "otel", "set", "arize", "--conventions", value) == (2, "", message)
    assert config.read_text() == ORIGINAL


def test_set_updates_only_the_given_keys_and_keeps_comments(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    done = tfgw(capsys, "otel", "set", "arize", "--protocol", "http/protobuf", "--project", "other-app",
                "--header", "x-team=llm", "--include-request-data", "--enable")  # fmt: skip
    assert done == (
        0,
        "target arize (arize, http/protobuf https://otlp.arize.com/v1/traces) written to tfgw.toml\n",
        "",
    )
    assert config.read_text() == ORIGINAL.replace(
        'project = "my-app"          # shown in Arize\n',
        'project = "other-app"       # shown in Arize\n'
        'protocol = "http/protobuf"\n'
        "exclude_request_data = false\n"
        "enabled = true\n"
        'headers = { x-team = "llm" }\n',
    )
    # headers merge by name (any case); K= removes K; a table left empty is removed
    assert tfgw(capsys, "otel", "set", "arize", "--header", "X-Team=ml", "--header", "x-b=1")[0] == 0
    assert 'headers = { X-Team = "ml", x-b = "1" }\n' in config.read_text()
    assert tfgw(capsys, "otel", "set", "arize", "--header", "x-team=", "--header", "x-b=")[0] == 0
    assert "headers" not in config.read_text()
    # a reference stays a reference: nothing is resolved into the file
    assert tfgw(capsys, "otel", "set", "arize", "--api-key", "env:OTHER_KEY") == (
        0,
        "target arize (arize, http/protobuf https://otlp.arize.com/v1/traces) written to tfgw.toml\n",
        "",
    )
    assert 'api_key = "env:OTHER_KEY"\n' in config.read_text()


def test_set_into_a_new_file_named_by_config(capsys: pytest.CaptureFixture[str]) -> None:
    done = tfgw(capsys, "otel", "set", "arize", "--space-id", "env:ARIZE_SPACE_ID", "--api-key",
                "env:ARIZE_API_KEY", "--config", "new/tfgw.toml")  # fmt: skip
    assert done == (0, "target arize (arize, grpc otlp.arize.com:443) written to new/tfgw.toml\n", "")
    path = Path("new/tfgw.toml")
    assert path.read_text() == (
        '[otel.targets.arize]\nkind = "arize"\n'
        'space_id = "env:ARIZE_SPACE_ID"\napi_key = "env:ARIZE_API_KEY"\n'
    )
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["otlp", "--name", "c", "--endpoint", "http://c:4318", "--header", "x-team"],
         "tfgw: --header: expected K=V, got 'x-team'\n"),
        (["otlp", "--name", "c", "--endpoint", "http://c:4318", "--header", "=v"],
         "tfgw: --header: expected K=V, got '=v'\n"),
        (["otlp", "--name", "a/b", "--endpoint", "http://c:4318"],
         "tfgw: --name: only letters, digits, '-' and '_' (64 at most), got 'a/b'\n"),
        (["otlp", "--name", "c"], "tfgw: tfgw.toml: otel.targets.c: missing --endpoint (endpoint)\n"),
        (["otlp", "--name", "c", "--endpoint", ""],
         "tfgw: tfgw.toml: otel.targets.c: missing --endpoint (endpoint)\n"),
        (["otlp", "--name", "c", "--endpoint", "c:4318"],
         "tfgw: tfgw.toml: otel.targets.c.endpoint: must be an http:// or https:// URL for protocol "
         "http/protobuf, got 'c:4318'\n"),
        (["arize", "--name", "a2", "--api-key", KEY],
         "tfgw: tfgw.toml: otel.targets.a2: missing --space-id (space_id)\n"),
        (["middleware", "--name", "m2"],
         "tfgw: tfgw.toml: otel.targets.m2: missing --endpoint (endpoint), --api-key (api_key)\n"),
        (["middleware", "--name", "arize", "--endpoint", "https://x.middleware.io"],
         "tfgw: tfgw.toml: otel.targets.arize.space_id: is only used by kind 'arize', not 'middleware'\n"),
    ],
)  # fmt: skip
def test_set_refuses_bad_input_and_leaves_the_file_untouched(
    capsys: pytest.CaptureFixture[str], config: Path, args: list[str], message: str
) -> None:
    assert tfgw(capsys, "otel", "set", *args) == (2, "", message)
    assert config.read_text() == ORIGINAL


def test_set_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = tfgw(capsys, "otel", "set", "jaeger")
    assert (code, out) == (2, "")
    assert "'jaeger' is not one of 'arize', 'middleware', 'otlp'" in err
    assert config.read_text() == ORIGINAL


def test_set_names_every_missing_flag_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    Path("tfgw.toml").write_text("[server]\nport = 9000\n")
    assert tfgw(capsys, "otel", "set", "arize") == (
        2,
        "",
        "tfgw: tfgw.toml: otel.targets.arize: missing --space-id (space_id), --api-key (api_key)\n",
    )
    assert Path("tfgw.toml").read_text() == "[server]\nport = 9000\n"


def test_set_counts_what_the_file_already_has(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    """ORIGINAL's arize target has both secrets: updating it needs neither flag again."""
    assert tfgw(capsys, "otel", "set", "arize", "--project", "p2") == (
        0,
        "target arize (arize, grpc otlp.arize.com:443) written to tfgw.toml\n",
        "",
    )


NO_CONFIG = (
    "tfgw: tfgw.toml: no config file found (looked at --config, $TFGW_CONFIG, ./tfgw.toml, "
    "~/.config/tfgw/config.toml); run `tfgw init --demo` to start one, or give --config F to write "
    "the target to F\n"
)


def test_set_without_any_config_off_a_terminal_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    """stdin is not a terminal here (pytest's): nothing is asked, nothing is written."""
    assert tfgw(capsys, "otel", "set", "otlp", "--endpoint", "http://c:4318") == (2, "", NO_CONFIG)
    assert list(Path().iterdir()) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer", ["y", "n", ""])
def test_set_without_any_config_on_a_terminal_asks_to_create_the_demo_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(answer + "\n"))
    done = tfgw(capsys, "otel", "set", "otlp", "--name", "phoenix", "--endpoint", "http://127.0.0.1:6006")
    prompt = "create ./tfgw.toml with the demo provider? [y/N] "
    if answer != "y":
        assert done == (2, "", prompt + NO_CONFIG)
        assert not Path("tfgw.toml").exists()
        return
    assert done == (
        0,
        "target phoenix (otlp, http/protobuf http://127.0.0.1:6006/v1/traces) written to tfgw.toml\n",
        prompt + "wrote tfgw.toml\n",
    )
    settings = load("tfgw.toml")
    assert (list(settings.models), list(settings.otel_targets)) == (["demo", "demo-embed"], ["phoenix"])


# -- list and show ---------------------------------------------------------------------------------


@pytest.fixture
def targets(capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """arize (secrets from the environment), middleware (a key in clear), and the env target."""
    tfgw(capsys, "otel", "set", "middleware", "--name", "mw", "--endpoint", "https://uid.middleware.io",
         "--api-key", MW_KEY, "--disable", "--conventions", "gen_ai", "--metrics")  # fmt: skip
    monkeypatch.setenv("ARIZE_API_KEY", KEY)
    monkeypatch.setenv("ARIZE_SPACE_ID", SPACE)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20col-token-123456")
    return config


def test_list(capsys: pytest.CaptureFixture[str], targets: Path) -> None:
    assert tfgw(capsys, "otel", "list") == (0, """\
name   kind        protocol       endpoint                             project  exclude_request_data  enabled
arize  arize       grpc           otlp.arize.com:443                   my-app   no                    yes
mw     middleware  http/protobuf  https://uid.middleware.io/v1/traces  gw       no                    no
env    otlp        grpc           collector:4317                       gw       no                    yes
""", "")  # fmt: skip
    assert tfgw(capsys, "otel", "list", "--json") == (
        0,
        '[{"name":"arize","kind":"arize","protocol":"grpc","endpoint":"otlp.arize.com:443",'
        '"project":"my-app","exclude_request_data":false,"enabled":true},'
        '{"name":"mw","kind":"middleware","protocol":"http/protobuf",'
        '"endpoint":"https://uid.middleware.io/v1/traces","project":"gw","exclude_request_data":false,'
        '"enabled":false},'
        '{"name":"env","kind":"otlp","protocol":"grpc","endpoint":"collector:4317","project":"gw",'
        '"exclude_request_data":false,"enabled":true}]\n',
        "",
    )


def test_list_without_targets_or_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert tfgw(capsys, "otel", "list") == (
        0,
        "no export targets: add one with `tfgw otel set KIND`, or set OTEL_EXPORTER_OTLP_ENDPOINT\n",
        "",
    )
    assert tfgw(capsys, "otel", "list", "--json") == (0, "[]\n", "")


def test_show_masks_every_secret(capsys: pytest.CaptureFixture[str], targets: Path) -> None:
    assert tfgw(capsys, "otel", "show", "arize") == (0, """\
name                    arize
kind                    arize
protocol                grpc
endpoint                otlp.arize.com:443
insecure                no
header authorization    ak-…cdef
header api_key          ak-…cdef
header arize-space-id   …Nzg=
header space_id         …Nzg=
header arize-interface  otel
project                 my-app
exclude_request_data    no
conventions             openinference, gen_ai
metrics                 off
compression             gzip
timeout                 10 s
enabled                 yes
""", "")  # fmt: skip
    assert tfgw(capsys, "otel", "show", "mw", "--json") == (
        0,
        '{"name":"mw","kind":"middleware","protocol":"http/protobuf",'
        '"endpoint":"https://uid.middleware.io/v1/traces","insecure":false,'
        f'"headers":{{"authorization":"mw-…6789"}},"project":"gw","exclude_request_data":false,'
        f'"conventions":["gen_ai"],"left_out":{orjson.dumps(GEN_AI_LEFT_OUT).decode()},"metrics":true,'
        '"compression":"gzip","timeout":10.0,"enabled":false,"unset_env":[]}\n',
        "",
    )
    code, out, err = tfgw(capsys, "otel", "show", "env")
    assert (code, err) == (0, "")
    assert out.splitlines()[:6] == [
        "name                  env",
        "kind                  otlp",
        "protocol              grpc",
        "endpoint              collector:4317",
        "insecure              yes",
        "header authorization  …3456",
    ]
    assert "col-token-123456" not in out


GEN_AI_LEFT_OUT = [
    "openinference.span.kind",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model_name",
    "embedding.model_name",
    "llm.provider",
    "llm.system",
    "llm.invocation_parameters",
    "embedding.invocation_parameters",
    "llm.finish_reason",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.cache_write",
    "llm.token_count.completion_details.reasoning",
    "session.id",
    "First Token Stream Event",
]


def test_show_what_a_target_of_one_convention_goes_without(
    capsys: pytest.CaptureFixture[str], targets: Path
) -> None:
    assert tfgw(capsys, "otel", "show", "mw") == (0, """\
name                  mw
kind                  middleware
protocol              http/protobuf
endpoint              https://uid.middleware.io/v1/traces
insecure              no
header authorization  mw-…6789
project               gw
exclude_request_data  no
conventions           gen_ai
left out              where gen_ai carries the same value:
                      openinference.span.kind
                      llm.model_name
                      llm.request.model_name
                      llm.response.model_name
                      embedding.model_name
                      llm.provider
                      llm.system
                      llm.invocation_parameters
                      embedding.invocation_parameters
                      llm.finish_reason
                      llm.token_count.prompt
                      llm.token_count.completion
                      llm.token_count.prompt_details.cache_read
                      llm.token_count.prompt_details.cache_write
                      llm.token_count.completion_details.reasoning
                      session.id
                      First Token Stream Event
metrics               on
compression           gzip
timeout               10 s
enabled               no
""", "")  # fmt: skip


def test_show_an_unset_reference_as_written_with_a_warning(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = tfgw(capsys, "otel", "show", "arize", "--json")
    assert (code, err) == (
        0,
        "tfgw: warning: ARIZE_API_KEY is not set: target arize cannot send until it is\n"
        "tfgw: warning: ARIZE_SPACE_ID is not set: target arize cannot send until it is\n",
    )
    assert out == (
        '{"name":"arize","kind":"arize","protocol":"grpc","endpoint":"otlp.arize.com:443","insecure":false,'
        '"headers":{"authorization":"env:ARIZE_API_KEY","api_key":"env:ARIZE_API_KEY",'
        '"arize-space-id":"env:ARIZE_SPACE_ID","space_id":"env:ARIZE_SPACE_ID","arize-interface":"otel"},'
        '"project":"my-app","exclude_request_data":false,"conventions":["openinference","gen_ai"],'
        '"left_out":[],"metrics":false,"compression":"gzip","timeout":10.0,"enabled":true,'
        '"unset_env":["ARIZE_API_KEY","ARIZE_SPACE_ID"]}\n'
    )


def test_show_unknown_target_exits_1(capsys: pytest.CaptureFixture[str], targets: Path) -> None:
    assert tfgw(capsys, "otel", "show", "nope") == (
        1,
        "",
        "tfgw: no export target nope (have: arize, mw, env)\n",
    )


def test_bad_otel_variable_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")
    assert tfgw(capsys, "otel", "list") == (
        2,
        "",
        "tfgw: environment: OTEL_EXPORTER_OTLP_TIMEOUT: must be a whole number of milliseconds (>= 0), "
        "got '10s'\n",
    )


# -- remove ----------------------------------------------------------------------------------------


def test_remove_takes_out_the_table_alone(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert tfgw(capsys, "otel", "set", "otlp", "--name", "c", "--endpoint", "http://c:4318")[0] == 0
    assert tfgw(capsys, "otel", "remove", "c") == (0, "target c removed from tfgw.toml\n", "")
    assert config.read_text() == ORIGINAL
    assert tfgw(capsys, "otel", "remove", "arize") == (0, "target arize removed from tfgw.toml\n", "")
    assert config.read_text() == (
        "# my gateway\n[server]\nport = 9000  # not the default\n\n# where traces go\n\n"
        '# the rest\n[tracing]\nproject = "gw"\n'
    )
    assert tfgw(capsys, "otel", "remove", "arize") == (
        1,
        "",
        "tfgw: no export target arize in tfgw.toml (have: none)\n",
    )


def test_remove_cannot_remove_the_env_target(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tfgw(capsys, "otel", "remove", "env") == (
        1,
        "",
        "tfgw: no export target env in tfgw.toml (have: arize; the env target comes from "
        "OTEL_EXPORTER_OTLP_* variables)\n",
    )
    assert config.read_text() == ORIGINAL


# -- as a real process -----------------------------------------------------------------------------


def test_the_installed_command_never_prints_a_key(config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tfgw", "otel", *args], capture_output=True, text=True, timeout=30, env=env
        )

    added = run("set", "middleware", "--endpoint", "https://uid.middleware.io", "--api-key", MW_KEY)
    shown = run("show", "middleware")
    for done in (added, shown, run("list"), run("list", "--json"), run("show", "middleware", "--json")):
        assert done.returncode == 0, done.stderr
        assert MW_KEY not in done.stdout + done.stderr
    assert "header authorization  mw-…6789\n" in shown.stdout
    assert MW_KEY in config.read_text()


def test_status_without_an_exporter_running(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert (
        tfgw(capsys, "otel", "set", "otlp", "--name", "collector", "--endpoint", "http://127.0.0.1:4318")[0]
        == 0
    )
    code, out, err = tfgw(capsys, "otel", "status")
    assert (code, err) == (0, "")
    assert out == (
        "target     state        delivered  attempts  retries  pending  rejected  dropped  lag  last error  "
        "warning  reason\n"
        "arize      not running  0          0         0        -        0         0        -"
        f"{' ' * 25}its secrets env:ARIZE_API_KEY, env:ARIZE_SPACE_ID are not set\n"
        "collector  not running  0          0         0        -        0         0        -"
        f"{' ' * 25}{NEVER}\n"
    )
    code, out, err = tfgw(capsys, "otel", "status", "--json")
    assert (code, err) == (0, "")
    assert orjson.loads(out)["collector"] == {
        "state": "not running", "reason": NEVER, "delivered": None, "attempts": None, "retries": None,
        "pending_bytes": None, "retrying": None, "rejected": None, "partial_rejected": None,
        "unsendable": None, "unreadable": None, "last_error": None, "warning": None, "lag_s": None,
        "dropped": 0, "last_success": None, "updated": None,
    }  # fmt: skip


NOW = 1_795_432_000.0
NEVER = "never started: no exporter has run with this target since it was added; restart `tfgw serve`"


def status_config(tracing: str = "", target: str = "") -> None:
    Path("tfgw.toml").write_text(
        f'[tracing]\ndir = "traces"\n{tracing}\n'
        f'[otel.targets.t]\nkind = "otlp"\nendpoint = "http://127.0.0.1:4318"\n{target}'
    )


def write_cursor(stats: dict[str, object] | None, written: float = NOW) -> None:
    """`t`'s cursor file as its exporter leaves it (None: no file), last written at `written`."""
    if stats is None:
        return
    path = Path("traces/.cursors/t.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"offsets": {}, **stats}))
    os.utime(path, (written, written))


@pytest.mark.parametrize(
    ("tracing", "target", "cursor", "written", "reason"),
    [
        ("", "", None, NOW, NEVER),
        ("", "", {}, NOW - 1, "starting: no heartbeat from its exporter yet"),
        ("", "", {}, NOW - 60, NEVER),
        ("", "", {"updated": NOW - 42}, NOW - 42, "stopped: last heartbeat 42 s ago"),
        ("", "", {"updated": NOW - 600}, NOW - 600, "stopped: last heartbeat 10 min ago"),
        ("", "", {"updated": NOW - 5 * 3600}, NOW, "stopped: last heartbeat 5 h ago"),
        ("", "enabled = false\n", {"updated": NOW - 600}, NOW,
         "disabled in the config (otel.targets.t.enabled = false)"),
        ("", 'headers = { authorization = "env:T_TOKEN" }\n', None, NOW, "its secret env:T_TOKEN is not set"),
        ("enabled = false\n", "", {"updated": NOW - 600}, NOW,
         "tracing disabled ([tracing] enabled = false): nothing is written to export"),
    ],
)  # fmt: skip
def test_status_says_why_a_target_is_not_running(
    tracing: str, target: str, cursor: dict[str, object] | None, written: float, reason: str
) -> None:
    from tfgw.export.status import target_status

    status_config(tracing, target)
    write_cursor(cursor, written)
    report = target_status(load("tfgw.toml", resolve_secrets=False), now=NOW, environ={})
    assert (report["t"]["state"], report["t"]["reason"]) == ("not running", reason)


def test_status_of_a_running_target_is_its_whole_cursor_and_no_reason() -> None:
    from tfgw.export.status import target_status

    status_config()
    stats = {"delivered": 9, "attempts": 4, "retries": 2, "rejected": 1, "partial_rejected": 0,
             "unsendable": 0, "unreadable": 1, "retrying": False, "last_error": "HTTP 400",
             "warning": "200 with a body that is not …", "last_success": NOW - 3, "lag_s": 0.5,
             "pending_bytes": 0, "updated": NOW - 1}  # fmt: skip
    write_cursor(stats)
    assert target_status(load("tfgw.toml"), now=NOW) == {
        "t": {"state": "running", "reason": None, "delivered": 9, "attempts": 4, "retries": 2,
              "pending_bytes": 0, "retrying": False, "rejected": 1, "partial_rejected": 0, "unsendable": 0,
              "unreadable": 1, "last_error": "HTTP 400", "warning": "200 with a body that is not …",
              "lag_s": 0.5, "dropped": 0, "last_success": NOW - 3, "updated": NOW - 1}
    }  # fmt: skip
