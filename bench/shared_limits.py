"""What a limit counted across gateways costs a request (tfgw.policy.shared): the time of
`SharedLimits.admit` (a get and an update in NATS JetStream's key-value store) against the local
table's `Limits.admit`, on a real nats-server on 127.0.0.1, one client, N sequential requests.

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


async def measure(url: str, directory: Path, requests: int) -> dict[str, float]:
    key = KeySettings(name="bench", hash="sha256:" + "0" * 64, rpm=10**9, tpm=10**12)
    local = Limits([key], directory / "limits.bin")
    shared = SharedLimits(Limits([key], directory / "other.bin"))
    await shared.connect(BusSettings(kind="nats", urls=(url,)))
    out: dict[str, float] = {}
    for name, admit in (("local", None), ("shared", shared)):
        times, cpu = [], time.process_time()
        for _ in range(requests):
            t = time.perf_counter()
            admission = local.admit(key, 10) if admit is None else await admit.admit(key, 10)
            times.append(time.perf_counter() - t)
            (local if admit is None else admit).settle(admission, 10, 0.0)
        await asyncio.sleep(0.5)  # the shared settles, tasks of their own
        out[f"{name}_p50_ms"] = round(percentile(times, 50) * 1000, 3)
        out[f"{name}_p99_ms"] = round(percentile(times, 99) * 1000, 3)
        out[f"{name}_cpu_us_per_request"] = round((time.process_time() - cpu) / requests * 1e6, 1)
    await shared.close()
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
