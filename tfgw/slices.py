"""Background work in short slices of CPU: how the exporter keeps out of the requests' latency.

The exporter parses, encodes and compresses for milliseconds at a stretch, and on a machine whose
cores it shares with the gateway, its clients and its upstreams, a process that computes without
a system call keeps its core until the kernel's next scheduler tick: 4 ms at HZ=250 with
`PREEMPT_NONE`, the setting of most server and VM kernels. Whoever wakes up wanting that core
waits, however low the exporter's priority: measured with `perf sched` on this project's 2-core
VM, a request's upstream sat runnable for 3.3 ms behind an exporter thread at `SCHED_IDLE`, and
the load generator 4.3 ms behind one at nice 10, while the other core was idle. A delivering
target moved the gateway's p99 at concurrency 1 from 1.0 ms to 3.3 ms that way (bench/README.md,
"The exporter in slices").

So the exporter's loops call `give_way()` between two pieces of work (a trace line, a row, a
block of a body to compress). Once `SLICE_S` has passed since the thread last did, it calls
`os.sched_yield()`: any task waiting for this core runs first, and when none waits the call
returns at once (~1 µs). That gives up no share of the CPU over time (the exporter still gets
what its nice value gives it under saturation), only its place in the queue now and then.

Only background threads call it, never the gateway's event loop.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["SLICE_S", "give_way"]

#: the longest a background thread computes before it lets any waiting task go first
SLICE_S = 0.0002

_sched_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # Windows has no sched_yield
_due = threading.local()


def give_way() -> None:
    """Between two pieces of a background thread's work: hand the core to whatever waits for it,
    once this thread has had it for `SLICE_S` since it last did."""
    now = time.perf_counter()
    if now >= getattr(_due, "at", 0.0):
        _sched_yield()  # releases the GIL too: the exporter's other threads may take their turn
        _due.at = time.perf_counter() + SLICE_S
