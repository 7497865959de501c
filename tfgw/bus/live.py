"""Trace records read live from the JetStream stream, from every gateway replica at once: what
`tfgw traces tail --nats` and `tfgw traces top --nats` read instead of the local trace log.

`BusFollower` is `tfgw.tracing.reader.Follower` for the stream: `poll()` and `follow()` give the
traces of the messages stored after it was made (one message is one trace-log line, decoded by
the reader's own line decoding), in the stream's order, which is the order the replicas' records
were stored. `since_ns` starts instead at the first message stored at or after that time (top's
window; a record is published after its request ended, so the window's requests are all there);
`from_start`, at the stream's first message. `backlog()` gives what is there now and stops.

The consumer is ordered and ephemeral, as the NATS clients' ordered consumers are: push, no
acks, flow control, an idle heartbeat every `HEARTBEAT_S`, kept in the server's memory on one
replica, removed by the server `INACTIVE_S` after its reader is gone. The reader checks every
message's consumer sequence and every heartbeat's last one; on a gap (messages lost on the way),
or when nothing came for `STALL_S` (the server restarted, the consumer is gone), it makes a new
consumer from just after the last stream sequence it has, so nothing is skipped or shown twice.
The connection (`tfgw.bus.connect`) is retried for ever; while it is down, or while the stream
does not exist yet, `present` is False, as the local follower's is while its directory is missing.

nats-py is asyncio: its loop runs in a thread of its own, and messages reach the caller through a
bounded queue; while the caller is behind, the consumer's flow control holds the server back.
`close()` ends that thread within about `STOP_S` whatever NATS is doing (up, gone, reconnecting,
never reached): the reader is cancelled until it ends (see `_cancelled`), then the connection is
closed, each bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfgw.bus.connect import BusError, connect, describe, masked
from tfgw.config_bus import BusSettings
from tfgw.tracing.reader import Trace, line_traces, warn_stderr

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["HEARTBEAT_S", "BusFollower", "where"]

#: the consumer's idle heartbeat, seconds
HEARTBEAT_S = 1.0
#: nothing for this long (three heartbeats) and the consumer is made again
STALL_S = 3 * HEARTBEAT_S
#: the server removes a consumer whose reader has been gone this long, seconds
INACTIVE_S = 30.0
#: seconds between two tries at a stream that is missing or a request that failed
RETRY_S = 1.0
#: messages waiting for the caller, at most
QUEUE_SIZE = 1024
#: how long `backlog()` waits for the stream by default, seconds
BACKLOG_TIMEOUT_S = 10.0
#: how long stopping (the reader ended, the connection closed) may take, seconds
STOP_S = 1.0
#: a reader still running this long after it was cancelled is cancelled again, seconds
RECANCEL_S = 0.05

Warn = Callable[[str], None]


def where(bus: BusSettings) -> str:
    """`stream TFGW_TRACES at nats://127.0.0.1:4222`: what is read, secrets masked."""
    return masked(f"stream {bus.stream} at {', '.join(bus.urls)}", bus)


@dataclass(slots=True)
class _Position:
    """Where the next consumer starts: after `last`, a stream sequence, once one is known."""

    last: int | None = None
    #: no consumer was tried yet
    first: bool = True
    #: the stream was missing at the first try: once it exists, all of it is new
    missing_at_first: bool = False
    #: NATS could not be reached at the first try: new means stored since the follower was made
    late: bool = False


class _Resubscribe(Exception):
    """The consumer must be made again (a gap, a stall)."""


class BusFollower:
    """The traces of the stream's messages (see the module's docstring); `close()` it (or use it
    in a `with` block) to stop its thread and its connection."""

    def __init__(
        self,
        bus: BusSettings,
        *,
        since_ns: int | None = None,
        from_start: bool = False,
        warn: Warn = warn_stderr,
        role: str = "tail",
    ) -> None:
        self.bus, self.where = bus, where(bus)
        self.present = False
        #: the last connection or stream problem, secrets masked (None while all is well)
        self.problem: str | None = None
        self._since_ns, self._from_start, self._role = since_ns, from_start, role
        self._made_ns = time.time_ns()
        self._warn = warn
        self._file = Path(f"nats:{bus.stream}")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(QUEUE_SIZE)
        self._connected = self._caught_up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: Client | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="tfgw-bus-live", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def __enter__(self) -> BusFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 2 * STOP_S) -> None:
        """Stop reading: the consumer unsubscribed, the connection closed, the thread ended (waited
        for `timeout` seconds at most: a daemon thread, it does not keep the process alive)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    # -- the caller's side ----------------------------------------------------------------------

    def poll(self) -> Iterator[Trace]:
        """The traces of the messages that arrived since the last poll (none waited for)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            yield from self._take(item)

    def follow(
        self, interval: float = 0.15, *, seen: Callable[[bool], None] | None = None
    ) -> Iterator[Trace]:
        """The traces for ever, each as soon as it arrives. `seen(present)` is called once the
        stream is first reached or found unreachable, and whenever that changes."""
        shown: bool | None = None
        while True:
            try:
                item: tuple[str, Any] | None = self._queue.get(timeout=interval)
            except queue.Empty:
                item = None
            traces = list(self._take(item)) if item is not None else []
            if seen is not None and item is not None and item[0] == "state" and item[1] is not shown:
                shown = item[1]
                seen(shown)
            yield from traces

    def backlog(self, timeout: float = BACKLOG_TIMEOUT_S) -> list[Trace]:
        """The traces of the messages there now (from where it starts), read to their end;
        `BusError` if the stream cannot be read within `timeout` seconds or does not exist."""
        deadline = time.monotonic() + timeout
        traces: list[Trace] = []
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                why = f": {self.problem}" if self.problem else ""
                raise BusError(f"{self.where}: cannot be read within {timeout:g} s{why}") from None
            if item[0] == "caught_up":
                return traces
            if item[0] == "missing":
                raise BusError(f'{self.where}: no such stream (a gateway with [bus] kind = "nats" makes it)')
            traces.extend(self._take(item))

    def _take(self, item: tuple[str, Any]) -> Iterator[Trace]:
        kind, value = item
        if kind == "state":
            self.present = value
        elif kind == "message":
            sequence, data = value
            # one line of the log without its newline: give it one, so that bad JSON is not taken
            # for a torn last line
            yield from line_traces(self._file, sequence, data + b"\n", self._warn)

    # -- the loop's side ------------------------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        reader = asyncio.create_task(self._read())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        deadline = loop.time() + STOP_S
        await _cancelled(reader, deadline)
        if self._client is not None:
            with contextlib.suppress(Exception):  # down, or never connected: it is gone either way
                await asyncio.wait_for(self._client.close(), max(RECANCEL_S, deadline - loop.time()))

    async def _read(self) -> None:
        client = self._client = await connect(
            self.bus,
            self._role,
            on_error=self._problem,
            on_disconnected=self._disconnected,
            on_reconnected=self._reconnected,
        )
        self._connected = True
        position = _Position(late=self.problem is not None)
        while not self._stopping():
            subscription = await self._subscribe(client, position)
            try:
                await self._pump(client, subscription, position)
            except _Resubscribe:
                pass
            finally:
                with contextlib.suppress(Exception):  # the connection may be down: nothing to undo
                    await subscription.unsubscribe()

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _problem(self, message: str) -> None:
        self.problem = message
        if not self._connected:
            self._offer(("state", False))

    async def _disconnected(self) -> None:
        self._connected = False
        self._offer(("state", False))

    async def _reconnected(self) -> None:
        self._connected, self.problem = True, None
        self._offer(("state", True))

    def _offer(self, item: tuple[str, Any]) -> None:
        """A state change for the caller; dropped if the queue is full (the next one says it)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(item)

    async def _put(self, item: tuple[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.05)

    async def _subscribe(self, client: Client, position: _Position) -> Subscription:
        """A new consumer and its subscription, tried every `RETRY_S` until the stream is there."""
        while True:
            try:
                return await self._try_subscribe(client, position)
            except BusError as exc:
                self.problem = exc.message
                if exc.message == _MISSING and position.first:
                    position.missing_at_first = True
                    await self._put(("missing", None))
                elif position.first:
                    position.late = True
                position.first = False
                await self._put(("state", False))
            await asyncio.sleep(RETRY_S)

    async def _try_subscribe(self, client: Client, position: _Position) -> Subscription:
        import nats.errors
        from nats.js.errors import NotFoundError

        js = client.jetstream()
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox)
        try:
            config = await self._start(js, position)
            config.deliver_subject = inbox
            info = await js.add_consumer(self.bus.stream, config=config)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            if isinstance(exc, NotFoundError):
                raise BusError(_MISSING) from exc
            if isinstance(exc, nats.errors.Error | OSError | TimeoutError):
                raise BusError(describe(exc, self.bus)) from exc
            raise
        position.first, self.problem = False, None
        await self._put(("state", True))
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            await self._caught_up_once()
        return subscription

    async def _caught_up_once(self) -> None:
        """`backlog()`'s end: the first time every message there was handed over."""
        if not self._caught_up:
            self._caught_up = True
            await self._put(("caught_up", None))

    async def _start(self, js: Any, position: _Position) -> Any:
        """The consumer's config: where it starts (see `_Position`) and how it delivers."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=HEARTBEAT_S,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=INACTIVE_S,
            filter_subject=self.bus.subject,
        )
        if position.last is not None:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, position.last + 1
        elif self._from_start or position.missing_at_first:
            config.deliver_policy = DeliverPolicy.ALL  # a stream made after we began: all of it is new
        elif self._since_ns is not None or position.late:
            since = self._since_ns if self._since_ns is not None else self._made_ns
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.fromtimestamp(since / 1e9, UTC)
        else:  # new messages: after the stream's last one now
            stream = await js.stream_info(self.bus.stream)
            position.last = stream.state.last_seq
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, position.last + 1
        return config

    async def _pump(self, client: Client, subscription: Subscription, position: _Position) -> None:
        """The consumer's messages to the caller, until `_Resubscribe` or the follower stops."""
        import nats.errors

        expected = 1  # the next consumer sequence
        while not self._stopping():  # also after a cancellation that `next_msg` swallowed
            try:
                msg = await subscription.next_msg(timeout=STALL_S)
            except nats.errors.TimeoutError:
                raise _Resubscribe from None
            if not msg.data and msg.headers and msg.headers.get("Status") == "100":
                await _control(client, msg, expected)
                continue
            meta = msg.metadata
            if meta.sequence.consumer != expected:
                raise _Resubscribe
            expected += 1
            position.last = meta.sequence.stream
            await self._put(("message", (meta.sequence.stream, msg.data)))
            if meta.num_pending == 0:
                await self._caught_up_once()


_MISSING = "no such stream"


async def _cancelled(task: asyncio.Task[None], deadline: float) -> None:
    """`task` cancelled and ended, cancelled again every `RECANCEL_S` while it runs on, until the
    loop's `deadline`. Python 3.11's `asyncio.wait_for`, which nats-py's connect and `next_msg`
    use, swallows a cancellation that comes as the result it waits for does: the task carries on
    as if never cancelled (python/cpython#86296, fixed in 3.12). A follower stopped as a message
    or a heartbeat arrived, or as a connection attempt failed, then never ended."""
    loop = asyncio.get_running_loop()
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so that asyncio does not log it: the reader's end is ours


async def _control(client: Client, msg: Msg, expected: int) -> None:
    """A heartbeat or a flow-control request: answered; a heartbeat that says messages were sent
    that never came raises `_Resubscribe`."""
    headers = msg.headers or {}
    if msg.reply:  # flow control: the server waits for this before it sends more
        await client.publish(msg.reply)
    stalled = headers.get("Nats-Consumer-Stalled")
    if stalled:
        await client.publish(stalled)
    last = headers.get("Nats-Last-Consumer")
    if last is not None and last.isdigit() and int(last) != expected - 1:
        raise _Resubscribe
