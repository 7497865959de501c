"""Limits and budgets, counted for each key by every worker of a gateway together.

The counts live in the shared table of `tfgw.policy.counters` (`<state dir>/limits.bin`), so a
limit holds across `--workers N`, and the windows and budgets survive a restart. The rules, for a
key's `rpm`, `tpm`, `budget_usd_day` and `budget_usd_month`:

- **rpm**: the requests admitted in the window, the current second and the 59 before it (1 s
  buckets: a request leaves the window when the clock reaches its second + 60, 59 to 60 s after it
  was admitted). With rpm in the window the next request is refused, `RateLimitError` (429), with
  `retry_after` the seconds until enough of the window has left it (at least 1). Refused requests
  are not counted, so a burst of M > N against rpm = N admits exactly N.
- **tpm**: the tokens in the same window. A request is admitted while the window's tokens plus its
  estimate fit in tpm, and its estimate is counted (reserved) at once; `settle` replaces it with the
  real tokens (in the second it was counted in, or, if that has left the window, in the current
  one). A request whose estimate alone exceeds tpm is admitted only into an empty window: it could
  never fit otherwise, and so it runs alone.
- **budgets**: spend counted in integer micro-USD (each cost rounded to the micro-dollar, so 0.1 +
  0.2 is exactly 300000), per UTC day and per UTC calendar month. A request is admitted while the
  spend is below the budget; at or over it, `BudgetExceededError` (429) names the key, the budget,
  the spend and the limit, and when it resets (ISO 8601 UTC), `retry_after` the seconds to then.
  A cost is known only at `settle` and counts in the day and month of the settle: the calls in
  flight when a budget is reached all finish and count, so the spend can pass the budget by what
  they cost.
- The first refusal in the order day budget, month budget, rpm, tpm is the error.

A key's counters are its name's: a reload keeps those of the names it keeps, a new name starts at
zero, and a name removed and added back within its window, day or month resumes where it was.

Cost: an admit and its settle take about 5 us of CPU together, the two locks included (see
`counters` for what the lock costs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tfgw.config import KeySettings
from tfgw.errors import BudgetExceededError, RateLimitError, TfgwError
from tfgw.policy.counters import CAPACITY, WINDOW, CounterTable, Counts

__all__ = ["Admission", "Limits", "Usage", "read_usage"]

DAY = 86_400
MICRO = 1_000_000


@dataclass(slots=True)
class Admission:
    """An admitted request: each configured limit (None where not configured) and what remains of
    it after this request (after `settle`, with its real tokens and cost), for the trace."""

    key: str
    rpm: int | None = None
    rpm_remaining: int | None = None
    tpm: int | None = None
    tpm_remaining: int | None = None
    budget_usd_day: float | None = None
    budget_day_remaining_usd: float | None = None
    budget_usd_month: float | None = None
    budget_month_remaining_usd: float | None = None
    estimated_tokens: int = 0
    #: the second its estimate was counted in
    second: int = field(default=0, repr=False, compare=False)
    settled: bool = field(default=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a key has used: requests and tokens in the last minute, USD today and this month."""

    requests: int = 0
    tokens: int = 0
    spent_usd_day: float = 0.0
    spent_usd_month: float = 0.0


#: a threshold no count reaches: what a limit that is not configured is compared with
UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class _Rules:
    """A key's limits as `admit` compares them: integers, UNLIMITED where not configured."""

    key: KeySettings
    rpm: int
    tpm: int
    day_micro: int
    month_micro: int

    @classmethod
    def of(cls, key: KeySettings) -> _Rules:
        day, month = key.budget_usd_day, key.budget_usd_month
        return cls(
            key,
            UNLIMITED if key.rpm is None else key.rpm,
            UNLIMITED if key.tpm is None else key.tpm,
            UNLIMITED if day is None else _micro(day),
            UNLIMITED if month is None else _micro(month),
        )

    def refuses(self, counts: Counts, estimate: int) -> bool:
        _, requests, tokens, day_spent, month_spent = counts
        return (
            day_spent >= self.day_micro
            or month_spent >= self.month_micro
            or requests >= self.rpm
            or (tokens > 0 and tokens + estimate > self.tpm)
        )

    def admission(self, counts: Counts, requests: int, tokens: int, estimate: int) -> Admission:
        """The admission of a request just counted (`requests` and `tokens` in the window after it;
        `counts`, the slot before)."""
        key, day_spent, month_spent = self.key, counts[3], counts[4]
        return Admission(
            key.name,
            key.rpm,
            None if key.rpm is None else max(self.rpm - requests, 0),
            key.tpm,
            None if key.tpm is None else max(self.tpm - tokens, 0),
            key.budget_usd_day,
            None if key.budget_usd_day is None else max(self.day_micro - day_spent, 0) / MICRO,
            key.budget_usd_month,
            None if key.budget_usd_month is None else max(self.month_micro - month_spent, 0) / MICRO,
            estimate,
            counts[0],
        )


class _Calendar:
    """The UTC month of a time, as `year * 12 + month - 1`, with the month's bounds cached."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.month = 0

    def month_of(self, now: float) -> int:
        if not self.start <= now < self.end:
            at = datetime.fromtimestamp(now, UTC)
            first = datetime(at.year, at.month, 1, tzinfo=UTC)
            following = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
            self.start, self.end = first.timestamp(), following.timestamp()
            self.month = at.year * 12 + at.month - 1
        return self.month


class Limits:
    """The limits and budgets of a key set over one table (`path`, the `limits.bin` of the state
    dir). Made in the serving parent before it forks: every worker then counts in the same pages."""

    def __init__(
        self,
        keys: Sequence[KeySettings],
        path: Path,
        clock: Callable[[], float] = time.time,
        *,
        capacity: int = CAPACITY,
    ) -> None:
        self.path = path
        self._clock = clock
        self._calendar = _Calendar()
        self._table = CounterTable.open(path, capacity=capacity)
        self._rules: dict[str, _Rules] = {}
        self.reload(keys)

    def close(self) -> None:
        self._table.close()

    def reload(self, keys: Iterable[KeySettings]) -> None:
        """A new key set (a live config reload): the counters of the names kept stay."""
        rules = {key.name: _Rules.of(key) for key in keys}
        now = self._clock()
        with self._table:
            for name in rules:
                if self._table.slot(name) is None:
                    self._reclaim(name, now)
        self._rules = rules

    def admit(self, key: KeySettings, estimated_tokens: int) -> Admission:
        """Count a request of `key` expected to use `estimated_tokens`, or raise the 429 of the
        limit or budget it is over. Every admission must be settled once."""
        now, calendar = self._clock(), self._calendar
        now_s, month = (
            int(now),
            calendar.month if calendar.start <= now < calendar.end else calendar.month_of(now),
        )
        estimate = estimated_tokens if estimated_tokens > 0 else 0
        rules = self._rules.get(key.name)
        if rules is None or rules.key is not key:  # a key from another config than the last reload's
            rules = self._rules[key.name] = _Rules.of(key)
        table = self._table
        with table:
            offset = table.slot(key.name)
            if offset is None:
                offset = self._reclaim(key.name, now)
            counts = table.advance(offset, now_s, now_s // DAY, month)
            if rules.refuses(counts, estimate):
                raise self._refusal(rules, offset, now, counts, estimate)
            requests, tokens = table.count(offset, counts, counts[0], 1, estimate)
        return rules.admission(counts, requests, tokens, estimate)

    def settle(self, admission: Admission, tokens: int, cost_usd: float) -> None:
        """Replace the admission's estimate with the `tokens` it used and add its cost: exactly once
        per admission, for failed calls too (tokens 0, cost 0)."""
        if admission.settled:
            raise ValueError(f"the admission of key {admission.key!r} is settled already")
        admission.settled = True
        now, calendar = self._clock(), self._calendar
        now_s, month = (
            int(now),
            calendar.month if calendar.start <= now < calendar.end else calendar.month_of(now),
        )
        day, micro = now_s // DAY, round(cost_usd * MICRO) if cost_usd > 0 else 0
        table = self._table
        with table:
            offset = table.slot(admission.key)
            if offset is None:
                offset = self._reclaim(admission.key, now)
            counts = table.advance(offset, now_s, day, month)
            second = counts[0]
            if second - WINDOW < admission.second <= second:  # its estimate is still in the window
                second, tokens = admission.second, tokens - admission.estimated_tokens
            _, in_window = table.count(offset, counts, second, 0, tokens)
            day_spent, month_spent = table.spend(offset, counts, day, month, micro) if micro else counts[3:]
        if admission.tpm is not None:
            admission.tpm_remaining = max(admission.tpm - in_window, 0)
        if (rules := self._rules.get(admission.key)) is not None:
            if admission.budget_usd_day is not None:
                admission.budget_day_remaining_usd = max(rules.day_micro - day_spent, 0) / MICRO
            if admission.budget_usd_month is not None:
                admission.budget_month_remaining_usd = max(rules.month_micro - month_spent, 0) / MICRO

    def usage(self, name: str) -> Usage:
        """What the key `name` has used (zeros for a name never counted)."""
        with self._table:
            return _usage(self._table, name, self._clock(), self._calendar)

    def _reclaim(self, name: str, now: float) -> int:
        """The slot of `name` in a full table (the lock held): made after freeing the idle ones."""
        self._table.reclaim(int(now), self._calendar.month_of(now))
        offset = self._table.slot(name)
        if offset is None:
            capacity = self._table.capacity
            raise TfgwError(f"{self.path}: the limits table is full ({capacity} keys counted this month)")
        return offset

    def _refusal(
        self, rules: _Rules, offset: int, now: float, counts: Counts, estimate: int
    ) -> RateLimitError:
        """The 429 of the first budget or limit the request is over (`rules.refuses` said it is)."""
        second, requests, tokens, day_spent, month_spent = counts
        key = rules.key
        if day_spent >= rules.day_micro:
            return self._over_budget(
                key, "daily", day_spent, rules.day_micro, (int(now) // DAY + 1) * DAY, now
            )
        if month_spent >= rules.month_micro:
            return self._over_budget(
                key, "monthly", month_spent, rules.month_micro, int(self._calendar.end), now
            )
        if requests >= rules.rpm:
            expires = self._table.expiry(offset, second, requests - rules.rpm + 1, 0)
            return RateLimitError(
                f"Rate limit reached for key {key.name!r}: {rules.rpm} requests per minute.",
                retry_after=_wait(expires, now),
            )
        expires = self._table.expiry(offset, second, min(tokens, tokens + estimate - rules.tpm), 1)
        return RateLimitError(
            f"Rate limit reached for key {key.name!r}: {rules.tpm} tokens per minute"
            f" ({tokens} counted in the last minute, {estimate} estimated for this request).",
            retry_after=_wait(expires, now),
        )

    @staticmethod
    def _over_budget(
        key: KeySettings, budget: str, spent: int, limit: int, resets: int, now: float
    ) -> BudgetExceededError:
        at = datetime.fromtimestamp(resets, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return BudgetExceededError(
            f"Budget exceeded for key {key.name!r}: {_dollars(spent)} spent of its {budget} budget"
            f" of {_dollars(limit)}; it resets at {at}.",
            retry_after=_wait(resets, now),
        )


def read_usage(path: Path, names: Iterable[str], clock: Callable[[], float] = time.time) -> dict[str, Usage]:
    """What each key has used, read from the table at `path` by another process (`tfgw keys list`);
    zeros where nothing is counted, or there is no table yet."""
    table = CounterTable.open_existing(path)
    if table is None:
        return {name: Usage() for name in names}
    try:
        now, calendar = clock(), _Calendar()
        with table:
            return {name: _usage(table, name, now, calendar) for name in names}
    finally:
        table.close()


def _usage(table: CounterTable, name: str, now: float, calendar: _Calendar) -> Usage:
    offset = table.slot(name, create=False)
    if offset is None:
        return Usage()
    now_s = int(now)
    _, requests, tokens, day_spent, month_spent = table.read(
        offset, now_s, now_s // DAY, calendar.month_of(now)
    )
    return Usage(requests, tokens, day_spent / MICRO, month_spent / MICRO)


def _micro(usd: float) -> int:
    return round(usd * MICRO)


def _wait(at: float, now: float) -> int:
    """Whole seconds from `now` until `at`, at least 1."""
    return max(math.ceil(at - now), 1)


def _dollars(micro: int) -> str:
    return f"${micro / MICRO:.2f}"
