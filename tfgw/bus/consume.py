"""The exporter side of the NATS bus: per export target one durable pull consumer on the stream,
shared by every exporter process (work-queue semantics), delivering with the log mode's encoder
and senders.

Contract (docs/export.md, "NATS mode"):
- consumer `tfgw-<target>` on `bus.stream`, filtered on `bus.subject`, explicit ack, `ack_wait`
  60 s, no limit on deliveries, every message the stream holds (`DeliverPolicy.ALL`), created by
  the first exporter that needs it and used as it is after that;
- one message is one trace-log line (an OTLP/JSON `ExportTraceServiceRequest`); a fetch takes at
  most `FETCH_MESSAGES` messages and `BATCH_BYTES` bytes, which `tfgw.export.encode` batches and
  `tfgw.export.send` sends;
- the messages of a payload the backend accepted (partial success included) are acked; of one it
  refused for good, termed (counted, never redelivered); on a retryable failure what is left of
  the fetch is nakked with the `tfgw.retry.Backoff` delay (Retry-After honoured) and this worker
  waits as long before it fetches again; a message that is not a JSON object is termed;
- at least once: a message can arrive twice when its ack is lost, when an exporter dies between
  the backend's answer and its ack, when a send outlasts `ack_wait`, or when one line too big for
  one payload was half accepted before a retryable failure.

`target_consumers()` is the work list `tfgw serve --exporter` runs in its exporter process;
`tfgw exporter` runs it through `consumers_main()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from tfgw.bus.connect import BusError, connect, describe
from tfgw.bus.stream import ensure_stream
from tfgw.config import Settings
from tfgw.config_bus import BusSettings
from tfgw.export import encode, send
from tfgw.export.targets import ResolvedTarget, enabled_targets
from tfgw.export.worker import BATCH_BYTES, count_delivery, count_dropped, count_retry
from tfgw.retry import Backoff
from tfgw.slices import give_way

__all__ = [
    "ACK_WAIT_S",
    "CONSUMER_PREFIX",
    "FETCH_MESSAGES",
    "TargetConsumer",
    "consumer_config",
    "consumer_name",
    "consumers_main",
    "ensure_consumer",
    "run_consumers",
    "target_consumers",
]

log = logging.getLogger("tfgw.exporter")

CONSUMER_PREFIX = "tfgw-"
ACK_WAIT_S = 60.0
#: messages (trace-log lines, a request's spans each) a fetch takes at most: 2,000 spans of 4-span
#: requests, one full payload (`encode.DEFAULT_MAX_SPANS`)
FETCH_MESSAGES = 500
#: ack-pending messages a consumer allows across all its workers (JetStream's default: 1,000)
MAX_ACK_PENDING = 20_000
#: how long an idle worker's pull waits on the server for a first new message
WAIT_S = 1.0
#: how long a worker waits before trying again when NATS answers an error
RECONNECT_S = 1.0
#: how long one (re)connection to NATS is tried before the loop looks at `stop` again
CONNECT_S = 5.0


def consumer_name(target: str) -> str:
    return f"{CONSUMER_PREFIX}{target}"


# -- the consumer ---------------------------------------------------------------------------------


def consumer_config(bus: BusSettings, target: str) -> Any:
    """The durable pull consumer of `target` (see the module docstring)."""
    from nats.js import api

    name = consumer_name(target)
    return api.ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"tfgw exporters of target {target}",
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=-1,
        filter_subject=bus.subject,
        max_ack_pending=MAX_ACK_PENDING,
    )


async def ensure_consumer(js: Any, bus: BusSettings, target: str) -> None:
    """The stream (`tfgw.bus.stream`) and the target's consumer, each made if missing (an existing
    one is used as it is); `BusError` when JetStream refuses."""
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    await ensure_stream(js, bus)
    try:
        try:
            await js.consumer_info(bus.stream, consumer_name(target))
        except NotFoundError:
            await js.add_consumer(bus.stream, consumer_config(bus, target))
    except (OSError, NatsError) as exc:
        raise BusError(f"JetStream consumer {consumer_name(target)}: {describe(exc, bus)}") from exc


# -- pulling ---------------------------------------------------------------------------------------


class _Puller:
    """Pull requests on one consumer, bounded by count and bytes (nats-py's `fetch` has no byte
    bound): a `no_wait` pull takes what is there; when nothing is, a one-message pull waits up to
    `WAIT_S` on the server, and a `no_wait` pull takes what came with it. A message answering an
    earlier request that the client stopped waiting for joins the next fetch."""

    def __init__(self, nc: Any, stream: str, consumer: str) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sub: Any = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.inbox, cb=self.queue.put)

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    async def fetch(self, count: int, max_bytes: int) -> list[Any]:
        msgs = await self._pull({"batch": count, "max_bytes": max_bytes, "no_wait": True}, count, 5.0, True)
        if msgs:
            return msgs
        msgs = await self._pull({"batch": 1, "expires": int(WAIT_S * 1e9)}, 1, WAIT_S + 2.0)
        if msgs and count > 1:
            rest = max(1, max_bytes - len(msgs[0].data))
            msgs += await self._pull({"batch": count - 1, "max_bytes": rest, "no_wait": True}, count - 1, 5.0)
        return msgs

    async def _pull(
        self, request: dict[str, Any], count: int, timeout: float, oversize: bool = False
    ) -> list[Any]:
        """Send one pull request; collect messages until `count`, the server's end of it (404 no
        messages, 408 expired, 409) or `timeout`. `oversize`: a 409 for a first message larger
        than `max_bytes` pulls that one message alone."""
        loop = asyncio.get_running_loop()
        await self.nc.publish(self.subject, orjson.dumps(request), reply=self.inbox)
        out: list[Any] = []
        deadline = loop.time() + timeout
        while len(out) < count:
            try:  # what has arrived is taken without a timer: wait_for costs a task a message
                msg = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    msg = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
            status = _status(msg)
            if status is None:
                out.append(msg)
            elif status == "409" and oversize and not out and "MaxBytes" in _description(msg):
                return await self._pull({"batch": 1, "no_wait": True}, 1, timeout)
            elif status != "100":  # 100: an idle heartbeat
                if status == "503" or "Deleted" in _description(msg):  # the consumer is gone: make it again
                    raise BusError(f"pull on {self.subject}: {status} {_description(msg)}")
                if status not in ("404", "408", "409"):  # 404, 408, 409: this request's end
                    log.warning("nats pull on %s: %s %s", self.subject, status, _description(msg))
                break
        return out


def _num_delivered(reply: str) -> int:
    """The delivery count in a JetStream message's reply subject, without parsing the rest of it:
    `$JS.ACK.<stream>.<consumer>.<delivered>.…` (9 tokens), or with a domain and an account hash
    before the stream (12 tokens, nats-server 2.9 and later)."""
    tokens = reply.split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1


def _status(msg: Any) -> str | None:
    headers = msg.headers
    if msg.data or not headers:
        return None
    status: str | None = headers.get("Status")
    return status


def _description(msg: Any) -> str:
    return str(
        next((v for k, v in (msg.headers or {}).items() if str(k).lower().endswith("description")), "")
    )


# -- one target's consumer -------------------------------------------------------------------------


@dataclass(slots=True)
class _Settlement:
    """What becomes of a fetch's messages once its payloads were sent."""

    ack: list[Any] = field(default_factory=list)
    term: list[Any] = field(default_factory=list)
    nak: list[Any] = field(default_factory=list)
    delay: float = 0.0


class _Lines:
    """The fetched messages as prepared lines, parsed one at a time as `encode.batches` takes
    them; `owners[i]` is the message of line `i`, `bad` those that are not a JSON object."""

    def __init__(self, msgs: list[Any], target: ResolvedTarget) -> None:
        self.msgs = msgs
        self.target = target
        self.owners: list[Any] = []
        self.bad: list[Any] = []
        self.read = 0

    def __iter__(self) -> Iterator[Any]:
        for msg in self.msgs:
            self.read += 1
            give_way()  # between two lines: encoding a batch is milliseconds (tfgw.slices)
            try:
                line = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                line = None
            if not isinstance(line, dict):
                self.bad.append(msg)
                continue
            self.owners.append(msg)
            yield encode.prepare(line, self.target)


@dataclass
class TargetConsumer:
    """One target's delivery loop on its consumer, as one thread's work (`run`); `stats` are its
    counters since it started (spans, but `termed`, `redelivered` and `unreadable`: messages)."""

    target: ResolvedTarget
    bus: BusSettings
    stop: threading.Event
    batch_messages: int = FETCH_MESSAGES
    batch_bytes: int = BATCH_BYTES
    max_spans: int = encode.DEFAULT_MAX_SPANS
    clock: Callable[[], float] = time.time
    stats: dict[str, Any] = field(default_factory=dict)
    _backoff: Backoff = field(default_factory=Backoff)

    def run(self) -> None:
        self.stats = {
            "delivered": 0, "rejected": 0, "partial_rejected": 0, "unsendable": 0, "unreadable": 0,
            "termed": 0, "acked": 0, "redelivered": 0, "retrying": False, "attempts": 0, "retries": 0,
            "last_error": None, "warning": None, "last_success": None, "lag_s": 0.0,
        }  # fmt: skip
        asyncio.run(self._run())
        s = self.stats
        log.info(
            "%s: delivered %d spans (%d messages acked, %d redelivered), "
            "rejected %d spans (%d messages termed)",
            self.target.name, s["delivered"], s["acked"], s["redelivered"], s["rejected"], s["termed"],
        )  # fmt: skip

    async def _run(self) -> None:
        sender = send.sender_for(self.target)
        pool = ThreadPoolExecutor(1, thread_name_prefix=f"tfgw-send-{self.target.name}")
        try:
            while not self.stop.is_set():
                try:
                    nc = await connect(self.bus, "exporter", timeout=CONNECT_S)
                except BusError as exc:  # unreachable (logged by connect): again, until it answers or we stop
                    self.stats["last_error"] = exc.message
                    await self._wait(RECONNECT_S)
                    continue
                try:
                    await self._consume(nc, sender, pool)
                finally:
                    with contextlib.suppress(Exception):
                        await nc.close()
        finally:
            pool.shutdown(wait=True)
            sender.close()

    async def _consume(self, nc: Any, sender: send.Sender, pool: ThreadPoolExecutor) -> None:
        from nats.errors import Error as NatsError

        loop = asyncio.get_running_loop()
        puller = _Puller(nc, self.bus.stream, consumer_name(self.target.name))
        try:
            await ensure_consumer(nc.jetstream(), self.bus, self.target.name)
            await puller.start()
            while not self.stop.is_set():
                msgs = await puller.fetch(self.batch_messages, self.batch_bytes)
                if not msgs:
                    self.stats["lag_s"] = 0.0
                    continue
                if self.stop.is_set():  # stopping: whoever comes next gets them now, not in 60 s
                    await _settle(nc, _Settlement(nak=msgs))
                    return
                self._fetched(msgs)
                settlement = await loop.run_in_executor(pool, self._deliver, msgs, sender)
                await _settle(nc, settlement)
                if settlement.delay:
                    await self._wait(settlement.delay)
        except (NatsError, BusError, TimeoutError) as exc:  # NATS went away or refused: start over
            self._failed(exc)
            await self._wait(RECONNECT_S)
        finally:
            await puller.close()

    def _fetched(self, msgs: list[Any]) -> None:
        try:
            meta = msgs[-1].metadata
        except Exception:  # not a JetStream reply subject: nothing to learn from it
            return
        self.stats["lag_s"] = max(0.0, self.clock() - meta.timestamp.timestamp())
        self.stats["redelivered"] += sum(1 for m in msgs if _num_delivered(m.reply) > 1)

    def _deliver(self, msgs: list[Any], sender: send.Sender) -> _Settlement:
        """Encode and send the fetch (in the target's send thread): what to ack, term and nak."""
        lines = _Lines(msgs, self.target)
        out = _Settlement()
        settled = 0
        for batch in encode.batches(lines, self.target.protocol, max_spans=self.max_spans):
            count_dropped(self.stats, batch, self.target.name)
            if not batch.spans:
                continue
            result = sender.send(batch)
            if result.outcome == "retry":
                out.nak = lines.owners[settled:] + lines.msgs[lines.read :]
                out.delay = self._retrying(result)
                break
            owners = lines.owners[settled : batch.end_line]
            settled = batch.end_line
            self._delivered(batch, result, len(owners))
            (out.ack if result.outcome == "accepted" else out.term).extend(owners)
        else:
            out.ack += lines.owners[settled:]  # lines whose spans were all dropped
        out.term += lines.bad
        self.stats["unreadable"] += len(lines.bad)
        self.stats["acked"] += len(out.ack)
        self.stats["termed"] += len(out.term)
        return out

    def _delivered(self, batch: encode.EncodedBatch, result: send.SendResult, messages: int) -> None:
        self._backoff.reset()
        if count_delivery(self.stats, batch, result, self.clock()):
            return
        log.warning(
            "target %s rejected %d spans (%d messages termed): %s",
            self.target.name, batch.spans, messages, result.message,
        )  # fmt: skip

    def _retrying(self, result: send.SendResult) -> float:
        delay = self._backoff.next_delay(result.retry_after)
        count_retry(self.stats, result)
        if self._backoff.attempts == 1:  # the first of a run of failures
            log.warning("target %s: %s; nakked, again in %.1f s", self.target.name, result.message, delay)
        return delay

    def _failed(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, BusError) else describe(exc, self.bus)
        if self.stats.get("last_error") != message:
            log.warning("%s: %s", self.target.name, message)
        self.stats["last_error"] = message

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less once `stop` is set."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop.wait, seconds)


async def _settle(nc: Any, settlement: _Settlement) -> None:
    """Ack, term and nak, then flush: once this returns the server has them (barring a lost
    connection, when they go with it and the messages come again after `ack_wait`)."""
    for msg in settlement.ack:
        await msg.ack()
    for msg in settlement.term:
        await msg.term()
    for msg in settlement.nak:
        await msg.nak(settlement.delay or None)
    if settlement.ack or settlement.term or settlement.nak:
        await nc.flush(timeout=10)


# -- the process -----------------------------------------------------------------------------------


def target_consumers(settings: Settings, stop: threading.Event) -> list[TargetConsumer]:
    """One consumer per enabled target, each a thread's work (`.run`) until `stop` is set; `.stats`
    for the metrics. `tfgw serve --exporter` runs these in NATS mode, as `tfgw exporter` does."""
    return [TargetConsumer(t, settings.bus, stop) for t in enabled_targets(settings).values()]


def run_consumers(settings: Settings, stop: threading.Event | None = None) -> int:
    """Every enabled target's consumer in a thread of its own until SIGTERM/SIGINT (or `stop`);
    returns an exit code (1 when one failed: a bug, logged)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    consumers = target_consumers(settings, stop)
    if not consumers:
        log.warning("no export target is configured: nothing to do")
        return 0
    failed: list[str] = []

    def guarded(consumer: TargetConsumer) -> None:
        try:
            consumer.run()
        except Exception:
            log.exception("the exporter of %s failed", consumer.target.name)
            failed.append(consumer.target.name)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(c,), name=f"tfgw-export-{c.target.name}") for c in consumers
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(15)
    return 1 if failed else 0


def consumers_main(settings: Settings, *, nice: int = 0) -> int:
    """`tfgw exporter` in NATS mode: its log lines, its CPU priority, then `run_consumers`."""
    import gc

    logging.basicConfig(level=logging.INFO, format="tfgw exporter: %(message)s")
    if nice:
        os.nice(nice)
    gc.set_threshold(20_000, 10, 10)  # as the log mode's exporter (tfgw.export.worker)
    return run_consumers(settings)
