"""The supply chain, as far as this repository decides it: what the wheel holds, nothing that runs
by itself on install or on start (no `.pth` file), and no network when a module is imported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tfgw import __version__

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tfgw"
#: the package data pyproject.toml ships beside the modules
DATA = ["tfgw/gateway/openapi.json"]
DIST_INFO = ["METADATA", "RECORD", "WHEEL", "entry_points.txt", "top_level.txt"]

#: imports every module of the package with every way to open a socket or resolve a name refused
IMPORT_ALL = """
import importlib, json, pkgutil, socket

class Refused(OSError):
    pass

def refuse(*args, **kwargs):
    raise Refused("network at import time")

class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        refuse()

socket.socket = NoSocket
socket.create_connection = socket.getaddrinfo = socket.gethostbyname = socket.socketpair = refuse
socket.create_server = refuse
import tfgw
names = sorted(m.name for m in pkgutil.walk_packages(tfgw.__path__, "tfgw."))
names = [name for name in names if name != "tfgw.__main__"]  # `python -m tfgw`: runs the CLI
for name in names:
    importlib.import_module(name)
print(json.dumps(names))
"""


def modules() -> list[str]:
    """Every module of the package, from its files."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_every_module_opens_no_socket() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert (done.returncode, done.stderr) == (0, "")
    expected = [name for name in modules() if name not in ("tfgw", "tfgw.__main__")]
    assert sorted(json.loads(done.stdout)) == sorted(expected)


def test_the_package_has_no_pth_file() -> None:
    """A `.pth` file in site-packages runs at every interpreter start: tfgw ships none."""
    assert sorted(PACKAGE.rglob("*.pth")) == []


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a copy of the sources the wheel is built from (built in the copy,
    so the working tree gets no build/ directory)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(PACKAGE, source / "tfgw", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(root / "out"), "--no-deps", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (built,) = (root / "out").glob("*.whl")
    return built


def test_the_wheel_holds_the_package_its_data_and_its_metadata_only(wheel: Path) -> None:
    assert wheel.name == f"tfgw-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = sorted(z.namelist())
    sources = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    dist_info = [f"tfgw-{__version__}.dist-info/{name}" for name in DIST_INFO]
    assert names == sorted([*sources, *DATA, *dist_info])


def test_the_wheel_starts_nothing_but_the_cli(wheel: Path) -> None:
    """No `.pth`, and the one entry point is the `tfgw` command."""
    with zipfile.ZipFile(wheel) as z:
        assert [n for n in z.namelist() if n.endswith(".pth")] == []
        entry_points = z.read(f"tfgw-{__version__}.dist-info/entry_points.txt").decode()
    assert entry_points == "[console_scripts]\ntfgw = tfgw.cli:main\n"


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """requirements.lock (`pip-compile --generate-hashes`, SECURITY.md) holds each dependency of
    pyproject.toml, each of its pins with at least one sha256."""
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower() for d in wanted}
    entries = re.split(r"\n(?=[a-z0-9])", (REPO / "requirements.lock").read_text())
    pins = {}
    for entry in entries:
        if match := re.match(r"([a-z0-9._-]+)==(\S+)", entry):
            pins[match[1]] = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", entry))
    assert names <= set(pins), names - set(pins)
    assert [name for name, hashes in pins.items() if not hashes] == []
