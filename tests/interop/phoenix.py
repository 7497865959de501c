"""Arize Phoenix as a real OTLP receiver, for the interop tests.

Phoenix is big (about 850 MB installed), so it lives in a venv of its own, outside the repository and
outside the tests' isolated HOME: `$TFGW_PHOENIX_VENV`, by default
`${XDG_CACHE_HOME:-~/.cache}/tfgw-test/phoenix-venv`, resolved from the real environment when this
module is imported. `ensure_venv()` installs `PHOENIX_REQUIREMENT` there once, with uv (pip where uv
is missing); a venv whose install did not finish (no marker file, or a marker naming another
requirement) is removed and installed again, and a lock keeps two test runs from installing at once.

`with PhoenixServer(venv, workdir) as phoenix:` runs `phoenix serve` on 127.0.0.1 with free ports for
HTTP (UI, REST, GraphQL, OTLP/HTTP at /v1/traces) and gRPC (OTLP/gRPC), its database and files in
`workdir`, telemetry and every outbound request of its own turned off, and stops it on exit.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.processes import spawn, stop

#: the Phoenix release the interop tests run against; `$TFGW_PHOENIX_REQUIREMENT` overrides it
PHOENIX_REQUIREMENT = os.environ.get("TFGW_PHOENIX_REQUIREMENT") or "arize-phoenix==20.26.1"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
PHOENIX_VENV = Path(os.environ.get("TFGW_PHOENIX_VENV") or _CACHE / "tfgw-test" / "phoenix-venv")
_MARKER = "tfgw-installed.txt"

# Phoenix's gRPC server listens on [::]:PORT, every interface, and has no setting for the host:
# bind it to loopback like the HTTP server (PHOENIX_HOST), then run `phoenix serve`.
_LAUNCH = """
import sys

import grpc.aio

_server = grpc.aio.server


def _loopback_server(*args, **kwargs):
    server = _server(*args, **kwargs)
    add = server.add_insecure_port
    server.add_insecure_port = lambda address: add(address.replace("[::]:", "127.0.0.1:", 1))
    return server


grpc.aio.server = _loopback_server

from phoenix.server.main import main

sys.argv = ["phoenix", "serve"]
sys.exit(main())
"""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_installed(venv: Path) -> bool:
    marker = venv / _MARKER
    return marker.is_file() and marker.read_text().strip() == PHOENIX_REQUIREMENT


def ensure_venv(venv: Path = PHOENIX_VENV, timeout: float = 900) -> float:
    """Install Phoenix into `venv` unless it is there already; the seconds the install took (0.0 when
    there was nothing to do). Raises CalledProcessError (with pip's output) if the install fails."""
    if is_installed(venv):
        return 0.0
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be installing it right now
        if is_installed(venv):
            return 0.0
        start = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # what an interrupted install left
        for command in ([sys.executable, "-m", "venv", str(venv)], install_command(venv_python(venv))):
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
        (venv / _MARKER).write_text(PHOENIX_REQUIREMENT + "\n")
        return time.monotonic() - start


def install_command(python: Path) -> list[str]:
    """uv's (a test extra: it installs Phoenix's ~850 MB about ten times faster than pip), or pip's
    where uv is not installed."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PHOENIX_REQUIREMENT]
    compiled = "--compile-bytecode"  # as pip does: else each Phoenix start compiles what it imports
    return [find_uv_bin(), "pip", "install", "-q", compiled, "--python", str(python), PHOENIX_REQUIREMENT]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PhoenixServer:
    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.port = free_port()
        self.grpc_port = free_port()
        self.log_path = workdir / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def url(self) -> str:
        """UI, REST (/v1), GraphQL (/graphql) and OTLP/HTTP (/v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_", "PYTHON"))
        }  # a developer's own Phoenix or OpenTelemetry settings stay out
        return {
            **inherited,
            "HOME": str(self.workdir),
            "PHOENIX_WORKING_DIR": str(self.workdir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
            "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        }

    def __enter__(self) -> PhoenixServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = spawn(
                [str(venv_python(self.venv)), "-c", _LAUNCH],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=self.workdir,
            )
        try:
            self._wait_until_up(timeout=120)
        except BaseException:
            self.__exit__()
            raise
        self.started_in = time.monotonic() - start
        return self

    def _wait_until_up(self, timeout: float) -> None:
        """/healthz answers once the lifespan, which starts the gRPC server, has run."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"phoenix serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"phoenix serve did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process, 15)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- reading back -------------------------------------------------------------------------

    def spans(self, project: str, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace in `project`, through the REST API (`GET /v1/projects/{project}/spans`):
        `span_kind`, `parent_id`, `context.span_id`, flattened `attributes`. [] while the project
        does not exist yet."""
        response = httpx.get(
            f"{self.url}/v1/projects/{project}/spans",
            params={"trace_id": trace_id, "limit": 1000},
            timeout=10,
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def wait_for_spans(
        self, project: str, trace_id: str, count: int, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The spans of one trace once Phoenix has stored `count` of them (it ingests in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(project, trace_id)
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Phoenix has {len(spans)} of {count} spans of trace {trace_id} in project {project} "
                    f"after {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=10
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data


if __name__ == "__main__":  # `.ci/run` provisions Phoenix before the tests, so they use no network
    took = ensure_venv()
    print(f"phoenix venv ready at {PHOENIX_VENV} ({took:.0f} s)")
