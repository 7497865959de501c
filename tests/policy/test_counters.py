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

from tfgw.errors import ConfigError, TfgwError
from tfgw.policy.counters import CounterTable, key_id, table_path

T = 1_760_000_000  # a Unix second; T % 60 == 20
DAY, MONTH = T // 86_400, 2025 * 12 + 9
NO_LIMITS = (1 << 62,) * 4


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
    table.take("a", T, DAY, MONTH, 0, NO_LIMITS)  # a counts; b is idle
    with table:
        a, b = table.slot("a"), table.slot("b")
        assert table.slot("c") is None
        assert table.reclaim(T, MONTH) == 1
        assert table.slot("c") == b
    table.take("c", T, DAY, MONTH, 0, NO_LIMITS)  # both count
    with table:
        with pytest.raises(TfgwError, match=r"limits.bin: the limits table is full \(2 keys counting"):
            table.claim("d", T, MONTH)
        assert table.reclaim(T + 60, MONTH + 1) == 2  # their windows and month are over
        assert table.claim("d", T + 60, MONTH + 1) in (a, b)
    table.close()


def test_take_counts_a_request_only_under_every_limit(table: CounterTable) -> None:
    limits = (2, 100, 1_000, 2_000)  # rpm, tpm, micro-USD a day, a month
    assert table.take("ci", T, DAY, MONTH, 60, limits)[1:] == ((T, 1, 60, 0, 0), True)
    assert table.take("ci", T, DAY, MONTH, 50, limits)[1:] == ((T, 1, 60, 0, 0), False)  # tpm
    assert table.take("ci", T, DAY, MONTH, 40, limits)[1:] == ((T, 2, 100, 0, 0), True)
    assert table.take("ci", T, DAY, MONTH, 0, limits)[1:] == ((T, 2, 100, 0, 0), False)  # rpm
    assert table.take("ci", T + 60, DAY, MONTH, 500, limits)[1:] == ((T + 60, 1, 500, 0, 0), True)
    table.settle("ci", T + 60, DAY, MONTH, T + 60, 500, 0, 1_000)
    assert table.take("ci", T + 120, DAY, MONTH, 0, limits)[1:] == ((T + 120, 0, 0, 1_000, 1_000), False)
    table.settle("ci", T + 120, DAY + 1, MONTH, T + 120, 0, 0, 1_000)
    assert table.take("ci", T + 120, DAY + 1, MONTH, 0, limits)[1:] == ((T + 120, 0, 0, 1_000, 2_000), False)
    assert table.take("ci", T + 120, DAY + 2, MONTH + 1, 0, limits)[1:] == ((T + 120, 1, 0, 0, 0), True)


def test_the_window_holds_a_second_for_60_seconds(table: CounterTable) -> None:
    assert table.take("ci", T, DAY, MONTH, 100, NO_LIMITS)[1:] == ((T, 1, 100, 0, 0), True)
    assert table.take("ci", T + 30, DAY, MONTH, 50, NO_LIMITS)[1:] == ((T + 30, 2, 150, 0, 0), True)
    assert table.take("ci", T + 30, DAY, MONTH, 0, NO_LIMITS)[1:] == ((T + 30, 3, 150, 0, 0), True)
    with table:
        offset = table.slot("ci")
        assert offset is not None
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
    assert table.take("ci", T, DAY, MONTH, 10, NO_LIMITS)[1] == (T, 1, 10, 0, 0)
    assert table.take("ci", T - 5, DAY, MONTH, 10, NO_LIMITS)[1] == (T, 2, 20, 0, 0)
    assert table.take("ci", T - 60, DAY, MONTH, 10, NO_LIMITS)[1] == (T - 60, 1, 10, 0, 0)


def test_settle_replaces_the_estimate_in_its_second_or_counts_the_tokens_now(table: CounterTable) -> None:
    table.take("ci", T, DAY, MONTH, 100, NO_LIMITS)
    assert table.settle("ci", T + 10, DAY, MONTH, T, 100, 30, 0) == (T + 10, 1, 30, 0, 0)
    assert table.take("ci", T + 10, DAY, MONTH, 100, NO_LIMITS)[1] == (T + 10, 2, 130, 0, 0)
    # 70 s later its second has left the window: its tokens count now
    assert table.settle("ci", T + 80, DAY, MONTH, T + 10, 100, 70, 2_500) == (T + 80, 0, 70, 2_500, 2_500)


def test_a_bucket_never_goes_below_zero(table: CounterTable) -> None:
    table.take("ci", T, DAY, MONTH, 100, NO_LIMITS)
    assert table.settle("ci", T, DAY, MONTH, T, 500, 0, 0) == (T, 1, 0, 0, 0)


def test_spend_counts_per_day_and_month(table: CounterTable) -> None:
    table.take("ci", T, DAY, MONTH, 0, NO_LIMITS)
    assert table.settle("ci", T, DAY, MONTH, T, 0, 0, 1_250_000) == (T, 1, 0, 1_250_000, 1_250_000)
    assert table.settle("ci", T, DAY, MONTH, T, 0, 0, 5) == (T, 1, 0, 1_250_005, 1_250_005)
    with table:
        offset = table.slot("ci")
        assert offset is not None
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
        f"{path}: {problem}; read as zeros",
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
    for _ in range(3):
        first.take("ci", T, DAY, MONTH, 10, NO_LIMITS)
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
    with table, pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    os.close(fd)
    assert table.take("ci", T, DAY, MONTH, 0, NO_LIMITS)[1] == (T, 1, 0, 0, 0)
    assert second.take("ci", T, DAY, MONTH, 0, NO_LIMITS)[1] == (T, 2, 0, 0, 0)
    second.close()


def test_a_state_dir_that_cannot_hold_the_table_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "limits.bin"
    with pytest.raises(ConfigError) as refused:
        CounterTable.open(path)
    assert (refused.value.message, refused.value.exit_code) == (
        f"{path}: server.state_dir: cannot open the limits table: {path.parent}: File exists",
        2,
    )
