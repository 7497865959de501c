"""`tfgw serve` with `[bus] kind = "nats"`: what its exporter child is told, which cursors exist
before the gateway writes, what the gateway's retention and /readyz see."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tfgw.bus.connect import BusError, check_subject
from tfgw.config import Settings, TracingSettings
from tfgw.config_bus import BusSettings
from tfgw.export.supervisor import ExporterSupervisor
from tfgw.serving import _exports


def settings(tmp_path: Path, kind: str) -> Settings:
    return Settings(
        path=tmp_path / "tfgw.toml",
        tracing=TracingSettings(dir=str(tmp_path / "traces")),
        bus=BusSettings(kind=kind),
    )


@pytest.mark.parametrize(
    ("kind", "exporter", "extra", "cursors"),
    [
        ("nats", False, [], ["nats"]),
        ("nats", True, ["--exporter"], ["nats"]),
        ("local", True, [], ["otlp"]),  # --exporter changes nothing with the local bus
        ("local", False, [], ["otlp"]),
    ],
)
def test_the_exporter_child_and_the_cursors_made_before_any_line(
    tmp_path: Path, kind: str, exporter: bool, extra: list[str], cursors: list[str]
) -> None:
    supervisor = ExporterSupervisor(settings(tmp_path, kind), ["otlp"], exporter=exporter)
    assert supervisor.command == [
        sys.executable, "-P", "-m", "tfgw.export", "--nice", "10", "--parent", supervisor.command[7],
        "--config", str(tmp_path / "tfgw.toml"), *extra,
    ]  # fmt: skip
    assert supervisor.cursors == cursors


def test_with_nats_the_log_keeps_what_the_publisher_has_not_published_and_the_start_line_says_so(
    tmp_path: Path,
) -> None:
    exports, said = _exports(settings(tmp_path, "nats"), ["otlp"], False)
    assert (exports.targets, said) == (("nats",), ", publishing to NATS stream TFGW_TRACES")
    exports, said = _exports(settings(tmp_path, "nats"), ["otlp"], True)
    assert said == ", publishing to NATS stream TFGW_TRACES, exporting to: otlp"
    assert list(exports.status()) == ["nats"]


@pytest.mark.parametrize("subject", ["", "tfgw traces", "tfgw..traces", "tfgw.traces\r\nPUB x 1"])
def test_a_subject_one_cannot_publish_on_is_refused(subject: str) -> None:
    with pytest.raises(BusError) as refused:
        check_subject(subject, "bus.subject")
    assert refused.value.message == f"bus.subject: {subject!r} is not a NATS subject one can publish on"
