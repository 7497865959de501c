"""Export faults end to end: the trace dir on a full file system. A real `tfgw serve` (and its
exporter child) writes its trace log to a small tmpfs mounted on the test's trace dir, which the
test fills with a file of its own and frees again by deleting it.

The tmpfs is mounted with `mount` as root (CI); otherwise the gateway runs under
`unshare --user --map-root-user --mount`, which mounts it in a mount namespace of the gateway's
own, and the test reaches the files through `/proc/<gateway pid>/root`. Where neither can mount,
the test skips and says so. What a full disk gives is stated in docs/faults.md, "Export faults".
"""

from __future__ import annotations

import errno
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.e2e.gateway import Gateway
from tests.e2e.test_export import ENV, write_config
from tests.e2e.test_export_faults import SPANS_PER_CHAT, assert_unaffected, poll, target
from tests.fakes.otlp import OtlpHttpReceiver
from tests.fakes.upstream import FakeUpstream

#: the tmpfs: room for the lines before it fills and the cursors, not much more
SIZE = "2m"
PAGE = 4096
#: a message long enough that each trace line is over a page: a full tmpfs has less than a page
#: of room left (the slack at the end of a file), so no line of a full disk's time fits anywhere
PROMPT = [{"role": "user", "content": " ".join(f"word{i}" for i in range(400))}]
TIMED = 20
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]
CANNOT_MOUNT = "neither mount (as root) nor unshare --user --map-root-user --mount can mount a tmpfs here"


def _can_mount_here() -> bool:
    return os.geteuid() == 0


def _can_unshare() -> bool:
    probe = [*UNSHARE, "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', "/tmp"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


class SmallDisk:
    """A `SIZE` tmpfs on `path` for the gateway; `view(gateway)` is where this process sees it."""

    def __init__(self, path: Path, namespaced: bool) -> None:
        self.path, self.namespaced = path, namespaced

    def wrap(self, gateway: Gateway) -> None:
        if self.namespaced:  # mount in the gateway's own namespace, then run it there
            mount = f'mount -t tmpfs -o size={SIZE},mode=0700 tmpfs "$0" && exec "$@"'
            gateway.command = [*UNSHARE, "sh", "-c", mount, str(self.path), *gateway.command]

    def view(self, gateway: Gateway) -> Path:
        if not self.namespaced:
            return self.path
        assert gateway.process is not None
        return Path(f"/proc/{gateway.process.pid}/root{self.path}")

    def fill(self, filler: Path) -> None:
        """Write `filler` until the file system has no page left."""
        chunk = b"\0" * (64 * 1024)
        with filler.open("wb", buffering=0) as f:
            while True:
                try:
                    f.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    chunk = chunk[: len(chunk) // 2]
                    if len(chunk) < PAGE:
                        return


@contextmanager
def small_disk(path: Path) -> Iterator[SmallDisk]:
    """A tmpfs of `SIZE` on `path` (as root, here, unmounted at the end; else in the gateway's
    namespace, gone with it), or a skip when neither can mount."""
    path.mkdir(parents=True, exist_ok=True)
    if _can_mount_here():
        mount = ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(path)]
        if subprocess.run(mount, capture_output=True, timeout=30, check=False).returncode == 0:
            try:
                yield SmallDisk(path, namespaced=False)
            finally:
                subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=True)
            return
    if not _can_unshare():
        pytest.skip(CANNOT_MOUNT)
    yield SmallDisk(path, namespaced=True)


def chats(gw: Gateway, n: int) -> tuple[list[str], list[float]]:
    """`n` chat completions, each answered 200 (else it raises): their trace ids and latencies."""
    ids, took = [], []
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        for _ in range(n):
            start = time.monotonic()
            raw = client.chat.completions.with_raw_response.create(model="gpt", messages=PROMPT)  # type: ignore[arg-type]
            took.append(time.monotonic() - start)
            assert raw.status_code == 200
            ids.append(raw.headers["x-tfgw-trace-id"])
    return ids, took


def readyz(gw: Gateway) -> dict:
    body: dict = httpx.get(f"{gw.url}/readyz").json()
    return body


def segment_tails(view: Path) -> dict[str, bytes]:
    """The last byte of every segment (b"\\n" when its last line is whole)."""
    return {p.name: p.read_bytes()[-1:] for p in sorted(view.glob("tfgw-*.jsonl"))}


def listed(view: Path) -> tuple[list[str], str]:
    done = subprocess.run(
        [sys.executable, "-m", "tfgw", "traces", "list", "--dir", str(view), "--json", "--limit", "1000"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return [orjson.loads(line)["trace_id"] for line in done.stdout.splitlines()], done.stderr


def test_a_full_disk_answers_every_request_drops_and_counts_each_trace_and_writing_resumes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    traces = tmp_path / "traces"
    with OtlpHttpReceiver() as rx, small_disk(traces) as disk:
        config = write_config(tmp_path, upstream, target("rx", rx.base_url))
        gateway = Gateway(config, env=ENV)
        disk.wrap(gateway)
        with gateway as gw:
            view = disk.view(gw)
            before, usual = chats(gw, TIMED)
            rx.wait_for(TIMED * SPANS_PER_CHAT)
            line_sizes = [
                len(line) for p in view.glob("tfgw-*.jsonl") for line in p.read_bytes().splitlines()
            ]
            disk.fill(view / "filler")
            lost, took = chats(gw, TIMED)  # the disk is full: answered all the same
            tracing = poll(lambda: readyz(gw)["tracing"], lambda t: t["dropped"] == TIMED)
            tails_full = segment_tails(view)
            (view / "filler").unlink()  # space again: the same gateway writes on
            after, _ = chats(gw, 5)
            spans = rx.wait_for((TIMED + 5) * SPANS_PER_CHAT, timeout=10)
            dropped = f'tfgw_trace_log_dropped_traces_total{{reason="write_failed"}} {TIMED}\n'
            scrape = poll(lambda: httpx.get(f"{gw.url}/metrics").text, lambda text: dropped in text)
            export = poll(lambda: readyz(gw)["export"]["rx"], lambda e: e["delivered"] == (TIMED + 5) * 4)
            tracing_after, tails_after = readyz(gw)["tracing"], segment_tails(view)
            rows, warnings = listed(view)
    assert min(line_sizes) > PAGE, line_sizes  # the test's premise: no line fits in a file's slack
    assert_unaffected(took, statistics.median(usual))
    error = "OSError: [Errno 28] No space left on device"
    assert (tracing["written"], tracing["dropped"], tracing["encode_errors"], tracing["last_error"]) == (
        TIMED, TIMED, 0, error,
    )  # fmt: skip
    assert 1 <= tracing["write_errors"] <= TIMED  # a batch of lines a failed write
    # a write cut short was cut back: every segment still ends with a whole line
    assert set(tails_full.values()) == set(tails_after.values()) == {b"\n"}
    assert (tracing_after["written"], tracing_after["dropped"]) == (TIMED + 5, TIMED)
    assert dropped in scrape
    # what was written whole is read and delivered, each once; what was dropped nowhere
    delivered = [s["traceId"] for s in spans]
    assert sorted(set(delivered)) == sorted(before + after) and len(delivered) == (TIMED + 5) * SPANS_PER_CHAT
    assert (sorted(rows), warnings) == (sorted(before + after), "")
    assert not set(lost) & set(delivered)
    assert (export["pending_bytes"], export["unreadable"], export["last_error"]) == (0, 0, None)
