"""Limits and budgets: exact admission counts, the window, budgets to the cent, day and month
resets, restarts, reloads, and processes counting in one table."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path

import orjson
import pytest

from tests.fakes.clock import Clock
from tfgw.config import KeySettings
from tfgw.errors import BudgetExceededError, RateLimitError, TfgwError
from tfgw.policy.limits import Limits, Usage, read_usage

HASH = "sha256:" + "ab" * 32
#: 2025-10-09T12:00:00Z, a whole second
T0 = datetime(2025, 10, 9, 12, tzinfo=UTC).timestamp()


def key(name: str = "ci", **limits: float) -> KeySettings:
    return KeySettings(name, HASH, **limits)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "limits.bin"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def limits(path: Path, clock: Clock) -> Iterator[Limits]:
    made = Limits([key()], path, clock)
    yield made
    made.close()


def outcomes(limits: Limits, k: KeySettings, times: int, estimate: int = 0) -> list[str]:
    """'ok' for each admission (settled with nothing used), the error's message and Retry-After
    for each refusal."""
    found = []
    for _ in range(times):
        try:
            limits.settle(limits.admit(k, estimate), estimate, 0.0)
            found.append("ok")
        except RateLimitError as exc:
            found.append(f"{exc.message} retry-after={exc.headers()['retry-after']}")
    return found


# -- rpm --------------------------------------------------------------------------------------------


def test_a_burst_admits_exactly_rpm_and_refuses_the_rest_until_the_window_moves(
    limits: Limits, clock: Clock
) -> None:
    ci = key(rpm=5)
    refused = "Rate limit reached for key 'ci': 5 requests per minute."
    assert outcomes(limits, ci, 8) == ["ok"] * 5 + [f"{refused} retry-after=60"] * 3
    clock.now = T0 + 59.9  # the second T0 is still in the window
    assert outcomes(limits, ci, 1) == [f"{refused} retry-after=1"]
    clock.now = T0 + 60  # it has left
    assert outcomes(limits, ci, 6) == ["ok"] * 5 + [f"{refused} retry-after=60"]


def test_retry_after_is_when_enough_of_the_window_has_left_it(limits: Limits, clock: Clock) -> None:
    ci = key(rpm=5)
    assert outcomes(limits, ci, 2) == ["ok", "ok"]
    clock.now = T0 + 10.2
    assert outcomes(limits, ci, 3) == ["ok"] * 3
    clock.now = T0 + 20.5
    with pytest.raises(RateLimitError) as refused:
        limits.admit(ci, 0)
    # one request must leave: those of T0 do at T0 + 60, 39.5 s from now
    assert (refused.value.retry_after, refused.value.headers(), refused.value.limit) == (
        40,
        {"retry-after": "40"},
        "rpm",
    )
    clock.now = T0 + 60
    assert outcomes(limits, ci, 3) == ["ok", "ok", "Rate limit reached for key 'ci': 5 requests per minute."
                                       " retry-after=10"]  # fmt: skip


def test_an_admission_says_what_remains_of_each_limit(limits: Limits) -> None:
    ci = key(rpm=10, tpm=1000, budget_usd_day=5.0, budget_usd_month=100.0)
    first = limits.admit(ci, 300)
    admitted = (first.key, first.estimated_tokens, first.counts, first.after)
    assert admitted == ("ci", 300, (T0, 1, 300, 0, 0), None)
    assert first.remaining() == (9, 700, 5.0, 100.0)  # requests and tokens counted, nothing spent
    limits.settle(first, 120, 1.25)
    assert (first.counts, first.after) == ((T0, 1, 300, 0, 0), (T0, 1, 120, 1_250_000, 1_250_000))
    # rpm as counted at admission; the tokens and spend after the settle
    assert first.remaining() == (9, 880, 3.75, 98.75)
    free = limits.admit(key("free"), 50)
    assert (free.key, free.remaining()) == ("free", (None, None, None, None))


def test_a_budget_spent_past_its_limit_has_nothing_left(limits: Limits) -> None:
    ci = key(budget_usd_day=1.0, budget_usd_month=1.5)
    first = limits.admit(ci, 0)
    limits.settle(first, 10, 1.2)  # admitted under both budgets, it cost more than the day's
    assert first.remaining() == (None, None, 0.0, 0.3)  # micro-USD: exact


def test_an_admission_settles_once(limits: Limits) -> None:
    admission = limits.admit(key(), 0)
    limits.settle(admission, 0, 0.0)
    with pytest.raises(ValueError, match=r"^the admission of key 'ci' is settled already$"):
        limits.settle(admission, 0, 0.0)


# -- tpm --------------------------------------------------------------------------------------------


def test_tokens_are_reserved_at_admission_and_replaced_at_settle(limits: Limits) -> None:
    ci = key(tpm=1000)
    first = limits.admit(ci, 600)
    with pytest.raises(RateLimitError) as refused:
        limits.admit(ci, 500)
    assert refused.value.limit == "tpm"
    assert refused.value.message == (
        "Rate limit reached for key 'ci': 1000 tokens per minute (600 counted in the last minute, 500"
        " estimated for this request)."
    )
    assert refused.value.retry_after == 60
    limits.settle(first, 300, 0.0)  # it used less than it reserved
    second = limits.admit(ci, 500)
    assert second.remaining() == (None, 200, None, None)
    assert limits.usage("ci") == Usage(requests=2, tokens=800)


def test_an_estimate_over_tpm_is_admitted_only_into_an_empty_window(limits: Limits, clock: Clock) -> None:
    ci = key(tpm=1000)
    big = limits.admit(ci, 5000)
    assert big.remaining() == (None, 0, None, None)
    limits.settle(big, 4000, 0.0)
    assert outcomes(limits, ci, 1, estimate=1) == [
        "Rate limit reached for key 'ci': 1000 tokens per minute (4000 counted in the last minute, 1"
        " estimated for this request). retry-after=60"
    ]
    clock.now = T0 + 60
    assert outcomes(limits, ci, 1, estimate=5000) == ["ok"]


def test_a_settle_after_its_window_counts_the_tokens_now(limits: Limits, clock: Clock) -> None:
    ci = key(tpm=1000)
    long_call = limits.admit(ci, 100)
    clock.now = T0 + 90
    limits.settle(long_call, 400, 0.0)
    assert long_call.remaining() == (None, 600, None, None)
    assert limits.usage("ci") == Usage(requests=0, tokens=400)
    clock.now = T0 + 150
    assert limits.usage("ci") == Usage()


# -- budgets ----------------------------------------------------------------------------------------


def test_a_budget_is_cut_off_at_the_right_cent(limits: Limits) -> None:
    ci = key(budget_usd_day=0.05)
    for _ in range(4):
        limits.settle(limits.admit(ci, 0), 0, 0.0125)
    with pytest.raises(BudgetExceededError) as refused:
        limits.admit(ci, 0)
    error = refused.value
    assert error.limit == "budget_usd_day"
    assert error.message == (
        "Budget exceeded for key 'ci': $0.05 spent of its daily budget of $0.05; it resets at"
        " 2025-10-10T00:00:00Z."
    )
    assert (error.status, error.headers(), orjson.loads(error.body())) == (
        429,
        {"retry-after": "43200"},
        {
            "error": {
                "message": error.message,
                "type": "rate_limit_error",
                "param": None,
                "code": "budget_exceeded",
            }
        },
    )


def test_spend_is_counted_exactly_in_micro_usd(limits: Limits) -> None:
    assert sum([0.1] * 10) < 1.0  # what float sums would let through
    ci = key(budget_usd_day=1.0)
    for _ in range(10):
        limits.settle(limits.admit(ci, 0), 0, 0.1)
    assert limits.usage("ci") == Usage(requests=10, spent_usd_day=1.0, spent_usd_month=1.0)
    with pytest.raises(BudgetExceededError):
        limits.admit(ci, 0)
    other = key("other")
    limits.settle(limits.admit(other, 0), 0, 0.1)
    limits.settle(limits.admit(other, 0), 0, 0.2)
    assert limits.usage("other").spent_usd_day == 0.3


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"budget_usd_day": 1.0}, "$1.50 spent of its daily budget of $1.00"),
        ({"budget_usd_month": 1.0}, "$1.50 spent of its monthly budget of $1.00"),
        ({"budget_usd_day": 1.0, "budget_usd_month": 1.0}, "$1.50 spent of its daily budget of $1.00"),
    ],
)
def test_day_and_month_reset_at_midnight_utc_on_the_31st(
    path: Path, budget: dict[str, float], message: str
) -> None:
    clock = Clock(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    limits = Limits([], path, clock)
    ci = key(**budget)
    limits.settle(limits.admit(ci, 0), 0, 1.5)
    with pytest.raises(BudgetExceededError) as refused:
        limits.admit(ci, 0)
    assert (refused.value.message, refused.value.retry_after) == (
        f"Budget exceeded for key 'ci': {message}; it resets at 2026-01-01T00:00:00Z.",
        1,
    )
    clock.now += 1
    assert outcomes(limits, ci, 1) == ["ok"]
    assert limits.usage("ci") == Usage(requests=2)
    limits.close()


def test_the_month_budget_holds_past_the_day(path: Path) -> None:
    clock = Clock(datetime(2025, 10, 30, 23, 59, 59, tzinfo=UTC).timestamp())
    limits = Limits([], path, clock)
    ci = key(budget_usd_day=2.0, budget_usd_month=1.0)
    limits.settle(limits.admit(ci, 0), 0, 1.0)
    clock.now += 1  # 2025-10-31: a new day, the same month
    with pytest.raises(BudgetExceededError) as refused:
        limits.admit(ci, 0)
    assert refused.value.limit == "budget_usd_month"
    assert (refused.value.message, refused.value.retry_after) == (
        "Budget exceeded for key 'ci': $1.00 spent of its monthly budget of $1.00; it resets at"
        " 2025-11-01T00:00:00Z.",
        86_400,
    )
    assert limits.usage("ci") == Usage(requests=1, spent_usd_day=0.0, spent_usd_month=1.0)
    limits.close()


# -- restarts, reloads, the file --------------------------------------------------------------------


def test_a_restart_keeps_the_windows_and_the_budgets(path: Path, clock: Clock) -> None:
    ci = key(rpm=3, budget_usd_day=10.0)
    first = Limits([ci], path, clock)
    assert outcomes(first, ci, 2) == ["ok", "ok"]
    first.settle(first.admit(ci, 0), 0, 2.5)
    first.close()
    clock.now += 5
    again = Limits([ci], path, clock)
    assert again.usage("ci") == Usage(requests=3, spent_usd_day=2.5, spent_usd_month=2.5)
    assert outcomes(again, ci, 1) == [
        "Rate limit reached for key 'ci': 3 requests per minute. retry-after=55"
    ]
    again.close()


def test_a_reload_keeps_the_counters_of_the_keys_kept_and_new_keys_start_at_zero(
    limits: Limits, clock: Clock
) -> None:
    assert outcomes(limits, key(rpm=2), 2) == ["ok", "ok"]
    limits.reload([key(rpm=3), key("new", rpm=1)])
    assert (limits.usage("ci"), limits.usage("new")) == (Usage(requests=2), Usage())
    assert outcomes(limits, key(rpm=3), 2) == [
        "ok",
        "Rate limit reached for key 'ci': 3 requests per minute. retry-after=60",
    ]
    assert outcomes(limits, key("new", rpm=1), 1) == ["ok"]


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"not a table at all" * 1000])
def test_a_corrupt_or_foreign_file_starts_a_fresh_table_and_says_so(
    path: Path, clock: Clock, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tfgw.limits"):
        limits = Limits([key()], path, clock)
    expected = [] if not content else [
        f"{path}: not a tfgw limits table; moved it to limits.bin.bad and started a fresh table"
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == expected
    assert outcomes(limits, key(rpm=1), 2) == [
        "ok",
        "Rate limit reached for key 'ci': 1 requests per minute. retry-after=60",
    ]
    if content:
        assert path.with_name("limits.bin.bad").read_bytes() == content
    limits.close()


def test_a_full_table_frees_the_idle_slots(path: Path) -> None:
    clock = Clock(datetime(2025, 9, 1, tzinfo=UTC).timestamp())
    limits = Limits([key("a"), key("b")], path, clock, capacity=2)
    limits.settle(limits.admit(key("a"), 10), 10, 0.5)
    limits.settle(limits.admit(key("b"), 0), 0, 0.0)
    with pytest.raises(
        TfgwError, match=r"the limits table is full \(2 keys counting this minute or this month\)$"
    ):
        limits.reload([key("a"), key("b"), key("c")])
    clock.now = T0  # October: a's and b's window and month are over, they count nothing
    limits.reload([key("c")])
    assert outcomes(limits, key("c", rpm=1), 1) == ["ok"]
    assert [limits.usage(n) for n in "abc"] == [Usage(), Usage(), Usage(requests=1)]
    limits.close()


def test_read_usage_reads_what_the_gateway_counted_without_making_a_file(
    path: Path, limits: Limits, clock: Clock
) -> None:
    assert read_usage(path.with_name("none.bin"), ["ci"], clock) == {"ci": Usage()}
    assert not path.with_name("none.bin").exists()
    limits.settle(limits.admit(key(), 100), 250, 0.42)
    assert read_usage(path, ["ci", "unknown"], clock) == {
        "ci": Usage(requests=1, tokens=250, spent_usd_day=0.42, spent_usd_month=0.42),
        "unknown": Usage(),
    }
    clock.now = T0 + 86_400
    assert read_usage(path, ["ci"], clock) == {"ci": Usage(spent_usd_month=0.42)}


# -- processes --------------------------------------------------------------------------------------


def _admit_in_a_loop(
    limits: Limits | None, path: Path, go: Event, results: multiprocessing.Queue[int]
) -> None:
    """A worker: once all are started, admit as fast as it can, 1000 times; put how many were
    admitted. Without `limits` it opens its own, as a second gateway on the same state dir would."""
    own = limits or Limits([key(rpm=100)], path, Clock(T0))
    go.wait(timeout=30)
    admitted = 0
    for _ in range(1000):
        try:
            own.settle(own.admit(key(rpm=100), 10), 10, 0.001)
            admitted += 1
        except RateLimitError:
            pass
    results.put(admitted)


@pytest.mark.parametrize("shared", [True, False], ids=["forked-workers", "separate-gateways"])
def test_processes_counting_in_one_table_admit_exactly_rpm_in_all(path: Path, shared: bool) -> None:
    ctx = multiprocessing.get_context("fork")
    limits = Limits([key(rpm=100)], path, Clock(T0)) if shared else None  # made before the fork
    go, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_admit_in_a_loop, args=(limits, path, go, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    go.set()
    counts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert [w.exitcode for w in workers] == [0] * 4
    assert sum(counts) == 100
    assert read_usage(path, ["ci"], Clock(T0)) == {
        "ci": Usage(requests=100, tokens=1000, spent_usd_day=0.1, spent_usd_month=0.1)
    }
