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
zero, and a name removed and added back within its window, day or month resumes where it was. Two
gateways on one state dir count in one table, under one lock: a key name they share has its limits
counted across both (each applies the limits of its own config).

A `Limits` is used by one thread of a process (a worker's event loop; see `counters` on the lock).

Cost: an admit, its settle and `remaining()` take about 44,000 instructions together under
callgrind (7.1-7.5 us of CPU in a loop on the project's 2-core machine), the table's four `flock`
calls 2,500 of them (and about 1.1 us in the kernel); in a request, with the estimate, the
`Account` and the attributes written, about 70,000 (bench/README.md, "Policy against none").
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tfgw.config import KeySettings
from tfgw.errors import BudgetExceededError, RateLimitError
from tfgw.policy.counters import CAPACITY, CounterTable, Counts
from tfgw.tracing import otlp
from tfgw.tracing.semconv import BUDGET_DAY, BUDGET_MONTH, LIMIT_RPM, LIMIT_TPM

__all__ = ["Admission", "Limits", "Rules", "Usage", "read_usage"]

DAY = 86_400
MICRO = 1_000_000
#: (second, amount, column) -> the Unix second `amount` requests (column 0) or tokens (1) will have
#: left the window
Expiry = Callable[[int, int, int], int]


class Admission:
    """An admitted request: the key's rules it was admitted by, its slot's counts right after it was
    counted, and after `settle` the counts after its real tokens and cost. What remains of each
    limit (`remaining`) is computed from them when it is read, once a request (`tfgw.gateway.policy
    .Account.record`), not when it is counted."""

    __slots__ = ("after", "counts", "estimated_tokens", "key", "rules", "settled", "shared")

    def __init__(self, rules: _Rules, counts: Counts, estimated_tokens: int) -> None:
        self.rules, self.counts, self.estimated_tokens = rules, counts, estimated_tokens
        self.key = rules.key.name
        #: the counts after its settle (None until then, and for a `shared` one, whose remaining
        #: counts stay those at admission)
        self.after: Counts | None = None
        self.settled = False
        #: counted in NATS with the other gateways' requests (`tfgw.policy.shared`), not in the table
        self.shared = False

    def __repr__(self) -> str:
        return f"Admission(key={self.key!r}, counts={self.counts!r}, after={self.after!r})"

    @property
    def second(self) -> int:
        """The second its estimate was counted in."""
        return self.counts[0]

    def remaining(self) -> tuple[int | None, int | None, float | None, float | None]:
        """What remains of the key's rpm, tpm, daily and monthly budget (USD), None where not
        configured: the requests as counted at admission (at most rpm then), the tokens and spend
        after its settle (at admission before), never below zero."""
        rules = self.rules
        key = rules.key
        requests = self.counts[1]
        _, _, tokens, day_spent, month_spent = self.after or self.counts
        day_left, month_left = rules.day_micro - day_spent, rules.month_micro - month_spent
        return (
            None if key.rpm is None else rules.rpm - requests,
            None if key.tpm is None else rules.tpm - tokens if tokens < rules.tpm else 0,
            None if key.budget_usd_day is None else day_left / MICRO if day_left > 0 else 0.0,
            None if key.budget_usd_month is None else month_left / MICRO if month_left > 0 else 0.0,
        )


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
    #: (rpm, tpm, day_micro, month_micro), as `CounterTable.take` takes them
    limits: tuple[int, int, int, int]
    #: the `auth` span's `tfgw.limit.rpm`, `tfgw.limit.tpm`, `tfgw.budget.usd_day` and
    #: `tfgw.budget.usd_month` as OTLP `KeyValue`s (None where not configured): encoded once a key,
    #: not on every request (`tfgw.gateway.policy.Account.record`)
    encoded: tuple[Any, Any, Any, Any] = field(compare=False, repr=False)

    @classmethod
    def of(cls, key: KeySettings) -> _Rules:
        day, month = key.budget_usd_day, key.budget_usd_month
        limits = (
            UNLIMITED if key.rpm is None else key.rpm,
            UNLIMITED if key.tpm is None else key.tpm,
            UNLIMITED if day is None else _micro(day),
            UNLIMITED if month is None else _micro(month),
        )
        rates = _kv(LIMIT_RPM, key.rpm), _kv(LIMIT_TPM, key.tpm)
        return cls(key, *limits, limits, (*rates, _kv(BUDGET_DAY, day), _kv(BUDGET_MONTH, month)))


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
                self._table.claim(name, int(now), self._calendar.month_of(now))
        self._rules = rules

    def admit(self, key: KeySettings, estimated_tokens: int) -> Admission:
        """Count a request of `key` expected to use `estimated_tokens`, or raise the 429 of the
        limit or budget it is over. Every admission must be settled once."""
        now, calendar = self._clock(), self._calendar
        month = calendar.month if calendar.start <= now < calendar.end else calendar.month_of(now)
        now_s, estimate = int(now), estimated_tokens if estimated_tokens > 0 else 0
        rules = self._rules.get(key.name)
        if rules is None or rules.key is not key:  # a key from another config than the last reload's
            rules = self._rules[key.name] = _Rules.of(key)
        offset, counts, taken = self._table.take(key.name, now_s, now_s // DAY, month, estimate, rules.limits)
        if not taken:
            raise self.refusal(rules, now, counts, estimate, functools.partial(self._expiry, offset))
        return Admission(rules, counts, estimate)

    def rules_of(self, key: KeySettings) -> _Rules:
        rules = self._rules.get(key.name)
        if rules is None or rules.key is not key:  # a key from another config than the last reload's
            rules = self._rules[key.name] = _Rules.of(key)
        return rules

    def month_of(self, now: float) -> int:
        calendar = self._calendar
        return calendar.month if calendar.start <= now < calendar.end else calendar.month_of(now)

    def _expiry(self, offset: int, second: int, amount: int, column: int) -> int:
        with self._table:
            return self._table.expiry(offset, second, amount, column)

    def settle(self, admission: Admission, tokens: int, cost_usd: float) -> None:
        """Replace the admission's estimate with the `tokens` it used and add its cost: exactly once
        per admission, for failed calls too (tokens 0, cost 0)."""
        if admission.settled:
            raise ValueError(f"the admission of key {admission.key!r} is settled already")
        admission.settled = True
        now, calendar = self._clock(), self._calendar
        month = calendar.month if calendar.start <= now < calendar.end else calendar.month_of(now)
        now_s, micro = int(now), round(cost_usd * MICRO) if cost_usd > 0 else 0
        admission.after = self._table.settle(
            admission.key,
            now_s,
            now_s // DAY,
            month,
            admission.counts[0],
            admission.estimated_tokens,
            tokens,
            micro,
        )

    def usage(self, name: str) -> Usage:
        """What the key `name` has used (zeros for a name never counted)."""
        with self._table:
            return _usage(self._table, name, self._clock(), self._calendar)

    def refusal(
        self, rules: _Rules, now: float, counts: Counts, estimate: int, expiry: Expiry
    ) -> RateLimitError:
        """The 429 of the first budget or limit a request that was not counted is over (`expiry`:
        the second `amount` requests or tokens will have left the window, as `CounterTable.expiry`)."""
        second, requests, tokens, day_spent, month_spent = counts
        key = rules.key
        if day_spent >= rules.day_micro:
            return self._over_budget(
                key, "daily", day_spent, rules.day_micro, (int(now) // DAY + 1) * DAY, now, "budget_usd_day"
            )
        if month_spent >= rules.month_micro:
            return self._over_budget(
                key,
                "monthly",
                month_spent,
                rules.month_micro,
                int(self._calendar.end),
                now,
                "budget_usd_month",
            )
        if requests >= rules.rpm:
            expires = expiry(second, requests - rules.rpm + 1, 0)
            return RateLimitError(
                f"Rate limit reached for key {key.name!r}: {rules.rpm} requests per minute.",
                retry_after=_wait(expires, now),
                limit="rpm",
            )
        expires = expiry(second, min(tokens, tokens + estimate - rules.tpm), 1)
        return RateLimitError(
            f"Rate limit reached for key {key.name!r}: {rules.tpm} tokens per minute"
            f" ({tokens} counted in the last minute, {estimate} estimated for this request).",
            retry_after=_wait(expires, now),
            limit="tpm",
        )

    @staticmethod
    def _over_budget(
        key: KeySettings, budget: str, spent: int, limit: int, resets: int, now: float, name: str
    ) -> BudgetExceededError:
        at = datetime.fromtimestamp(resets, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return BudgetExceededError(
            f"Budget exceeded for key {key.name!r}: {_dollars(spent)} spent of its {budget} budget"
            f" of {_dollars(limit)}; it resets at {at}.",
            retry_after=_wait(resets, now),
            limit=name,
        )


#: a key's limits as `admit` compares them (`tfgw.policy.shared` counts with them too)
Rules = _Rules


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


def month_of(now: float) -> int:
    """The UTC month of `now`, as the table counts months (`year * 12 + month - 1`)."""
    return _Calendar().month_of(now)


def _kv(name: str, value: float | None) -> dict[str, Any] | None:
    """`name: value` as the OTLP `KeyValue` `otlp.attributes` writes, or None for no value."""
    return None if value is None else otlp.attributes({name: value})[0]


def _micro(usd: float) -> int:
    return round(usd * MICRO)


def _wait(at: float, now: float) -> int:
    """Whole seconds from `now` until `at`, at least 1."""
    return max(math.ceil(at - now), 1)


def _dollars(micro: int) -> str:
    return f"${micro / MICRO:.2f}"
