"""Limits counted in NATS (`tfgw.policy.shared`): what is counted ahead of a key's requests, and when.

`_ahead` is pure arithmetic on a slot; the rest runs `SharedLimits` against a real nats-server on
127.0.0.1, counting its key-value writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nats import NatsServer
from tfgw.config import KeySettings
from tfgw.config_bus import BusSettings
from tfgw.policy import shared
from tfgw.policy.counters import Slot
from tfgw.policy.limits import DAY, Limits, Rules, month_of
from tfgw.policy.shared import RESERVE, SharedLimits, read_shared_usage

NOW = 1_795_000_000
HASH = "sha256:" + "0" * 64


def counted(slot: Slot, requests: int, rules: Rules) -> None:
    for _ in range(requests):
        assert slot.count(0, NOW, NOW // DAY, month_of(NOW), 0, rules.limits)[1]


def test_ahead_takes_at_most_half_of_what_is_left_of_the_rpm() -> None:
    rules = Rules.of(KeySettings(name="k", hash=HASH, rpm=10))
    slot = Slot()
    counted(slot, 4, rules)
    batch = shared._ahead(slot, rules, NOW, NOW // DAY, month_of(NOW), 8)
    assert batch == [(NOW, 5, 0, 0, 0), (NOW, 6, 0, 0, 0), (NOW, 7, 0, 0, 0)]  # 6 left: 3
    assert shared._ahead(slot, rules, NOW, NOW // DAY, month_of(NOW), 8) == [(NOW, 8, 0, 0, 0)]
    assert shared._ahead(slot, rules, NOW, NOW // DAY, month_of(NOW), 8) == [(NOW, 9, 0, 0, 0)]
    assert shared._ahead(slot, rules, NOW, NOW // DAY, month_of(NOW), 8) == []  # the last one: never


def test_ahead_counts_nothing_once_a_budget_is_nearly_spent_or_none_is_wanted() -> None:
    rules = Rules.of(KeySettings(name="k", hash=HASH, budget_usd_day=1.0))
    slot = Slot()
    counted(slot, 1, rules)
    day, month = NOW // DAY, month_of(NOW)
    assert shared._ahead(slot, rules, NOW, day, month, 0) == []
    assert shared._ahead(slot, rules, NOW, day, month, 2) == [(NOW, 2, 0, 0, 0), (NOW, 3, 0, 0, 0)]
    slot.settled(0, NOW, day, month, NOW, 0, 0, 900_000)  # 0.90 USD of 1.00
    assert shared._ahead(slot, rules, NOW, day, month, 2) == []


@pytest.fixture
def nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    # what is counted ahead, not what a slow NATS does (tests/e2e/test_shared_limits.py has NATS
    # down): on a loaded machine one key-value write once took longer than the gateway's 0.5 s,
    # and its requests were rightly counted on the host instead
    monkeypatch.setattr(shared, "TIMEOUT_S", 10.0)
    with NatsServer(tmp_path) as server:
        yield server


async def connected(tmp_path: Path, url: str, key: KeySettings, name: str = "g") -> SharedLimits:
    gateway = SharedLimits(Limits([key], tmp_path / f"{name}.bin"))
    await gateway.connect(BusSettings(kind="nats", urls=(url,)))
    return gateway


def counting_writes(gateway: SharedLimits) -> list[int]:
    """A one-item list counting the gateway's key-value updates from now on."""
    kv: Any = gateway._kv
    writes, update = [0], kv.update

    async def counted_update(*args: Any, **kwargs: Any) -> Any:
        writes[0] += 1
        return await update(*args, **kwargs)

    kv.update = counted_update
    return writes


def test_bursts_after_the_first_are_admitted_on_requests_counted_ahead(
    tmp_path: Path, nats: NatsServer
) -> None:
    key = KeySettings(name="team", hash=HASH, rpm=1_000_000)

    async def bursts() -> tuple[list[int], int]:
        gateway = await connected(tmp_path, nats.url, key)
        writes, per_burst = counting_writes(gateway), []
        for _ in range(6):
            before = writes[0]
            admissions = await asyncio.gather(*(gateway.admit(key, 0) for _ in range(50)))
            assert all(a.shared for a in admissions)
            per_burst.append(writes[0] - before)
            await asyncio.sleep(0.01)  # a request's own time: more are counted ahead meanwhile
        depth = gateway._keys["team"].depth
        await gateway.close()
        return per_burst, depth

    per_burst, depth = asyncio.run(bursts())
    # the first burst finds nothing counted ahead: a few writes, each counting many ahead, not
    # one a request; the later ones find theirs counted ahead, counted again in one write
    assert per_burst[0] <= 4, per_burst
    assert all(writes <= 1 for writes in per_burst[1:]), per_burst
    assert depth >= 100


def test_requests_counted_ahead_and_not_used_are_given_back(tmp_path: Path, nats: NatsServer) -> None:
    key = KeySettings(name="team", hash=HASH, rpm=100)
    bus = BusSettings(kind="nats", urls=(nats.url,))

    async def one_request() -> tuple[int, int, int]:
        gateway = await connected(tmp_path, nats.url, key)
        gateway.settle(await gateway.admit(key, 0), 0, 0.0)
        await asyncio.sleep(0.2)  # the reservation task's write
        held = (await read_shared_usage(bus, ["team"]))["team"].requests
        deadline = time.monotonic() + shared.RESERVED_S + 5
        while (after := (await read_shared_usage(bus, ["team"]))["team"].requests) != 1:
            assert time.monotonic() < deadline, f"{after} requests counted, not 1"
            await asyncio.sleep(0.1)
        depth = gateway._keys["team"].depth
        await gateway.close()
        return held, after, depth

    assert asyncio.run(one_request()) == (1 + RESERVE, 1, RESERVE)
