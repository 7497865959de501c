"""The table the limits count in: one file, `<state dir>/limits.bin`, that every worker maps.

`tfgw serve` opens the table in the parent before it forks its workers, so they all map the same
pages (`mmap`, MAP_SHARED, file-backed: a process that opens the file later, `tfgw keys list` or a
second gateway, sees the same pages too). What the counts mean, the rules, is `tfgw.policy.limits`;
this module is the stored format, the lock and the arithmetic of the window. A request's two
changes are one hold of the lock each: `take` compares the slot with the key's thresholds and counts
the request only if it is under all of them (the comparison is here so that no other process can
count in between), and `settle` puts its real tokens and cost in.

Format, version 1, little-endian (never change what a field of a version means; a new layout is a
new version, and a reader of another version starts a fresh table):

    header, 64 bytes: magic b"TFGWLIM\\0", u32 version, u32 header size (64), u32 slot size (1088),
                      u32 capacity (the number of slots), zeros
    capacity slots of 1088 bytes each:
        16 bytes  the slot's key: BLAKE2b-128 of the key's name; zeros: empty; 0xff * 16: freed
        i64       second: the newest Unix second the window has been moved to
        i64 i64   requests and tokens in the window (the sum of its buckets)
        i64 i64   day (days since the epoch, UTC) and the micro-USD spent in it
        i64 i64   month (year * 12 + month - 1, UTC) and the micro-USD spent in it
        60 * (i64 requests, i64 tokens): the window, one bucket a second; second s counts in
                  bucket s % 60 and leaves the window when the clock reaches s + 60
        zeros to the slot's end

A slot is found by open addressing (start at the key mod capacity, step by one; a lookup stops at an
empty slot, skips freed ones). Slots are never freed while they count anything: when the table is
full, `reclaim` frees the slots whose window is empty and whose month is over, which loses nothing.

A file that is not such a table (another magic, version, slot size or length) is moved aside to
`limits.bin.bad` and a fresh table made, with one warning; it never stops the gateway.

The lock is `flock(LOCK_EX)` on the file (`LOCK_SH` for a reader), taken for each change and
dropped straight after; a forked child re-opens the file for a lock of its own (an `flock` belongs
to an open file description, which fork shares). Threads of one process would share that lock, so a
table is used by one thread of a process (a worker's event loop), as the gateway does.

Why `flock` and not a `multiprocessing.Lock` made before the fork (measured on the project's 2-core
machine, uncontended lock and unlock: `multiprocessing.Lock` 0.06-0.1 us, `flock` 0.6-1.1 us,
`lockf` 0.9-1.5 us): the kernel drops an `flock` when its holder dies, where a worker killed holding
a semaphore would stop every other worker for good; a second `tfgw serve` on the same state dir and
`tfgw keys list` can take it too, so two gateways sharing a state dir count together, safely,
instead of one having to refuse to start; and it needs nothing handed from the parent to the
workers. Its two locks are about a sixth of what an admit and its settle cost
(`tfgw.policy.limits`).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import logging
import mmap
import os
import struct
import weakref
from pathlib import Path
from types import TracebackType

from tfgw.errors import ConfigError, TfgwError

__all__ = [
    "CAPACITY",
    "FILE_NAME",
    "VERSION",
    "WINDOW",
    "CounterTable",
    "Slot",
    "key_id",
    "table_path",
]

log = logging.getLogger("tfgw.limits")

FILE_NAME = "limits.bin"
MAGIC = b"TFGWLIM\x00"
VERSION = 1
#: seconds in the window (and buckets in a slot's ring)
WINDOW = 60
#: slots a new table has: keys counted at once, with the idle ones reclaimed when it fills
CAPACITY = 4096

HEADER = struct.Struct("<8sIIII")
HEADER_SIZE = 64
HEAD = struct.Struct("<16s7q")  # key, then COUNTS
COUNTS = struct.Struct("<7q")  # second, requests, tokens, day, day spent, month, month spent
WINDOW_COUNTS = struct.Struct("<3q")  # second, requests, tokens
SPEND = struct.Struct("<4q")  # day, day spent, month, month spent
BUCKET = struct.Struct("<2q")  # requests, tokens
BUCKET_SIZE = BUCKET.size
RING = HEAD.size  # where a slot's buckets start
RING_SIZE = WINDOW * BUCKET_SIZE
SLOT_SIZE = 1088  # HEAD (72) + 60 buckets (960), padded to 17 cache lines
EMPTY = bytes(16)
FREED = b"\xff" * 16
_COUNTS_AT, _SPEND_AT = 16, 40  # where COUNTS and SPEND start in a slot

#: (second, requests, tokens, micro-USD spent today, this month): a slot as `advance` reads it
Counts = tuple[int, int, int, int, int]
#: what `take` compares with: (rpm, tpm, micro-USD a day, a month)
Thresholds = tuple[int, int, int, int]
#: what `take` returns: the slot's offset, its counts, whether the request was counted
Taken = tuple[int, Counts, bool]


def table_path(state_dir: Path) -> Path:
    """The table's file in a state dir (`TracingSettings.state_path(...)`)."""
    return state_dir / FILE_NAME


@functools.lru_cache(maxsize=4096)
def key_id(name: str) -> bytes:
    """A slot's key: BLAKE2b-128 of the key's name."""
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


class _Counting:
    """The arithmetic of one slot at `offset` of `mm`: the window moved, a request counted, one
    settled. `CounterTable` runs it on the shared table under its lock; `Slot` on a copy of one
    slot (`tfgw.policy.shared` keeps the slots of keys counted across gateways in NATS)."""

    mm: mmap.mmap | bytearray

    def count(
        self, offset: int, now_s: int, day: int, month: int, tokens: int, limits: Thresholds
    ) -> tuple[Counts, bool]:
        """`take` at `offset`: the counts (after the request if it was counted, as found if not)
        and whether it was. The slot is read once (`advance`'s reading, inline: every request)."""
        mm, at = self.mm, offset + _COUNTS_AT
        second, requests, in_tokens, slot_day, day_spent, slot_month, month_spent = COUNTS.unpack_from(mm, at)
        if second != now_s:
            second, requests, in_tokens = self._moved(offset, second, now_s, requests, in_tokens)
        if slot_day != day:
            day_spent = 0
        if slot_month != month:
            month_spent = 0
        rpm, tpm, day_budget, month_budget = limits
        if (
            requests >= rpm
            or (in_tokens > 0 and in_tokens + tokens > tpm)
            or day_spent >= day_budget
            or month_spent >= month_budget
        ):
            return (second, requests, in_tokens, day_spent, month_spent), False
        bucket = offset + RING + second % WINDOW * BUCKET_SIZE
        bucket_requests, bucket_tokens = BUCKET.unpack_from(mm, bucket)
        BUCKET.pack_into(mm, bucket, bucket_requests + 1, bucket_tokens + tokens)
        requests, in_tokens = requests + 1, in_tokens + tokens
        WINDOW_COUNTS.pack_into(mm, at, second, requests, in_tokens)
        return (second, requests, in_tokens, day_spent, month_spent), True

    def settled(
        self,
        offset: int,
        now_s: int,
        day: int,
        month: int,
        taken: int,
        estimate: int,
        tokens: int,
        micro_usd: int,
    ) -> Counts:
        """`settle` at `offset`: the counts after. While second `taken` is in the window the
        estimate counted there becomes `tokens`, after it `tokens` count in the newest second; a
        bucket never goes below zero."""
        mm, at = self.mm, offset + _COUNTS_AT
        second, requests, in_tokens, slot_day, day_spent, slot_month, month_spent = COUNTS.unpack_from(mm, at)
        if second != now_s:
            second, requests, in_tokens = self._moved(offset, second, now_s, requests, in_tokens)
        if second - WINDOW < taken <= second:
            change = tokens - estimate
        else:
            change, taken = tokens, second
        if change:  # not when the estimate was right, or a failed call's zero estimate
            bucket = offset + RING + taken % WINDOW * BUCKET_SIZE
            bucket_requests, old = BUCKET.unpack_from(mm, bucket)
            new = old + change if old + change > 0 else 0
            BUCKET.pack_into(mm, bucket, bucket_requests, new)
            in_tokens += new - old
            WINDOW_COUNTS.pack_into(mm, at, second, requests, in_tokens)
        if slot_day != day:
            day_spent = 0
        if slot_month != month:
            month_spent = 0
        if micro_usd:
            day_spent, month_spent = day_spent + micro_usd, month_spent + micro_usd
            SPEND.pack_into(mm, offset + _SPEND_AT, day, day_spent, month, month_spent)
        return second, requests, in_tokens, day_spent, month_spent

    def release(self, offset: int, now_s: int, day: int, month: int, second: int) -> Counts:
        """Take back one request counted in `second` that was never made (a reservation of
        `tfgw.policy.shared`), if that second is still in the window; the counts after."""
        mm = self.mm
        counts = self.advance(offset, now_s, day, month)
        newest, requests, tokens, day_spent, month_spent = counts
        if not newest - WINDOW < second <= newest:
            return counts
        bucket = offset + RING + second % WINDOW * BUCKET_SIZE
        bucket_requests, bucket_tokens = BUCKET.unpack_from(mm, bucket)
        if bucket_requests <= 0:
            return counts
        BUCKET.pack_into(mm, bucket, bucket_requests - 1, bucket_tokens)
        WINDOW_COUNTS.pack_into(mm, offset + _COUNTS_AT, newest, requests - 1, tokens)
        return newest, requests - 1, tokens, day_spent, month_spent

    def advance(self, offset: int, now_s: int, day: int, month: int) -> Counts:
        """Move the slot's window to `now_s`, emptying the buckets that left it, and read it: the
        second to count in, the requests and tokens in the window, the micro-USD spent in `day` and
        in `month`."""
        second, requests, tokens, slot_day, day_spent, slot_month, month_spent = COUNTS.unpack_from(
            self.mm, offset + _COUNTS_AT
        )
        if second != now_s:
            second, requests, tokens = self._moved(offset, second, now_s, requests, tokens)
        return (
            second,
            requests,
            tokens,
            day_spent if slot_day == day else 0,
            month_spent if slot_month == month else 0,
        )

    def _moved(
        self, offset: int, second: int, now_s: int, requests: int, tokens: int
    ) -> tuple[int, int, int]:
        """The window of a slot last moved to `second`, moved to `now_s` (and written): its newest
        second, requests and tokens. A clock that went back less than a window counts in the
        newest second; further back (or a second from a damaged file far ahead), the window
        starts again."""
        gap = now_s - second
        if -WINDOW < gap < 0:
            return second, requests, tokens
        if gap >= WINDOW or gap < 0:
            ring = offset + RING
            self.mm[ring : ring + RING_SIZE] = bytes(RING_SIZE)
            requests = tokens = 0
        else:
            requests, tokens = self._expire(offset, second, now_s, requests, tokens)
        WINDOW_COUNTS.pack_into(self.mm, offset + _COUNTS_AT, now_s, requests, tokens)
        return now_s, requests, tokens

    def _expire(self, offset: int, second: int, now_s: int, requests: int, tokens: int) -> tuple[int, int]:
        for s in range(second + 1, now_s + 1):
            bucket = offset + RING + (s % WINDOW) * BUCKET.size
            gone_requests, gone_tokens = BUCKET.unpack_from(self.mm, bucket)
            if gone_requests or gone_tokens:
                requests, tokens = requests - gone_requests, tokens - gone_tokens
                BUCKET.pack_into(self.mm, bucket, 0, 0)
        return max(requests, 0), max(tokens, 0)

    def expiry(self, offset: int, second: int, amount: int, column: int) -> int:
        """The Unix second at which `amount` requests (`column` 0) or tokens (1) will have left the
        window (advanced to `second`)."""
        gone = 0
        for s in range(second - WINDOW + 1, second + 1):
            gone += BUCKET.unpack_from(self.mm, offset + RING + (s % WINDOW) * BUCKET.size)[column]
            if gone >= amount:
                return s + WINDOW
        return second + WINDOW

    def read(self, offset: int, now_s: int, day: int, month: int) -> Counts:
        """What `advance` returns, without moving the window (for readers)."""
        second, _, _, slot_day, day_spent, slot_month, month_spent = COUNTS.unpack_from(
            self.mm, offset + _COUNTS_AT
        )
        requests = tokens = 0
        if -WINDOW < now_s - second < WINDOW:
            for s in range(max(second, now_s) - WINDOW + 1, second + 1):
                r, t = BUCKET.unpack_from(self.mm, offset + RING + (s % WINDOW) * BUCKET.size)
                requests, tokens = requests + r, tokens + t
        day_spent = day_spent if slot_day == day else 0
        return second, requests, tokens, day_spent, month_spent if slot_month == month else 0


class Slot(_Counting):
    """One key's slot as bytes of its own (`SLOT_SIZE`), counted with the table's arithmetic at
    offset 0: what `tfgw.policy.shared` reads from and writes to NATS's key-value store."""

    __slots__ = ("mm",)

    def __init__(self, data: bytes | None = None) -> None:
        self.mm = bytearray(data) if data is not None and len(data) == SLOT_SIZE else bytearray(SLOT_SIZE)


class CounterTable(_Counting):
    """The mapped table. `take` and `settle`, the two changes a request makes, hold the lock
    themselves; around every other method, `with table:` takes it. Offsets are a slot's byte
    offset in the file."""

    mm: mmap.mmap

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, *, writable: bool) -> None:
        self.path, self._fd, self.mm, self.writable = path, fd, mm, writable
        self.capacity = HEADER.unpack_from(mm, 0)[4]
        self._lock_mode = fcntl.LOCK_EX if writable else fcntl.LOCK_SH
        self._slots: dict[str, tuple[bytes, int]] = {}  # name: (key, offset), checked at each use
        os.register_at_fork(after_in_child=functools.partial(_reopen_in_child, weakref.ref(self)))

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, capacity: int = CAPACITY) -> CounterTable:
        """Open the table for counting, making it (or a fresh one, for a file that is not a table).
        A state dir that cannot hold it is a `ConfigError` naming `[server] state_dir`."""
        try:
            return cls._open(path, capacity)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename and exc.filename != str(path) else ""
            message = f"cannot open the limits table: {where}{exc.strerror or exc}"
            raise ConfigError(str(path), message, key="server.state_dir") from exc

    @classmethod
    def _open(cls, path: Path, capacity: int) -> CounterTable:
        path.parent.mkdir(parents=True, exist_ok=True)
        size = HEADER_SIZE + capacity * SLOT_SIZE
        for _ in range(8):  # each pass either opens the table or moves a bad file aside
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _is_the_file(fd, path):
                    continue  # replaced while we waited for the lock
                if os.fstat(fd).st_size == 0:
                    os.ftruncate(fd, size)
                    os.pwrite(fd, HEADER.pack(MAGIC, VERSION, HEADER_SIZE, SLOT_SIZE, capacity), 0)
                elif (problem := _problem(fd)) is not None:
                    _move_aside(path, problem)
                    continue
                mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                fcntl.flock(fd, fcntl.LOCK_UN)
                table, fd = cls(path, fd, mm, writable=True), -1
                return table
            finally:
                if fd >= 0:
                    os.close(fd)
        raise OSError(errno.EAGAIN, "the limits table kept being replaced while it was opened", str(path))

    @classmethod
    def open_existing(cls, path: Path) -> CounterTable | None:
        """Open the table to read it, if there is one (None: no file, or not a table)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_size == 0:
                return None  # being made
            if (problem := _problem(fd)) is not None:
                log.warning("%s: %s; read as zeros", path, problem)
                return None
            mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
            fcntl.flock(fd, fcntl.LOCK_UN)
            table, fd = cls(path, fd, mm, writable=False), -1
            return table
        finally:
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        if self._fd >= 0:
            self.mm.close()
            os.close(self._fd)
            self._fd = -1

    def _reopen(self) -> None:
        """In a forked child: a lock of its own (the inherited descriptor's lock is the parent's)."""
        flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            fd = os.open(f"/proc/self/fd/{self._fd}", flags)  # the same file even if since replaced
        except OSError:
            fd = os.open(self.path, flags)
        os.close(self._fd)
        self._fd = fd

    # -- the lock ----------------------------------------------------------------------------------

    def __enter__(self) -> CounterTable:
        fcntl.flock(self._fd, self._lock_mode)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- slots -------------------------------------------------------------------------------------

    def slot(self, name: str, *, create: bool = True) -> int | None:
        """The offset of `name`'s slot, made (zeroed) if there is none and `create`; None when there
        is none, or the table is full (see `reclaim`)."""
        known = self._slots.get(name)
        if known is not None and self.mm[known[1] : known[1] + 16] == known[0]:
            return known[1]
        ident = key_id(name)
        offset = self._probe(ident, create)
        if offset is not None:
            self._slots[name] = (ident, offset)
        return offset

    def _probe(self, ident: bytes, create: bool) -> int | None:
        index, freed = int.from_bytes(ident[:8], "little") % self.capacity, None
        for _ in range(self.capacity):
            offset = HEADER_SIZE + index * SLOT_SIZE
            found = self.mm[offset : offset + 16]
            if found == ident:
                return offset
            if found == EMPTY:
                return self._make(freed if freed is not None else offset, ident) if create else None
            if found == FREED and freed is None:
                freed = offset
            index = (index + 1) % self.capacity
        return self._make(freed, ident) if create and freed is not None else None

    def _make(self, offset: int, ident: bytes) -> int:
        self.mm[offset : offset + SLOT_SIZE] = bytes(SLOT_SIZE)
        self.mm[offset : offset + 16] = ident
        return offset

    def reclaim(self, now_s: int, month: int) -> int:
        """Free the slots that count nothing at `now_s` (window empty, month over); how many."""
        freed = 0
        for index in range(self.capacity):
            offset = HEADER_SIZE + index * SLOT_SIZE
            ident, second, _, _, _, _, slot_month, _ = HEAD.unpack_from(self.mm, offset)
            if ident not in (EMPTY, FREED) and second <= now_s - WINDOW and slot_month != month:
                self.mm[offset : offset + 16] = FREED
                freed += 1
        self._slots.clear()
        return freed

    # -- counting ----------------------------------------------------------------------------------

    def take(self, name: str, now_s: int, day: int, month: int, tokens: int, limits: Thresholds) -> Taken:
        """Count a request of `tokens` (estimated) for `name` at `now_s` if its slot is under each
        of `limits`, in one hold of the lock (the rules of `tfgw.policy.limits`: fewer requests than
        rpm; no tokens, or tokens plus these within tpm; less spent than each budget). Returns the
        slot's offset, its counts (after the request if it was counted, as found if not), and
        whether it was."""
        fd, mm = self._fd, self.mm
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            known = self._slots.get(name)  # `slot`'s first look, inline: this runs for every request
            if known is not None and mm[known[1] : known[1] + 16] == known[0]:
                offset = known[1]
            else:
                offset = self.slot(name) or self.claim(name, now_s, month)
            counts, taken = self.count(offset, now_s, day, month, tokens, limits)
            return offset, counts, taken
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def settle(
        self,
        name: str,
        now_s: int,
        day: int,
        month: int,
        taken: int,
        estimate: int,
        tokens: int,
        micro_usd: int,
    ) -> Counts:
        """Settle a request `take` counted in second `taken` with `estimate` tokens: while that
        second is in the window its estimate becomes `tokens`, after, `tokens` count now; and
        `micro_usd` is added to `day` and `month`. Returns the counts after."""
        fd, mm = self._fd, self.mm
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            known = self._slots.get(name)
            if known is not None and mm[known[1] : known[1] + 16] == known[0]:
                offset = known[1]
            else:
                offset = self.slot(name) or self.claim(name, now_s, month)
            return self.settled(offset, now_s, day, month, taken, estimate, tokens, micro_usd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def claim(self, name: str, now_s: int, month: int) -> int:
        """`name`'s slot, made room for by `reclaim` if the table is full (the lock held); raises
        when no slot can be freed."""
        offset = self.slot(name)
        if offset is None:
            self.reclaim(now_s, month)
            offset = self.slot(name)
        if offset is None:
            busy = f"{self.capacity} keys counting this minute or this month"
            raise TfgwError(f"{self.path}: the limits table is full ({busy})")
        return offset


def _reopen_in_child(ref: weakref.ref[CounterTable]) -> None:
    table = ref()
    if table is not None and table._fd >= 0:
        table._reopen()


def _is_the_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _problem(fd: int) -> str | None:
    """Why the open file is not a table this code can count in; None when it is one."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, HEADER.size, 0)
    if len(head) < HEADER.size or head[:8] != MAGIC:
        return "not a tfgw limits table"
    _, version, header_size, slot_size, capacity = HEADER.unpack(head)
    if version != VERSION:
        return f"a limits table of version {version} (this tfgw reads version {VERSION})"
    if (header_size, slot_size) != (HEADER_SIZE, SLOT_SIZE) or capacity <= 0:
        return f"a damaged limits table header (header {header_size}, slot {slot_size}, {capacity} slots)"
    if size != HEADER_SIZE + capacity * SLOT_SIZE:
        return f"a limits table of the wrong length ({size} bytes for {capacity} slots)"
    return None


def _move_aside(path: Path, problem: str) -> None:
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    log.warning("%s: %s; moved it to %s and started a fresh table", path, problem, bad.name)
