from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tests' gRPC receivers serve on threads of this process; a child process started while they
# run went through gRPC's fork handlers, which skip themselves then ("Other threads are currently
# calling into gRPC") and can leave the child's epoll broken before it execs. Read by gRPC when it
# is first imported, so set before any test module imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


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


@pytest.fixture
def plain_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Plain text (no terminal, no colour overrides) and UTC times, in-process and in children."""
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()
