"""Serving the app on Hypercorn: sockets, workers, uvloop, and graceful shutdown.

The listening sockets are made once, in the parent; with several workers each is a forked process
serving the same sockets, and the parent restarts a worker that dies. SIGTERM or SIGINT stops
accepting new connections and lets in-flight requests (streams included) finish, for up to
`[server] graceful_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from tfgw.config import Settings
from tfgw.gateway.app import create_app
from tfgw.gateway.fast import Front
from tfgw.tracing.exports import NO_EXPORTS, Exports

__all__ = ["bind", "serve"]

log = logging.getLogger("tfgw.server")

#: connections waiting to be accepted (Hypercorn's default is 100): a burst of new clients queues
#: in the kernel rather than being refused
BACKLOG = 2048
#: seconds a connection may sit without a request in progress, between requests or before its
#: first request's headers are complete (Hypercorn's `keep_alive_timeout`): idle connections, and a
#: slowloris trickling its headers, are closed after it whatever they send
KEEP_ALIVE_TIMEOUT = 5.0
#: no timeout on each read from a connection (Hypercorn's `read_timeout`): it would also cut a
#: long stream whose client sends nothing while it reads; a body that trickles in is bounded by the
#: app's BODY_TIMEOUT, `[server] body_timeout`, instead (docs/faults.md)
READ_TIMEOUT = None


def bind(settings: Settings, host: str, port: int) -> tuple[Config, Sockets]:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = settings.server.graceful_timeout
    config.backlog = BACKLOG
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.read_timeout = READ_TIMEOUT
    config.accesslog = None
    config.errorlog = logging.getLogger("tfgw.hypercorn")
    return config, config.create_sockets()


def serve(
    settings: Settings, config: Config, sockets: Sockets, workers: int, *, exports: Exports = NO_EXPORTS
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. `exports` is what `tfgw serve` made of the
    export targets; forked workers each get their copy."""
    if workers == 1:
        _run_worker(settings, config, sockets, exports)
        return 0
    return _supervise(lambda: _run_worker(settings, config, sockets, exports), workers)


def _run_worker(settings: Settings, config: Config, sockets: Sockets, exports: Exports) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serving starts: then it reloads the config
    app = create_app(settings, exports=exports)
    _tune_gc()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        front = Front(app, app.extensions["tfgw"])  # the traced routes on bare ASGI, the rest Quart's
        app_ = wrap_app(front, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        await worker_serve(app_, config, sockets=sockets, shutdown_trigger=stop.wait)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


#: young-generation threshold of the serving process (CPython's default is 700)
GC_GEN0_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Freeze what start-up made and collect the young generation less often.

    A request makes short-lived containers by the hundred (bodies, headers, span records), so at
    CPython's defaults a worker ran a young collection every ~8 requests and a full one every ~1,000,
    each walking the whole heap of imported modules: 32 ms a full collection, about 60 µs of CPU a
    request in all (measured with gc.callbacks at c=50, bench/README.md "Garbage collection").
    Frozen, the start-up heap is never walked again; at 10,000 the young collections all but stop.
    Nothing lives longer for it: a request's objects are freed by reference counting when it ends.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _supervise(target: Callable[[], None], workers: int) -> int:
    """Fork `workers` processes running `target`; restart any that dies; stop them all on SIGTERM or
    SIGINT; pass SIGHUP (reload the config) on to each."""
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        process = ctx.Process(target=target, daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:  # each worker reloads the config itself
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    processes = [start() for _ in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p in processes], timeout=1.0)
        for i, process in enumerate(processes):
            if not stopping and not process.is_alive():
                print(
                    f"tfgw: worker {process.pid} exited with {process.exitcode}; restarting", file=sys.stderr
                )
                time.sleep(0.1)
                processes[i] = start()
    for process in processes:
        process.join()
    return 0
