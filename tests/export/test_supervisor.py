"""The exporter child `tfgw serve` starts: its malloc settings, as a real process sees them."""

from __future__ import annotations

import time
from pathlib import Path

from tfgw.config import load
from tfgw.export.supervisor import MALLOC_SETTINGS, ExporterSupervisor, child_env


def test_the_child_gets_one_malloc_arena_and_a_fixed_mmap_threshold_unless_told_otherwise() -> None:
    assert MALLOC_SETTINGS == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    assert child_env({"PATH": "/bin"}) == {"PATH": "/bin", **MALLOC_SETTINGS}
    assert child_env({"MALLOC_ARENA_MAX": "4", "PATH": "/bin"}) == {
        "MALLOC_ARENA_MAX": "4",
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "PATH": "/bin",
    }


def test_the_running_exporter_has_them_in_its_environment(tmp_path: Path) -> None:
    config = tmp_path / "tfgw.toml"
    config.write_text(f'[tracing]\ndir = "{tmp_path / "traces"}"\n')
    supervisor = ExporterSupervisor(load(config), [])
    supervisor.start()
    try:
        environ = _environ_of_child(supervisor)
    finally:
        supervisor.stop()

    assert {key: environ.get(key) for key in MALLOC_SETTINGS} == MALLOC_SETTINGS
    assert supervisor.process is not None and supervisor.process.returncode is not None


def _environ_of_child(supervisor: ExporterSupervisor, timeout: float = 30.0) -> dict[str, str]:
    """The child's /proc/PID/environ, polled until the child exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = supervisor.process
        if process is not None:
            raw = Path(f"/proc/{process.pid}/environ").read_bytes()
            return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        time.sleep(0.02)
    raise AssertionError(f"no exporter child within {timeout:g} s")
