from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's config, and none depends on the working directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TFGW_CONFIG", raising=False)
    for var in [v for v in os.environ if v.startswith("OTEL_")]:  # a developer's own exporter setup
        monkeypatch.delenv(var)
    monkeypatch.chdir(home)
    return home
