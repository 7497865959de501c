"""`tfgw serve` as a real process on loopback, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Gateway:
    """Start `tfgw serve --config CONFIG --port 0`, learn its port from its first line, wait until
    /healthz answers, and stop it (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, config: Path | None, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "tfgw", "serve", "--port", "0", *args]
        if config is not None:
            command += ["--config", str(config)]
        self.command = command
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.stderr_path = Path(str(config or "demo") + ".stderr")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gateway:
        self.stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=self.env
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.stop()
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.stderr.close()

    def logs(self) -> str:
        return self.stderr_path.read_text()
