"""`tfgw serve` as a real process on loopback, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.processes import spawn, stop

READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Gateway:
    """Start `tfgw serve --config CONFIG --port 0`, learn its port from its first line, wait until
    /healthz answers, and stop it (SIGTERM, then SIGKILL) on exit; it dies with the test run
    (`tests.processes`)."""

    def __init__(
        self, config: Path | None, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        # -P: the working directory not on sys.path, as for the `tfgw` script (`cwd` may hold a tfgw/)
        command = [sys.executable, "-P", "-m", "tfgw", "serve", "--port", "0", *args]
        if config is not None:
            command += ["--config", str(config)]
        self.command, self.cwd = command, cwd
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.stderr_path = Path(str(config or "demo") + ".stderr")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gateway:
        self.stderr = self.stderr_path.open("w")
        self.process = spawn(
            self.command, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=self.env, cwd=self.cwd
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = READY.search(line)
        if match is None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"tfgw serve did not start: {line!r} {self.stderr_path.read_text()}")
        self.port = int(match.group(1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError("tfgw serve never became ready")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL (to its exporter too) after `timeout` seconds."""
        assert self.process is not None
        return stop(self.process, timeout)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.stop()
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.stderr.close()

    def logs(self) -> str:
        return self.stderr_path.read_text()
