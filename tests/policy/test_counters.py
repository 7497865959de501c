"""The shared table: its stored format, slots, the window's arithmetic, the lock across processes,
and what a file that is not a table does."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfgw.policy.counters import CounterTable, key_id, table_path

T = 1_760_000_000  # a Unix second; T % 60 == 20
DAY, MONTH = T // 86_400, 2025 * 12 + 9


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return table_path(tmp_path / "state")


@pytest.fixture
def table(path: Path) -> Iterator[CounterTable]:
    made = CounterTable.open(path, capacity=8)
    yield made
    made.close()


def test_a_new_table_is_a_versioned_header_and_empty_slots(path: Path, table: CounterTable) -> None:
    data = path.read_bytes()
    assert path.name == "limits.bin"
    assert len(data) == 64 + 8 * 1088
    assert data[:64] == b"TFGWLIM\x00" + struct.pack("<IIII", 1, 64, 1088, 8) + bytes(40)
    assert data[64:] == bytes(8 * 1088)


def test_a_slot_is_found_by_name_and_made_once(path: Path, table: CounterTable) -> None:
    with table:
        first, second = table.slot("ci"), table.slot("batch")
        assert table.slot("ci", create=False) == first
        assert table.slot("unknown", create=False) is None
    assert first != second
    assert first is not None and second is not None
    data = path.read_bytes()
    assert (data[first : first + 16], data[second : second + 16]) == (key_id("ci"), key_id("batch"))
    again = CounterTable.open_existing(path)
    assert again is not None
    with again:
        assert (again.slot("ci", create=False), again.slot("batch", create=False)) == (first, second)
    again.close()


def test_a_full_table_has_no_slot_until_reclaim_frees_the_idle_ones(path: Path) -> None:
    table = CounterTable.open(path, capacity=2)
    with table:
        a, b = table.slot("a"), table.slot("b")
        assert a is not None and b is not None
        table.count(a, table.advance(a, T, DAY, MONTH), T, 1, 0)  # a counts; b is idle
        assert table.slot("c") is None
        assert table.reclaim(T, MONTH) == 1
        assert table.slot("c") == b
        assert table.slot("a") == a
        assert table.reclaim(T + 60, MONTH + 1) == 2  # a's window and month are over
        assert table.slot("d") is not None
    table.close()


def test_the_window_holds_a_second_for_60_seconds(table: CounterTable) -> None:
    with table:
        offset = table.slot("ci")
        assert offset is not None
        counts = table.advance(offset, T, DAY, MONTH)
        assert counts == (T, 0, 0, 0, 0)
        assert table.count(offset, counts, T, 1, 100) == (1, 100)
        counts = table.advance(offset, T + 30, DAY, MONTH)
        assert table.count(offset, counts, T + 30, 2, 50) == (3, 150)
        assert table.advance(offset, T + 59, DAY, MONTH) == (T + 59, 3, 150, 0, 0)
        assert table.expiry(offset, T + 59, 1, 0) == T + 60  # one request leaves at T + 60
        assert table.expiry(offset, T + 59, 150, 1) == T + 90  # 150 tokens have left at T + 90
        assert table.advance(offset, T + 60, DAY, MONTH) == (T + 60, 2, 50, 0, 0)
        assert table.read(offset, T + 89, DAY, MONTH) == (T + 60, 2, 50, 0, 0)
        assert table.read(offset, T + 90, DAY, MONTH) == (T + 60, 0, 0, 0, 0)
        assert table.advance(offset, T + 90, DAY, MONTH) == (T + 90, 0, 0, 0, 0)


def test_a_clock_that_goes_back_counts_in_the_newest_second_or_restarts_the_window(
    table: CounterTable,
) -> None:
    with table:
        offset = table.slot("ci")
        assert offset is not None
        counts = table.advance(offset, T, DAY, MONTH)
        table.count(offset, counts, counts[0], 1, 10)
        assert table.advance(offset, T - 5, DAY, MONTH) == (T, 1, 10, 0, 0)
        assert table.advance(offset, T - 60, DAY, MONTH) == (T - 60, 0, 0, 0, 0)


def test_a_bucket_never_goes_below_zero(table: CounterTable) -> None:
    with table:
        offset = table.slot("ci")
        assert offset is not None
        counts = table.advance(offset, T, DAY, MONTH)
        assert table.count(offset, counts, T, 1, 100) == (1, 100)
        counts = table.advance(offset, T, DAY, MONTH)
        assert table.count(offset, counts, T, 0, -400) == (1, 0)


def test_spend_counts_per_day_and_month(table: CounterTable) -> None:
    with table:
        offset = table.slot("ci")
        assert offset is not None
        counts = table.advance(offset, T, DAY, MONTH)
        assert table.spend(offset, counts, DAY, MONTH, 1_250_000) == (1_250_000, 1_250_000)
        counts = table.advance(offset, T, DAY, MONTH)
        assert table.spend(offset, counts, DAY, MONTH, 5) == (1_250_005, 1_250_005)
        assert table.advance(offset, T + 86_400, DAY + 1, MONTH) == (T + 86_400, 0, 0, 0, 1_250_005)
        assert table.read(offset, T, DAY, MONTH + 1)[3:] == (1_250_005, 0)


HEADER = b"TFGWLIM\x00" + struct.pack("<IIII", 1, 64, 1088, 8)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00" * 10, "not a tfgw limits table"),
        (b"PK\x03\x04" + bytes(5000), "not a tfgw limits table"),
        (
            b"TFGWLIM\x00" + struct.pack("<IIII", 2, 64, 1088, 8) + bytes(40 + 8 * 1088),
            "a limits table of version 2 (this tfgw reads version 1)",
        ),
        (
            b"TFGWLIM\x00" + struct.pack("<IIII", 1, 64, 512, 8) + bytes(40 + 8 * 1088),
            "a damaged limits table header (header 64, slot 512, 8 slots)",
        ),
        (HEADER + bytes(40 + 1088), "a limits table of the wrong length (1152 bytes for 8 slots)"),
    ],
    ids=["short", "foreign", "version", "header", "truncated"],
)
def test_a_file_that_is_not_a_table_is_moved_aside_and_a_fresh_one_made(
    path: Path, content: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tfgw.limits"):
        assert CounterTable.open_existing(path) is None
        table = CounterTable.open(path, capacity=4)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: {problem}; counting from zero",
        f"{path}: {problem}; moved it to limits.bin.bad and started a fresh table",
    ]
    assert path.with_name("limits.bin.bad").read_bytes() == content
    assert len(path.read_bytes()) == 64 + 4 * 1088
    with table:
        assert table.slot("ci") is not None
    table.close()


def test_an_empty_file_is_made_a_table_without_a_word(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    assert CounterTable.open_existing(path) is None
    table = CounterTable.open(path, capacity=4)
    assert (caplog.records, len(path.read_bytes())) == ([], 64 + 4 * 1088)
    table.close()


def test_the_file_keeps_the_counts_for_the_next_opener(path: Path) -> None:
    first = CounterTable.open(path)
    with first:
        offset = first.slot("ci")
        assert offset is not None
        first.count(offset, first.advance(offset, T, DAY, MONTH), T, 3, 30)
    first.close()
    reader = CounterTable.open_existing(path)
    assert reader is not None and not reader.writable
    with reader:
        offset = reader.slot("ci", create=False)
        assert offset is not None
        assert reader.read(offset, T + 1, DAY, MONTH) == (T, 3, 30, 0, 0)
    reader.close()


def _try_lock(table: CounterTable, answers: multiprocessing.Queue[str]) -> None:
    try:
        fcntl.flock(table._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        answers.put("locked")
    except BlockingIOError:
        answers.put("refused")


def test_a_forked_child_has_a_lock_of_its_own(table: CounterTable) -> None:
    """An flock belongs to an open file description, which fork shares: without a re-open the
    child would think it held the parent's lock."""
    ctx = multiprocessing.get_context("fork")
    answers: multiprocessing.Queue[str] = ctx.Queue()
    with table:
        child = ctx.Process(target=_try_lock, args=(table, answers))
        child.start()
        answer = answers.get(timeout=30)
        child.join(timeout=10)
    assert (answer, child.exitcode) == ("refused", 0)
    child = ctx.Process(target=_try_lock, args=(table, answers))
    child.start()
    assert answers.get(timeout=30) == "locked"
    child.join(timeout=10)


def test_two_tables_on_one_file_lock_each_other_out(path: Path, table: CounterTable) -> None:
    """A second gateway on the same state dir counts in the same table, under the same lock."""
    second = CounterTable.open(path)
    fd = os.open(path, os.O_RDONLY)
    with table:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        offset = table.slot("ci")
        assert offset is not None
        table.count(offset, table.advance(offset, T, DAY, MONTH), T, 1, 0)
    with second:
        assert second.slot("ci", create=False) == offset
        assert second.advance(offset, T, DAY, MONTH) == (T, 1, 0, 0, 0)
    os.close(fd)
    second.close()
