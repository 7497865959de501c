"""Limits and budgets counted across gateway replicas, in NATS JetStream's key-value store.

With `[bus] kind = "nats"`, each limited key's slot (the same 1088 bytes as a slot of the local
table, `tfgw.policy.counters`, counted with the same arithmetic) is one value of the bucket
`TFGW_LIMITS`, under `k<BLAKE2b-128 of the key's name>`. A request reads the value, counts itself
in it, and writes it back only if nobody wrote it meanwhile (`update` with the revision it read:
optimistic concurrency, tried again on a conflict), so every replica counts on the same counts and
a limit holds exactly across them.

A request costs one round trip to NATS while this gateway is the last to have written the key (an
update with the revision of its own last write), three when another one wrote since (the update
refused, a get, the update); a refusal always reads the key first (bench/README.md "Shared
limits"). A gateway takes its requests of one key one at a time, so it never conflicts with
itself, and an answer's tokens and cost go with the key's next write, or alone within `FLUSH_S`,
off the request path: the `auth` span's remaining counts are those at admission.

While NATS cannot be reached (or its answer takes longer than `TIMEOUT_S`), requests are counted
in the local table instead, so limits hold per host, not across replicas, until it is back (it is
tried again every `RETRY_S`); what was counted locally is not added to the shared counts later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from tfgw.config import KeySettings
from tfgw.config_bus import BusSettings
from tfgw.errors import RateLimitError
from tfgw.policy.counters import Counts, Slot, key_id
from tfgw.policy.limits import DAY, MICRO, Admission, Limits, Rules, Usage, month_of

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

__all__ = ["BUCKET", "SharedLimits", "read_shared_usage"]

log = logging.getLogger("tfgw.limits")

BUCKET = "TFGW_LIMITS"
#: seconds one key-value operation may take before the request is counted locally instead
TIMEOUT_S = 0.5
#: seconds after a failure before NATS is tried again (requests are counted locally meanwhile)
RETRY_S = 1.0
#: conflicting writes of one count a request goes through before it is counted locally
ATTEMPTS = 50
#: seconds a settle waits for the key's next write before it is written alone
FLUSH_S = 0.05
#: requests of a key a gateway keeps counted ahead (reservations) for its next requests
RESERVE = 2
#: seconds a request counted ahead (a reservation) is kept for the next request before it is given
#: back; a request admitted on one counts from when it was counted, at most this much earlier
RESERVED_S = 1


class _Key:
    """One key's side of this gateway: its reads and writes one at a time (a gateway never
    conflicts with itself), and the settles not written yet (they go with the next write)."""

    __slots__ = ("flushing", "known", "lock", "pending", "reserved", "reserving")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.pending: list[tuple[int, int, int, int]] = []  # (second, estimate, tokens, micro-USD)
        self.flushing: asyncio.Task[None] | None = None
        #: the value and revision this gateway last wrote: written on again without a read, until
        #: another gateway's write makes that fail
        self.known: tuple[bytes, int] | None = None
        #: requests counted ahead (the counts right after each), for the next requests to use
        self.reserved: list[Counts] = []
        self.reserving: asyncio.Task[None] | None = None

    def take_reserved(self, now_s: int) -> Counts | None:
        """A request counted ahead, if there is one counted within `RESERVED_S` of `now_s`."""
        for i, counts in enumerate(self.reserved):
            if now_s - counts[0] <= RESERVED_S:  # an older one is given back by its own task
                return self.reserved.pop(i)
        return None


class SharedLimits:
    """`Limits.admit` and `settle` with the counts in NATS (`local` while it cannot be reached)."""

    def __init__(self, local: Limits, clock: Callable[[], float] = time.time) -> None:
        self.local = local
        self._clock = clock
        self._kv: KeyValue | None = None
        self._client: Client | None = None
        self._down_until = 0.0
        self._keys: dict[str, _Key] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def connect(self, bus: BusSettings) -> None:
        """Connect and bind the bucket (made when it is missing); until this returns, and while
        it fails, requests are counted locally. Meant to run as a task of its own."""
        import nats.js.errors

        from tfgw.bus.connect import connect

        self._client = await connect(bus, "limits")
        js = self._client.jetstream()
        try:
            self._kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await js.create_key_value(bucket=BUCKET, history=1, replicas=bus.replicas)

    @property
    def counting_shared(self) -> bool:
        """Whether requests are counted in NATS now (not before it answered, nor while it fails)."""
        return self._kv is not None and time.monotonic() >= self._down_until

    async def close(self) -> None:
        """Stop counting ahead, give back what is counted ahead and not used, write what is settled
        and not written yet, then disconnect."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        kv = self._kv
        for name, state in list(self._keys.items()):
            if kv is not None:
                for counts in state.reserved:
                    await self._release(kv, name, state, counts[0])
                state.reserved.clear()
                if state.pending:
                    await self._flush(name, state)
        if self._client is not None:
            await self._client.close()

    def _task(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def admit(self, key: KeySettings, estimated_tokens: int) -> Admission:
        local, kv = self.local, self._kv
        if kv is None or time.monotonic() < self._down_until:
            return local.admit(key, estimated_tokens)
        rules, state = local.rules_of(key), self._key(key.name)
        reserved = state.take_reserved(int(self._clock()))
        if reserved is not None:  # counted already: no round trip on the request path
            self._reserve(key, rules, state)
            return _shared(rules.admission(reserved, 0))
        now = self._clock()
        estimate = max(estimated_tokens, 0)
        try:
            async with state.lock:
                counts = await self._count(kv, key, state, rules, now, estimate)
        except RateLimitError:
            raise
        except Exception as exc:  # NATS down, slow, or refusing: count here meanwhile
            self._failed(exc)
            return local.admit(key, estimated_tokens)
        self._reserve(key, rules, state)
        return _shared(rules.admission(counts, estimate))

    async def _count(
        self, kv: KeyValue, key: KeySettings, state: _Key, rules: Rules, now: float, estimate: int
    ) -> Counts:
        """Count one request in the key's shared slot (its pending settles with it), under
        `state.lock`: the counts after it, or the refusal's `RateLimitError`."""
        now_s, month = int(now), self.local.month_of(now)
        for _ in range(ATTEMPTS):
            cached = state.known is not None
            slot, revision = await self._read(kv, key.name, state)
            settles = self._apply(slot, state, now_s, month)
            counts, taken = slot.count(0, now_s, now_s // DAY, month, estimate, rules.limits)
            if not taken and cached:  # refused on what this gateway last wrote: ask NATS
                state.known = None
                continue
            if not taken:
                if settles:
                    self._written(state, settles, await self._write(kv, key.name, slot, revision, state))
                raise self.local.refusal(rules, now, counts, estimate, functools.partial(slot.expiry, 0))
            if self._written(state, settles, await self._write(kv, key.name, slot, revision, state)):
                return counts
        raise TimeoutError(f"{ATTEMPTS} conflicting writes")

    # -- reservations: one request of a key counted ahead, for the next request to use ------------

    def _reserve(self, key: KeySettings, rules: Rules, state: _Key) -> None:
        """Count the key's next request ahead, off the request path (a task), unless one is
        counted already, or being counted, or the key has a tpm (its requests' tokens are not
        known ahead)."""
        if (
            key.tpm is None
            and len(state.reserved) < RESERVE
            and state.reserving is None
            and self._kv is not None
        ):
            state.reserving = self._task(self._reservation(key, rules, state))

    async def _reservation(self, key: KeySettings, rules: Rules, state: _Key) -> None:
        kv = self._kv
        assert kv is not None
        try:
            async with state.lock:
                counts = await self._count(kv, key, state, rules, self._clock(), 0)
            state.reserved.append(counts)
        except RateLimitError:
            return  # at the limit: the next request asks NATS itself
        except Exception as exc:
            self._failed(exc)
            return
        finally:
            state.reserving = None
        self._reserve(key, rules, state)  # the next one, while fewer than RESERVE are counted
        await asyncio.sleep(RESERVED_S)
        if counts in state.reserved:  # not used: given back, so that no other gateway waits for it
            state.reserved.remove(counts)
            await self._release(kv, key.name, state, counts[0])

    async def _release(self, kv: KeyValue, name: str, state: _Key, second: int) -> None:
        try:
            async with state.lock:
                await self._write_back(kv, name, state, lambda slot, now_s, month: slot.release(
                    0, now_s, now_s // DAY, month, second
                ))  # fmt: skip
        except Exception as exc:  # it leaves the window within a minute anyway
            self._failed(exc)

    def settle(self, admission: Admission, tokens: int, cost_usd: float) -> None:
        """As `Limits.settle`; a shared admission's tokens and cost are written with the key's next
        write, or within `FLUSH_S` (off the request path), its remaining counts left as they were
        at admission."""
        if not admission.shared:
            self.local.settle(admission, tokens, cost_usd)
            return
        if admission.settled:
            raise ValueError(f"the admission of key {admission.key!r} is settled already")
        admission.settled = True
        micro = round(cost_usd * MICRO) if cost_usd > 0 else 0
        state = self._key(admission.key)
        state.pending.append((admission.second, admission.estimated_tokens, tokens, micro))
        if state.flushing is None:
            state.flushing = self._task(self._flush_later(admission.key, state))

    async def _flush_later(self, name: str, state: _Key) -> None:
        try:
            await asyncio.sleep(FLUSH_S)
            await self._flush(name, state)
        finally:
            state.flushing = None

    async def _flush(self, name: str, state: _Key) -> None:
        kv = self._kv
        assert kv is not None
        try:
            async with state.lock:
                if state.pending and not await self._write_back(kv, name, state):
                    raise TimeoutError(f"{ATTEMPTS} conflicting writes")
        except Exception as exc:
            self._failed(exc)
            lost, state.pending[:] = len(state.pending), []
            log.warning("the tokens and cost of %d request(s) of key %r were not counted in NATS", lost, name)

    async def _write_back(
        self, kv: KeyValue, name: str, state: _Key, change: Callable[[Slot, int, int], Any] | None = None
    ) -> bool:
        """The key's pending settles (and `change`, given the slot, the second and the month)
        written into its shared slot, under `state.lock`; False after `ATTEMPTS` conflicts."""
        for _ in range(ATTEMPTS):
            now = self._clock()
            now_s, month = int(now), self.local.month_of(now)
            slot, revision = await self._read(kv, name, state)
            settles = self._apply(slot, state, now_s, month)
            if change is not None:
                change(slot, now_s, month)
            if self._written(state, settles, await self._write(kv, name, slot, revision, state)):
                return True
        return False

    def _key(self, name: str) -> _Key:
        state = self._keys.get(name)
        if state is None:
            state = self._keys[name] = _Key()
        return state

    @staticmethod
    def _apply(slot: Slot, state: _Key, now_s: int, month: int) -> int:
        """Settle the key's pending requests in `slot`; how many (taken off only once written)."""
        for second, estimate, tokens, micro in state.pending:
            slot.settled(0, now_s, now_s // DAY, month, second, estimate, tokens, micro)
        return len(state.pending)

    @staticmethod
    def _written(state: _Key, settles: int, written: bool) -> bool:
        if written and settles:
            del state.pending[:settles]
        return written

    async def _read(self, kv: KeyValue, key: str, state: _Key) -> tuple[Slot, int]:
        import nats.js.errors

        if state.known is not None:  # what this gateway wrote last: one round trip, not two
            return Slot(state.known[0]), state.known[1]
        try:
            entry = await asyncio.wait_for(kv.get(_kv_key(key)), TIMEOUT_S)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return Slot(), 0
        return Slot(entry.value), entry.revision or 0

    async def _write(self, kv: KeyValue, key: str, slot: Slot, revision: int, state: _Key) -> bool:
        import nats.js.errors

        data = bytes(slot.mm)
        state.known = None  # until this write is known to have been taken
        try:
            written = await asyncio.wait_for(kv.update(_kv_key(key), data, last=revision), TIMEOUT_S)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # another gateway wrote it first: read again
        state.known = data, written
        return True

    def _failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("limits are counted on this host while NATS cannot be used: %s", _describe(exc))
        self._down_until = time.monotonic() + RETRY_S


async def read_shared_usage(
    bus: BusSettings, names: Iterable[str], clock: Callable[[], float] = time.time, timeout: float = 3.0
) -> dict[str, Usage]:
    """What each key has used across the gateways, from NATS (`tfgw keys list` with a NATS bus):
    zeros for a key never counted there; `BusError` when NATS cannot be reached within `timeout`."""
    import nats.js.errors

    from tfgw.bus.connect import connect

    client = await connect(bus, "keys", reconnect=False, timeout=timeout)
    try:
        try:
            kv = await client.jetstream().key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            return {name: Usage() for name in names}
        now = clock()
        now_s, month = int(now), month_of(now)
        out = {}
        for name in names:
            try:
                entry = await asyncio.wait_for(kv.get(_kv_key(name)), timeout)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                out[name] = Usage()
                continue
            _, requests, tokens, day_spent, month_spent = Slot(entry.value).read(
                0, now_s, now_s // DAY, month
            )
            out[name] = Usage(requests, tokens, day_spent / MICRO, month_spent / MICRO)
        return out
    finally:
        await client.close()


def _shared(admission: Admission) -> Admission:
    admission.shared = True
    return admission


def _kv_key(name: str) -> str:
    return "k" + key_id(name).hex()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
