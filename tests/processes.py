"""Every process a test starts, started and stopped one way, so that none outlives its test.

- `spawn()` starts the child in a process group of its own (`start_new_session`), so it and
  whatever it starts (a gateway's exporter) can be killed together, and on Linux asks the kernel
  to send it SIGTERM when the test process dies (`PR_SET_PDEATHSIG`): killing pytest, even with
  SIGKILL, takes its children with it.
- `stop()` sends SIGTERM, waits up to a deadline, then SIGKILLs the whole group. Never SIGINT:
  a job started with `&` by a non-interactive shell ignores SIGINT, and so do its children.
- A child not stopped by its test (a test that failed half-way) has its group killed when pytest
  exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

__all__ = ["Lines", "running", "spawn", "stop"]

PR_SET_PDEATHSIG = 1
_live: set[subprocess.Popen[Any]] = set()


@functools.cache
def _death_signal() -> Callable[[], None] | None:
    """What the child runs before exec: SIGTERM when its parent dies (Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl  # resolved in the parent
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody will send it
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def spawn(command: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(command, **options)` in a new process group that dies with this one.

    The death signal follows the thread that forked: a child started off the main thread (which
    may end first) goes without it and relies on `stop()` and the exit hook."""
    main = threading.current_thread() is threading.main_thread()
    process = subprocess.Popen(
        command, start_new_session=True, preexec_fn=_death_signal() if main else None, **options
    )
    _live.add(process)
    return process


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL to its group after `timeout` seconds; what is left of its group is
    killed too. Returns the exit code (negative: the signal that ended it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        code = process.wait(5)
    _kill_group(process)
    _live.discard(process)
    return code


@contextlib.contextmanager
def running(command: Sequence[str], timeout: float = 10.0, **options: Any) -> Iterator[subprocess.Popen[Any]]:
    """`spawn()` for the `with` block, `stop()` at its end however it ends; the pipes are closed."""
    process = spawn(command, **options)
    try:
        yield process
    finally:
        stop(process, timeout)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class Lines:
    """The lines a child process writes on one stream, read by a thread, taken with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:
            try:
                for line in stream:
                    self._queue.put(line)
            except OSError:  # a pty's master reads EIO once the child side is closed
                return

    def next(self, timeout: float = 2.0) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None

    def none_within(self, seconds: float) -> None:
        """Nothing more is written for `seconds` (several of the child's own polling intervals)."""
        try:
            line = self._queue.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected line: {line!r}")

    def rest(self) -> list[str]:
        """What is left once the stream ended (the child exited)."""
        self._thread.join(5)
        return [self._queue.get() for _ in range(self._queue.qsize())]


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live):
        _kill_group(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
