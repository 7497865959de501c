"""`python -m tfgw.export`, the exporter process `tfgw serve` starts: no CLI imports, CLI errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import running


def test_the_exporter_process_starts_without_the_cli_and_names_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "tfgw.toml"
    config.write_text("[tracing]\nsegment_max_mb = 0\n")
    probe = (
        "import sys, runpy; sys.argv = ['x', '--config', sys.argv[1]]\n"
        "try:\n    runpy.run_module('tfgw.export', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    loaded = sorted(m for m in ('typer', 'pydantic', 'grpc', 'httpx', 'rich') if m in sys.modules)\n"
        "    print(exit.code, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert (done.stdout, done.stderr) == (
        "2 []\n",
        f"tfgw: {config}:2: tracing.segment_max_mb: must be > 0, got 0\n",
    )


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by whoever inherited it, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_the_exporter_ends_with_the_serve_that_started_it_even_one_killed_with_sigkill(
    tmp_path: Path,
) -> None:
    """`tfgw serve` starts its exporter in a session of its own with `--parent` its pid: a serve
    killed with SIGKILL cannot stop it, so the exporter sees it gone and stops itself."""
    config = tmp_path / "tfgw.toml"
    config.write_text(
        f'[tracing]\ndir = "{tmp_path / "traces"}"\n\n[server]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    parent = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'tfgw.export', '--config', sys.argv[1],"
        " '--parent', str(os.getpid())], start_new_session=True, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    with running([sys.executable, "-c", parent, str(config)], stdout=subprocess.PIPE, text=True) as serve:
        assert serve.stdout is not None
        exporter = int(serve.stdout.readline())
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "state" / "metrics.prom").exists():  # the exporter is running
                assert time.monotonic() < deadline and _alive(exporter), "the exporter did not start"
                time.sleep(0.05)
            serve.kill()
            serve.wait(10)
            deadline = time.monotonic() + 10
            while _alive(exporter):
                assert time.monotonic() < deadline, "the exporter outlived its serve"
                time.sleep(0.05)
        finally:
            if _alive(exporter):
                os.kill(exporter, signal.SIGKILL)
