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
#: requests of a key a gateway keeps counted ahead (reservations) for its next requests: the
#: key's pace times RESERVE_LEAD_S, within RESERVE..RESERVE_MAX; doubled when a request finds none
#: left while more are being counted, halved when reservations are given back unused. Counted
#: again, in one write, once half of them are used.
RESERVE = 2
RESERVE_MAX = 256
RESERVE_LEAD_S = 0.1
#: seconds over which a key's pace (requests a second, on this gateway) is measured
PACE_S = 0.25
#: a batch counted ahead takes at most this share of what is left of the key's rpm, and none once
#: a budget is RESERVE_SPENT spent: near a limit requests are counted one by one
RESERVE_SHARE = 0.5
RESERVE_SPENT = 0.9
#: seconds a request counted ahead (a reservation) is kept for the next request before it is given
#: back; a request admitted on one counts from when it was counted, at most this much earlier
RESERVED_S = 1


class _Key:
    """One key's side of this gateway: its reads and writes one at a time (a gateway never
    conflicts with itself), and the settles not written yet (they go with the next write)."""

    __slots__ = (
        "depth",
        "flushing",
        "known",
        "lock",
        "pace_n",
        "pace_since",
        "pending",
        "reserved",
        "reserving",
    )

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
        #: how many to keep counted ahead (RESERVE..RESERVE_MAX, by the key's pace)
        self.depth = RESERVE
        self.pace_n, self.pace_since = 0, time.monotonic()

    def paced(self) -> None:
        """One more request of the key: every PACE_S, `depth` follows its pace."""
        self.pace_n += 1
        elapsed = time.monotonic() - self.pace_since
        if elapsed >= PACE_S:
            lead = int(self.pace_n / elapsed * RESERVE_LEAD_S)
            self.depth = min(max(lead, RESERVE), RESERVE_MAX)
            self.pace_n, self.pace_since = 0, time.monotonic()

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
                if state.reserved:
                    await self._release(kv, name, state, [counts[0] for counts in state.reserved])
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
        state.paced()
        reserved = state.take_reserved(int(self._clock()))
        if reserved is not None:  # counted already: no round trip on the request path
            self._reserve(key, rules, state)
            return _shared(Admission(rules, reserved, 0))
        if state.reserving is not None or state.lock.locked():  # faster than counted ahead: more
            state.depth = min(state.depth * 2, RESERVE_MAX)
        now = self._clock()
        estimate = max(estimated_tokens, 0)
        try:
            async with state.lock:
                reserved = state.take_reserved(int(now))  # counted ahead while this one waited
                if reserved is not None:
                    counts, estimate = reserved, 0
                else:
                    counts, ahead = await self._count(kv, key, state, rules, now, estimate)
                    self._hold(key, state, ahead)
        except RateLimitError:
            raise
        except Exception as exc:  # NATS down, slow, or refusing: count here meanwhile
            self._failed(exc)
            return local.admit(key, estimated_tokens)
        self._reserve(key, rules, state)
        return _shared(Admission(rules, counts, estimate))

    async def _count(
        self, kv: KeyValue, key: KeySettings, state: _Key, rules: Rules, now: float, estimate: int
    ) -> tuple[Counts, list[Counts]]:
        """Count one request in the key's shared slot (its pending settles with it, and the next
        requests counted ahead, `_ahead`, in the same write), under `state.lock`: the counts after
        it and those counted ahead, or the refusal's `RateLimitError`."""
        now_s, month = int(now), self.local.month_of(now)
        day = now_s // DAY
        want = state.depth - len(state.reserved) if key.tpm is None else 0
        for _ in range(ATTEMPTS):
            cached = state.known is not None
            slot, revision = await self._read(kv, key.name, state)
            settles = self._apply(slot, state, now_s, month)
            counts, taken = slot.count(0, now_s, day, month, estimate, rules.limits)
            if not taken and cached:  # refused on what this gateway last wrote: ask NATS
                state.known = None
                continue
            if not taken:
                if settles:
                    self._written(state, settles, await self._write(kv, key.name, slot, revision, state))
                raise self.local.refusal(rules, now, counts, estimate, functools.partial(slot.expiry, 0))
            ahead = _ahead(slot, rules, now_s, day, month, want)
            if self._written(state, settles, await self._write(kv, key.name, slot, revision, state)):
                return counts, ahead
        raise TimeoutError(f"{ATTEMPTS} conflicting writes")

    # -- reservations: a key's next requests counted ahead, in one write, for them to use ---------

    def _reserve(self, key: KeySettings, rules: Rules, state: _Key) -> None:
        """Count the key's next requests ahead, off the request path (a task), once no more than
        half of `depth` are left, unless some are being counted, or the key has a tpm (its
        requests' tokens are not known ahead)."""
        if (
            key.tpm is None
            and len(state.reserved) <= state.depth // 2
            and state.reserving is None
            and self._kv is not None
        ):
            state.reserving = self._task(self._reservation(key, rules, state))

    async def _reservation(self, key: KeySettings, rules: Rules, state: _Key) -> None:
        kv = self._kv
        assert kv is not None
        try:
            async with state.lock:
                batch = await self._count_ahead(kv, key.name, state, rules, state.depth - len(state.reserved))
                self._hold(key, state, batch)
        except Exception as exc:
            self._failed(exc)
            return
        finally:
            state.reserving = None
        if batch:  # none near a limit: the next request asks NATS itself
            self._reserve(key, rules, state)  # more, if they were used meanwhile

    def _hold(self, key: KeySettings, state: _Key, batch: list[Counts]) -> None:
        """Keep `batch` (counted ahead) for the key's next requests; what they have not used
        within `RESERVED_S` is given back, so that no other gateway waits for it."""
        if batch:
            state.reserved += batch
            self._task(self._give_back(key, state, batch))

    async def _give_back(self, key: KeySettings, state: _Key, batch: list[Counts]) -> None:
        await asyncio.sleep(RESERVED_S)
        held = {id(counts) for counts in state.reserved}  # by identity: equal counts may be others
        unused = [counts for counts in batch if id(counts) in held]
        if unused and self._kv is not None:  # fewer next time
            gone = {id(counts) for counts in unused}
            state.reserved = [counts for counts in state.reserved if id(counts) not in gone]
            state.depth = max(state.depth // 2, RESERVE)
            await self._release(self._kv, key.name, state, [counts[0] for counts in unused])

    async def _count_ahead(
        self, kv: KeyValue, name: str, state: _Key, rules: Rules, want: int
    ) -> list[Counts]:
        """Up to `want` requests of the key counted ahead in its shared slot in one write (its
        pending settles with them), under `state.lock`: the counts right after each; none, with
        nothing written, at a limit (`_ahead`)."""
        for _ in range(ATTEMPTS):
            now = self._clock()
            now_s, month = int(now), self.local.month_of(now)
            slot, revision = await self._read(kv, name, state)
            settles = self._apply(slot, state, now_s, month)
            batch = _ahead(slot, rules, now_s, now_s // DAY, month, want)
            if not batch:
                return []  # the settles go with the next write, or alone (`settle`)
            if self._written(state, settles, await self._write(kv, name, slot, revision, state)):
                return batch
        raise TimeoutError(f"{ATTEMPTS} conflicting writes")

    async def _release(self, kv: KeyValue, name: str, state: _Key, seconds: list[int]) -> None:
        def release(slot: Slot, now_s: int, month: int) -> None:
            for second in seconds:
                slot.release(0, now_s, now_s // DAY, month, second)

        try:
            async with state.lock:
                await self._write_back(kv, name, state, release)
        except Exception as exc:  # they leave the window within a minute anyway
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


def _ahead(slot: Slot, rules: Rules, now_s: int, day: int, month: int, want: int) -> list[Counts]:
    """Up to `want` requests counted in `slot` ahead of their arrival (no tokens): the counts
    right after each. At most `RESERVE_SHARE` of what is left of the rpm, none once a budget is
    `RESERVE_SPENT` spent: near a limit requests are counted one by one."""
    rpm, _, day_budget, month_budget = rules.limits
    _, requests, _, day_spent, month_spent = slot.read(0, now_s, day, month)
    if want <= 0 or day_spent >= day_budget * RESERVE_SPENT or month_spent >= month_budget * RESERVE_SPENT:
        return []
    batch = []
    for _ in range(min(want, int((rpm - requests) * RESERVE_SHARE))):
        counts, taken = slot.count(0, now_s, day, month, 0, rules.limits)
        if not taken:
            break
        batch.append(counts)
    return batch


def _shared(admission: Admission) -> Admission:
    admission.shared = True
    return admission


def _kv_key(name: str) -> str:
    return "k" + key_id(name).hex()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
