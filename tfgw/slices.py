"""Background work in short slices of CPU: how the exporter keeps out of the requests' latency.

The exporter parses, encodes and compresses for milliseconds at a stretch, on cores it shares with
the gateway, its clients and its upstreams. On this project's 2-core VM (Linux 6.18,
`PREEMPT_NONE`, HZ 250) a task woken behind such a stretch waited for it, whatever the
exporter's priority. `perf sched` showed the load generator runnable 4.3 ms behind an exporter
thread at nice 10 while the other core was idle, and a request's upstream 3.3 ms behind one at
`SCHED_IDLE`. A delivering target moved the gateway's p99 at concurrency 1 from 1.0 to 3.3 ms
that way (bench/README.md, "The exporter in slices").

So the exporter's loops call `give_way()` between two pieces of work: a trace line, a row, a
block of a body to compress. Once `SLICE_S` has passed since the thread last did, it calls
`os.sched_yield()`, which lets the tasks waiting for this core that the scheduler would pick run
first; when none waits, the call returns at once (~1 µs). It gives up no share of the CPU over
time: under saturation the exporter still gets what its nice value gives it. Measured with a
target delivering, the gateway's p99 at concurrency 1 fell 3.08 -> 1.77 ms (the floor's: 0.79).

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
