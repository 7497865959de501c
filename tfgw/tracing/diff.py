"""Two sets of requests compared metric by metric, and the `--fail-if` conditions that gate on them:
what `tfgw traces diff A B` computes (docs/traces-diff.md).

A side is the rows (`tfgw.tracing.rows`) of some trace files or of a window of the trace log,
grouped by a row key (`model`, `provider`, `key`, or `route`: the root span's name, such as
`POST /v1/chat/completions`, the HTTP route the client called). Each group, and all requests
together, is aggregated by `tfgw.tracing.stats.Aggregate` (the totals behind `traces stats`) plus
the finish reasons and the requests that took more than one provider attempt.

Metrics of a group, each with its value on A and on B, `delta` (B - A) and `change`
((B - A) / A; +inf from 0 to more, None when a side has no value):

| metric | what |
| --- | --- |
| `requests` | requests |
| `error_rate` | failed requests / requests |
| `p50_latency`, `p95_latency`, `p99_latency` | request duration percentiles, ms (nearest rank) |
| `p50_ttft`, `p95_ttft` | time to first token percentiles of streams, ms |
| `tokens_in_per_request`, `tokens_out_per_request` | tokens summed / requests (failed ones too) |
| `cost_per_request`, `cost_total` | USD / requests, and USD |
| `finish_reason.<reason>` | requests that ended so / requests with a finish reason |
| `fallback_rate` | requests with more than one provider attempt (a retry or a fallback) / requests |

A group that only one side has is there with 0 requests (and no other value) on the other.

A condition (`--fail-if`) is `<metric> <op> <value>`, op one of `>`, `>=`, `<`, `<=`:

- an unsigned value is compared with B's value: `error_rate > 0.01`, `error_rate > 1%` (a plain
  `%` only for rates and shares), `p95_latency > 2s` (latency and TTFT take `ms` or `s`, ms
  without a unit), `cost_per_request > $0.002`;
- a signed percentage with the relative change: `cost_per_request > +10%`, `requests < -5%`;
- a signed value without `%` with the change in the metric's own unit: `p95_latency > +250ms`.

A condition is evaluated for each group and for all requests, wherever the values it needs
exist: it holds nowhere that a side has no value for its metric.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from tfgw.errors import InputError
from tfgw.tracing import otlp
from tfgw.tracing.otlp.files import is_torn, open_trace_file, trace_files
from tfgw.tracing.reader import Warn, file_rows, read_rows, warn_stderr
from tfgw.tracing.rows import summarize
from tfgw.tracing.stats import Aggregate

__all__ = [
    "DIFF_BY",
    "METRICS",
    "Condition",
    "DiffAggregate",
    "Side",
    "Source",
    "breaches",
    "collect",
    "compare",
    "parse_condition",
]

#: what `--by` may name, and the row key each reads
DIFF_BY = {"model": "model", "provider": "provider", "key": "key", "route": "name"}
METRICS = (
    "requests",
    "error_rate",
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "p50_ttft",
    "p95_ttft",
    "tokens_in_per_request",
    "tokens_out_per_request",
    "cost_per_request",
    "cost_total",
    "finish_reason.<reason>",
    "fallback_rate",
)
FINISH = "finish_reason."
#: metrics that are a share of requests (a plain `%` is allowed), and those measured in ms
SHARES = frozenset(("error_rate", "fallback_rate"))
TIMES = frozenset(("p50_latency", "p95_latency", "p99_latency", "p50_ttft", "p95_ttft"))
COSTS = frozenset(("cost_per_request", "cost_total"))
#: metric values are rounded to this many decimals (float sums), changes to CHANGE_DIGITS
DIGITS, CHANGE_DIGITS = 12, 9


# -- the sides -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a side's requests come from: trace files (`path`: a file, a directory, `.gz`) or, with
    `log`, the requests of that trace log that started in [since_ns, until_ns) (None: open)."""

    label: str  # as the user wrote it
    path: Path | None = None
    log: Path | None = None
    since_ns: int | None = None
    until_ns: int | None = None


class DiffAggregate(Aggregate):
    """`Aggregate` plus the finish reasons and the requests with more than one provider attempt."""

    __slots__ = ("fallbacks", "finish")

    def __init__(self) -> None:
        super().__init__()
        self.fallbacks = 0
        self.finish: dict[str, int] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        super().add(row)
        if (row.get("attempts") or 0) > 1:
            self.fallbacks += 1
        if (reason := row.get("finish_reason")) is not None:
            self.finish[reason] = self.finish.get(reason, 0) + 1

    def merge(self, other: Aggregate) -> None:
        super().merge(other)
        if isinstance(other, DiffAggregate):
            self.fallbacks += other.fallbacks
            for reason, count in other.finish.items():
                self.finish[reason] = self.finish.get(reason, 0) + count

    def metrics(self, reasons: Iterable[str] = ()) -> dict[str, Any]:
        """The metrics of the module docstring, with the share of each of `reasons` (0 for one
        this group has none of, None when none of its requests has a finish reason)."""
        s, n = self.summary(), self.requests
        finished = sum(self.finish.values())
        values: dict[str, Any] = {
            "requests": n,
            "error_rate": s["error_rate"],
            **{f"{p}_latency": s["latency_ms"][p] for p in ("p50", "p95", "p99")},
            **{f"{p}_ttft": s["ttft_ms"][p] for p in ("p50", "p95")},
            "tokens_in_per_request": _per(s["tokens_in"], n),
            "tokens_out_per_request": _per(s["tokens_out"], n),
            "cost_per_request": _per(s["cost"], n),
            "cost_total": s["cost"],
        }
        for reason in reasons:
            values[FINISH + reason] = self.finish.get(reason, 0) / finished if finished else None
        values["fallback_rate"] = self.fallbacks / n if n else None
        return {name: _round(value, DIGITS) for name, value in values.items()}


def _per(total: float | None, n: int) -> float | None:
    return None if total is None or not n else total / n


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


@dataclass(slots=True)
class Side:
    """One side's groups, all its requests together, and the start times of its first and last."""

    source: Source
    groups: dict[Any, DiffAggregate] = field(default_factory=dict)
    first: int | None = None
    last: int | None = None

    def total(self) -> DiffAggregate:
        total = DiffAggregate()
        for group in self.groups.values():
            total.merge(group)
        return total


def collect(source: Source, by: str, *, warn: Warn = warn_stderr) -> Side:
    """The side `source` names, grouped by `by` (a key of `DIFF_BY`)."""
    side, key = Side(source), DIFF_BY[by]
    groups = side.groups
    first = last = None
    for row in _rows(source, warn):
        group = groups.get(value := row.get(key))
        if group is None:
            group = groups[value] = DiffAggregate()
        group.add(row)
        t = row["time"]
        if first is None or t < first:
            first = t
        if last is None or t > last:
            last = t
    side.first, side.last = first, last
    return side


def _rows(source: Source, warn: Warn) -> Iterator[dict[str, Any]]:
    if source.log is not None:
        until = source.until_ns
        for row in read_rows(source.log, since_ns=source.since_ns, warn=warn):
            if until is None or row["time"] < until:
                yield row
        return
    if source.path is None or str(source.path) == "-":
        raise InputError(f"{source.label}: standard input cannot be one side of a diff: name a file")
    names = trace_files([source.path])
    if not names:
        raise InputError(f"{source.label}: no trace files here (*.jsonl, *.json, or either .gz)")
    for name in names:
        if name.endswith(".gz"):
            yield from _compressed_rows(name, warn)
        else:
            yield from file_rows(Path(name), warn=warn)


def _compressed_rows(name: str, warn: Warn) -> Iterator[dict[str, Any]]:
    """The rows of a `.gz` trace file: its spans grouped by trace over the whole file (it has no
    rows file), damaged lines skipped with a warning as `tfgw.tracing.reader` skips them."""
    traces: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    with open_trace_file(name) as lines:
        for number, raw in enumerate(lines, 1):
            try:
                data = orjson.loads(raw)
                for res, span in otlp.spans_of(data):
                    traces.setdefault(str(span.get("traceId") or ""), []).append((res, span))
            except orjson.JSONDecodeError:
                if is_torn(raw):
                    warn(f"{name}:{number}: torn last line skipped (no newline at the end)")
                elif raw.strip():
                    warn(f"{name}:{number}: invalid JSON, line skipped")
            except (AttributeError, TypeError):
                warn(f"{name}:{number}: not an OTLP/JSON trace request, line skipped")
    for trace_id, pairs in traces.items():
        try:
            yield summarize(pairs)
        except (AttributeError, KeyError, TypeError, ValueError):
            warn(f"{name}: trace {trace_id!r} cannot be summarized, skipped")


# -- the comparison --------------------------------------------------------------------------------


def compare(a: Side, b: Side, by: str) -> dict[str, Any]:
    """The report `traces diff --json` prints (without `fail_if` and `failed`): both sides, and
    every metric of all requests and of each group (by most requests on both sides, then name)."""
    names = sorted(
        set(a.groups) | set(b.groups),
        key=lambda g: (-_requests(a, g) - _requests(b, g), str(g)),
    )
    return {
        "by": by,
        "a": _side(a),
        "b": _side(b),
        "all": {"metrics": _metrics(a.total(), b.total())},
        "groups": [{by: name, "metrics": _metrics(a.groups.get(name), b.groups.get(name))} for name in names],
    }


def _requests(side: Side, name: Any) -> int:
    group = side.groups.get(name)
    return 0 if group is None else group.requests


def _side(side: Side) -> dict[str, Any]:
    requests = sum(group.requests for group in side.groups.values())
    return {"source": side.source.label, "requests": requests, "from": side.first, "to": side.last}


def _metrics(a: DiffAggregate | None, b: DiffAggregate | None) -> dict[str, dict[str, Any]]:
    a, b = a or DiffAggregate(), b or DiffAggregate()
    reasons = sorted(
        set(a.finish) | set(b.finish), key=lambda r: (-a.finish.get(r, 0) - b.finish.get(r, 0), r)
    )
    va, vb = a.metrics(reasons), b.metrics(reasons)
    return {name: _pair(va[name], vb[name]) for name in va}


def _pair(a: Any, b: Any) -> dict[str, Any]:
    delta = change = None
    if a is not None and b is not None:
        delta = _round(b - a, DIGITS)
        change = _change(a, b)
    return {"a": a, "b": b, "delta": delta, "change": None if change is None else _json(change)}


def _change(a: float, b: float) -> float:
    if a == 0:
        return 0.0 if b == 0 else math.copysign(math.inf, b)
    return float(_round((b - a) / a, CHANGE_DIGITS))


def _json(change: float) -> float | None:
    return change if math.isfinite(change) else None


# -- conditions ------------------------------------------------------------------------------------

CONDITION = re.compile(
    r"\s*(?P<metric>[a-z0-9_]+(?:\.[\w.-]+)?)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<sign>[+-]?)\s*(?P<dollar>\$?)(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|ms|s)?\s*"
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One `--fail-if`: `kind` is `value` (B's value), `delta` (B - A) or `change` ((B - A) / A)."""

    text: str
    metric: str
    op: str
    kind: Literal["value", "delta", "change"]
    threshold: float

    def holds(self, pair: Mapping[str, Any]) -> bool:
        a, b = pair["a"], pair["b"]
        if b is None:
            return False
        if self.kind == "value":
            actual = b
        elif a is None:
            return False
        else:
            actual = _round(b - a, DIGITS) if self.kind == "delta" else _change(a, b)
        return OPERATORS[self.op](actual, self.threshold)


def parse_condition(text: str) -> Condition:
    """A `--fail-if` expression; InputError naming it and what is wrong."""
    match = CONDITION.fullmatch(text)
    if match is None:
        raise _bad(
            text, "expected <metric> <op> <value>, such as 'cost_per_request > +10%' or 'error_rate > 0.01'"
        )
    metric, sign, unit = match["metric"], match["sign"], match["unit"]
    if metric not in METRICS and not (metric.startswith(FINISH) and len(metric) > len(FINISH)):
        raise _bad(text, f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    share = metric in SHARES or metric.startswith(FINISH)
    number = float(match["number"])
    if match["dollar"] and metric not in COSTS:
        raise _bad(text, f"'$' is for cost_per_request and cost_total, not {metric}")
    if unit in ("ms", "s") and metric not in TIMES:
        raise _bad(text, f"{unit!r} is for latency and ttft metrics, not {metric}")
    if unit == "%" and not sign and not share:
        raise _bad(text, f"{metric} is not a share: write a change with its sign, such as +10%")
    kind: Literal["value", "delta", "change"] = "value" if not sign else "change" if unit == "%" else "delta"
    if unit == "%":
        number /= 100
    elif unit == "s":
        number *= 1000
    return Condition(text.strip(), metric, match["op"], kind, -number if sign == "-" else number)


def _bad(text: str, reason: str) -> InputError:
    return InputError(f"--fail-if {text!r}: {reason}")


def breaches(report: Mapping[str, Any], conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """Every condition that holds, for each group and for all requests (`group` None), in the
    order of the conditions, then all requests first, then the groups in the report's order."""
    by, found = report["by"], []
    scopes: list[tuple[dict[str, Any] | None, Any]] = [(None, report["all"]["metrics"])]
    scopes += [({by: group[by]}, group["metrics"]) for group in report["groups"]]
    for condition in conditions:
        for group, metrics in scopes:
            pair = metrics.get(condition.metric)
            if pair is not None and condition.holds(pair):
                found.append(
                    {"condition": condition.text, "group": group, "metric": condition.metric, **pair}
                )
    return found
