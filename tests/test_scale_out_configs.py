"""configs/scale-out/: every file parses, and says what docs/scale-out.md says it does. The NATS
config is checked by `nats-server -t` itself (with its commented authorization example turned on
too), tfgw.toml by tfgw's own loader, the systemd units' ExecStart lines against the doc, and the
compose file by a small reader of the subset of YAML it is written in (PyYAML is not a
dependency)."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tfgw.config import load
from tfgw.export.targets import target_names

HERE = REPO / "configs" / "scale-out"
DOC = (REPO / "docs" / "scale-out.md").read_text(encoding="utf-8")
NATS_SERVER = Path(sys.executable).parent / "nats-server"

#: the ExecStart of each unit, as docs/scale-out.md shows them
EXEC_START = {
    "tfgw-gateway@.service": "/usr/local/bin/tfgw serve --config /etc/tfgw/tfgw.toml --port %i --no-reload",
    "tfgw-exporter@.service": "/usr/local/bin/tfgw exporter --config /etc/tfgw/tfgw.toml",
    "nats-server.service": "/usr/local/bin/nats-server -c /etc/nats/nats-server.conf",
}


def test_the_directory_holds_what_the_doc_lists() -> None:
    assert sorted(p.name for p in HERE.iterdir()) == sorted(
        ["docker-compose.yml", "nats-server.conf", "tfgw.toml", *EXEC_START]
    )
    for name in sorted(p.name for p in HERE.iterdir()):
        assert f"configs/scale-out/{name}" in DOC, name


def _nats_check(path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [str(NATS_SERVER), "-c", str(path), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def test_nats_server_conf_is_valid_with_jetstream_on_loopback(tmp_path: Path) -> None:
    text = (HERE / "nats-server.conf").read_text(encoding="utf-8")
    code, said = _nats_check(HERE / "nats-server.conf")
    assert (code, "is valid" in said) == (0, True), said
    settings = [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]
    assert settings[:4] == [
        "server_name: tfgw-nats-1",
        "host: 127.0.0.1",
        "port: 4222",
        "http: 127.0.0.1:8222",
    ]
    assert "jetstream {" in settings and '  store_dir: "/var/lib/nats/jetstream"' in settings
    # the commented authorization example, turned on, is a valid config too
    lines, on = [], False
    for line in text.splitlines():
        on = on or line == "# authorization {"
        lines.append(line[2:] if on and line.startswith("# ") else line)
        on = on and line != "# }"
    (tmp_path / "auth.conf").write_text("\n".join(lines) + "\n")
    code, said = _nats_check(tmp_path / "auth.conf", {"TFGW_NATS_PASSWORD": "s3cret-for-the-test"})
    assert code == 0, said
    assert "authorization {" in lines and '    { user: "tfgw", password: "$TFGW_NATS_PASSWORD" }' in lines


def test_tfgw_toml_publishes_to_nats_with_one_target() -> None:
    path = HERE / "tfgw.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    settings = load(path, resolve_secrets=False)
    assert (raw["bus"]["kind"], settings.bus.kind, settings.bus.urls) == (
        "nats",
        "nats",
        ("nats://127.0.0.1:4222",),
    )
    assert (settings.bus.stream, settings.bus.subject, settings.bus.replicas) == (
        "TFGW_TRACES",
        "tfgw.traces",
        1,
    )
    assert (settings.server.host, settings.tracing.dir) == ("127.0.0.1", "/var/lib/tfgw/traces")
    assert target_names(settings, {}) == ["collector"]


@pytest.mark.parametrize("unit", sorted(EXEC_START))
def test_systemd_units_start_what_the_doc_says(unit: str) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((HERE / unit).read_text(encoding="utf-8"))
    assert parser.sections() == ["Unit", "Service", "Install"]
    service = parser["Service"]
    assert (service["ExecStart"], service["KillSignal"], service["Restart"]) == (
        EXEC_START[unit], "SIGTERM", "on-failure",
    )  # fmt: skip
    assert f"ExecStart={EXEC_START[unit]}" in DOC
    assert parser["Install"]["WantedBy"] == "multi-user.target"


# -- docker-compose.yml ----------------------------------------------------------------------------


def read_compose(text: str) -> dict[str, Any]:
    """The subset of YAML the compose file is written in: maps by two-space indentation, `key:
    value` scalars, flow lists as JSON (`["a", "b"]`, `[a]`), block lists of `- item`. Anything
    else (a tab, an odd indentation, a line it cannot read) fails the test."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert "\t" not in line and indent % 2 == 0, f"line {number}: {line!r}"
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        body = line.strip()
        if body.startswith("- "):
            assert isinstance(parent, list), f"line {number}: a list item outside a list"
            parent.append(body[2:])
            continue
        key, sep, value = body.partition(":")
        assert sep and isinstance(parent, dict) and key not in parent, f"line {number}: {line!r}"
        value = value.strip()
        if value:
            parent[key] = _scalar(value)
            continue
        following = _next_line(text.splitlines()[number:])
        child: Any = [] if following.startswith("- ") else {}
        parent[key] = child
        stack.append((indent, child))
    return root


def _next_line(lines: list[str]) -> str:
    return next((s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")), "")


def _scalar(value: str) -> Any:
    if value.startswith("["):
        items = value.strip("[]").split(",")
        return [json.loads(i) if i.strip().startswith('"') else i.strip() for i in items if i.strip()]
    return value


def test_docker_compose_runs_nats_two_gateways_two_exporters_and_a_collector() -> None:
    compose = read_compose((HERE / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert sorted(compose) == ["name", "services", "volumes"]
    assert sorted(services) == ["collector", "exporter-1", "exporter-2", "gateway-1", "gateway-2", "nats"]
    assert {name: s.get("command") for name, s in services.items()} == {
        "nats": ["-c", "/etc/nats/nats-server.conf"],
        "gateway-1": ["serve", "--config", "/etc/tfgw/tfgw.toml", "--port", "8787"],
        "gateway-2": ["serve", "--config", "/etc/tfgw/tfgw.toml", "--port", "8788"],
        "exporter-1": ["exporter", "--config", "/etc/tfgw/tfgw.toml"],
        "exporter-2": ["exporter", "--config", "/etc/tfgw/tfgw.toml"],
        "collector": None,
    }
    assert {s["network_mode"] for s in services.values()} == {"host"}
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    files = {v for v in named if v.startswith("./")}
    assert (sorted(files), all((HERE / f).is_file() for f in files)) == (
        ["./nats-server.conf", "./tfgw.toml"], True,
    )  # fmt: skip
    assert (
        sorted(named - files)
        == sorted(compose["volumes"])
        == ["gateway-1-spool", "gateway-2-spool", "nats-data"]
    )
