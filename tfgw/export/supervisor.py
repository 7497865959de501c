"""`tfgw serve` runs the exporter as a child process, restarts it when it dies, and stops it last.

It runs whenever tracing is enabled, export targets or not: it derives the metrics too
(tfgw.metrics). With `[bus] kind = "nats"` it publishes the trace log to the stream
(tfgw.bus.publish), and delivers to the targets only with `tfgw serve --exporter`.

A child process, not a thread: encoding and sending never compete with the gateway's event loop
for the GIL, and a crash in an exporter cannot take the gateway down. The child is
`python -m tfgw.export` with the same config: the same `exporter_main` as `tfgw exporter` alone in
scaled-out mode, started without the CLI's imports.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tfgw.bus.publish import CURSOR as PUBLISHER
from tfgw.config import Settings
from tfgw.export.cursor import Cursor
from tfgw.metrics import deriver as metrics
from tfgw.metrics.snapshot import state_dir

__all__ = ["MALLOC_SETTINGS", "ExporterSupervisor", "child_env"]

log = logging.getLogger("tfgw.exporter")

#: seconds before a restart, doubled for each quick failure, up to MAX_BACKOFF_S
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: a child that ran this long before dying is restarted at once
HEALTHY_S = 30.0
#: the exporter's CPU priority below the gateway's
NICE = 10
#: seconds the exporter has to stop before it is killed (its cursors are on disk: nothing is lost)
STOP_S = 5.0
#: glibc malloc settings of the exporter, each where the environment does not set its own: one
#: arena for every thread (its threads take turns under the GIL, so an arena a thread buys no speed
#: and kept ~1-2 MiB each resident), and a fixed mmap threshold (else glibc raises it as big blocks
#: are freed), so a batch's buffers of a MiB or more (the lines read, the body) go back to the system
#: once sent instead of staying in the heap. 4.3 MiB less RSS after bench/rss.py's load, the same
#: CPU per span (bench/README.md, "Memory of the tree").
MALLOC_SETTINGS = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The exporter's environment: `environ`, with `MALLOC_SETTINGS` where it has none of its own."""
    return {**MALLOC_SETTINGS, **environ}


class ExporterSupervisor:
    def __init__(
        self, settings: Settings, targets: list[str], *, demo: bool = False, exporter: bool = False
    ) -> None:
        self.settings = settings
        self.nats = settings.bus.kind == "nats"
        # the trace log's readers, whose cursors exist before the gateway writes: with the NATS
        # bus the publisher alone (the targets read the stream)
        self.cursors = [PUBLISHER] if self.nats else targets
        # background work: at a lower CPU priority the gateway's requests go first (bench/README.md)
        # `python -m tfgw.export`, not `tfgw exporter`: the same work without the CLI's imports;
        # -P: not the working directory first on sys.path (a `tfgw/` there is not this tfgw)
        self.command = [sys.executable, "-P", "-m", "tfgw.export", "--nice", str(NICE)]
        self.command += ["--parent", str(os.getpid())]  # it stops itself once this serve is gone
        self.command += ["--demo"] if demo or settings.path is None else ["--config", str(settings.path)]
        self.command += ["--exporter"] if exporter and self.nats else []
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tfgw-exporter-supervisor", daemon=True)

    def start(self) -> None:
        # every reader's cursor, and the metrics' start, exist before the gateway writes its first
        # trace: nothing is missed
        trace_dir: Path = self.settings.tracing.path
        try:
            if self.settings.tracing.enabled:
                trace_dir.mkdir(parents=True, exist_ok=True)
            for name in self.cursors if self.settings.tracing.enabled else ():
                Cursor.load(trace_dir, name)
        except OSError as exc:  # the gateway still serves; the exporter says why it cannot start
            print(f"tfgw: cannot prepare export cursors in {trace_dir}: {exc}", file=sys.stderr)
        try:
            metrics.prepare(self.settings)
        except OSError as exc:
            print(f"tfgw: cannot prepare metrics in {state_dir(self.settings)}: {exc}", file=sys.stderr)
        self._thread.start()

    def stop(self, timeout: float = STOP_S) -> None:
        with self._lock:  # no child is started after this
            self._stop.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            started = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    return
                # its own process group: a ^C at the terminal reaches serve, which stops it in order
                self.process = subprocess.Popen(
                    self.command, start_new_session=True, env=child_env(os.environ)
                )
            code = self.process.wait()
            if self._stop.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started >= HEALTHY_S:
                backoff = FIRST_BACKOFF_S
            print(f"tfgw: exporter exited with {code}; restarting in {backoff:g} s", file=sys.stderr)
            if self._stop.wait(backoff):
                return
            backoff = min(MAX_BACKOFF_S, backoff * 2)
