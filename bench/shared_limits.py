"""What a limit counted across gateways costs a request (tfgw.policy.shared): the time of
`SharedLimits.admit` (NATS JetStream's key-value store) against the local table's `Limits.admit`,
on a real nats-server on 127.0.0.1, N requests of one key: one gateway alone, then two taking
turns (each admission after the other's write: a conflict every time, the costly case). Back to
back (the worst case: nothing yields between two admissions, so nothing is counted ahead
meanwhile), yielding once between them (as any request does, which awaits its provider), 2 ms
apart, and in bursts of 50 at once (`asyncio.gather`; the percentiles leave out the first burst, which
finds nothing counted ahead, and its slowest admission is given alone).

    python bench/shared_limits.py              # 2,000 requests, about 5 seconds
    python bench/shared_limits.py --requests 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.nats import NatsServer  # noqa: E402
from tfgw.config import KeySettings  # noqa: E402
from tfgw.config_bus import BusSettings  # noqa: E402
from tfgw.policy.limits import Limits  # noqa: E402
from tfgw.policy.shared import SharedLimits  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


BURST = -1.0  # a scenario's "gap" for bursts of 50 admissions at once


async def timed(gateway: SharedLimits, key: KeySettings, times: list[float]) -> None:
    t = time.perf_counter()
    admission = await gateway.admit(key, 10)
    times.append(time.perf_counter() - t)
    gateway.settle(admission, 10, 0.0)


async def measure(url: str, directory: Path, requests: int) -> dict[str, float]:
    key = KeySettings(name="bench", hash="sha256:" + "0" * 64, rpm=10**9, budget_usd_day=10**6)
    local = Limits([key], directory / "limits.bin")
    bus = BusSettings(kind="nats", urls=(url,))
    shared = [SharedLimits(Limits([key], directory / f"gateway-{i}.bin")) for i in range(2)]
    for gateway in shared:
        await gateway.connect(bus)
    out: dict[str, float] = {}
    # one gateway alone on the key; then two taking turns (every admission after the other's
    # write); back to back, and 2 ms apart (a request's own time: reservations are made meanwhile)
    scenarios = (
        ("local", None, None),
        ("shared", shared[:1], None),
        ("shared_two_gateways", shared, None),
        ("shared_yielding", shared[:1], 0.0),
        ("shared_two_gateways_yielding", shared, 0.0),
        ("shared_2ms_apart", shared[:1], 0.002),
        ("shared_two_gateways_2ms_apart", shared, 0.002),
        ("shared_bursts_of_50", shared[:1], BURST),
        ("shared_two_gateways_bursts_of_50", shared, BURST),
    )
    for name, turns, gap in scenarios:
        times: list[float] = []
        cpu = time.process_time()
        if gap == BURST:
            assert turns is not None
            for first in range(0, requests, 50):
                await asyncio.gather(
                    *(timed(turns[i % len(turns)], key, times) for i in range(first, first + 50))
                )
                await asyncio.sleep(0.002)
            # the key's first burst finds nothing counted ahead on a gateway: reported alone
            out[f"{name}_first_burst_max_ms"] = round(max(times[:50]) * 1000, 3)
            times = times[50:]
        for i in range(requests if gap != BURST else 0):
            if gap is not None:
                await asyncio.sleep(gap)
            t = time.perf_counter()
            counter = local if turns is None else turns[i % len(turns)]
            admission = local.admit(key, 10) if turns is None else await turns[i % len(turns)].admit(key, 10)
            times.append(time.perf_counter() - t)
            counter.settle(admission, 10, 0.0)
        await asyncio.sleep(1.5)  # the shared settles and reservations, tasks of their own
        out[f"{name}_p50_ms"] = round(percentile(times, 50) * 1000, 3)
        out[f"{name}_p99_ms"] = round(percentile(times, 99) * 1000, 3)
        out[f"{name}_cpu_us_per_request"] = round((time.process_time() - cpu) / requests * 1e6, 1)
    cpu = time.process_time()  # the 2 ms loop's own cost, without admissions: to subtract
    for _ in range(requests):
        await asyncio.sleep(0.002)
    out["loop_2ms_apart_cpu_us_per_request"] = round((time.process_time() - cpu) / requests * 1e6, 1)
    for gateway in shared:
        await gateway.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as nats:
        print(json.dumps(asyncio.run(measure(nats.url, Path(tmp), args.requests)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
