"""`tfgw serve` under valgrind's callgrind: instructions counted between a zero and a dump.

Instruction counts repeat to about 1 % from run to run, where CPU time on a shared VM does not:
the benches that set two paths against each other (`messages_ab.py`, `policy_ab.py`) count the
instructions of N sequential requests a path with them. A dump is complete once callgrind wrote
its `totals:` line; its `summary:` is the total since the last zeroing. Instrumentation is off
until the first zeroing (`--instr-atstart=no`): Python starts about 8 times faster under valgrind
without it, and no count is read before a zero anyway.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from floor import Endpoint
from run import BenchError, get_status, log_tail, start

__all__ = ["READY_S", "WARMUP", "dumped_instructions", "serve_under_callgrind", "valgrind_command", "zero"]

READY_S = 300.0  # Python starts ~6 times slower under valgrind, even with no instrumentation
WARMUP = 20  # requests a path sends before its counts are zeroed
SUMMARY_RE = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


def valgrind_command(directory: Path) -> list[str]:
    """valgrind's callgrind, its dumps `directory/callgrind.<pid>.<n>` (`dumped_instructions`)."""
    out = f"--callgrind-out-file={directory / 'callgrind.%p'}"
    # `tfgw serve` execs `python -m tfgw.serving` (the same pid): followed; its exporter child is not
    children = ["--trace-children=yes", "--trace-children-skip-by-arg=*tfgw.export*"]
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", *children, out]


def serve_under_callgrind(command: list[str], port: int, log: Path, processes: list[Any]) -> Endpoint:
    """Start `command` (a `tfgw serve` under `valgrind_command`, or `env ...` execing one: the pid
    is valgrind's either way), appended to `processes`, and wait until it answers GET /healthz."""
    process = start(command, log)
    processes.append(process)
    deadline = time.monotonic() + READY_S
    while get_status(port, "/healthz") != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"tfgw under callgrind did not answer GET /healthz:\n{log_tail(log)}")
        time.sleep(0.5)
    return Endpoint(port, process.pid, log)


def zero(gateway: Endpoint) -> None:
    """Zero the counts (switching the instrumentation on, the first time): what follows is counted
    from here."""
    for option in ("--instr=on", "--zero"):
        subprocess.run(
            ["callgrind_control", option, str(gateway.pid)], check=True, capture_output=True, timeout=120
        )


def dumped_instructions(gateway: Endpoint, dump: Path) -> int:
    """Dump the counts since the last zeroing; their total (`summary:`) once `dump` is complete."""
    subprocess.run(
        ["callgrind_control", "--dump", str(gateway.pid)], check=True, capture_output=True, timeout=120
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = dump.read_bytes() if dump.exists() else b""
        if (match := SUMMARY_RE.search(text)) and b"\ntotals:" in text:  # totals: the last line
            return int(match.group(1))
        time.sleep(0.2)
    raise BenchError(f"callgrind wrote no complete {dump.name} within 60 s")
