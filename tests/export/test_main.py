"""`python -m tfgw.export`, the exporter process `tfgw serve` starts: no CLI imports, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
