"""tfgw.export.send.deliver: the one loop that sends a batch until it is taken, refused, out of
time or stopped (used by the exporter, `tfgw replay` and `tfgw otel test`)."""

from __future__ import annotations

import random
import time

from tfgw.export.encode import PROTOBUF, EncodedBatch
from tfgw.export.send import Delivery, SendResult, deliver
from tfgw.retry import Backoff

BATCH = EncodedBatch(spans=3, body=b"x", content_type=PROTOBUF, end_line=1)
BUSY = SendResult("retry", message="busy", status="503", retry_after=0.25)
TAKEN = SendResult("accepted", status="200")
REFUSED = SendResult("rejected", message="bad", status="400")


class Script:
    """A sender that answers from a list, and the waits it was asked to make."""

    def __init__(self, *results: SendResult) -> None:
        self.results = list(results)
        self.sent = 0
        self.waits: list[float] = []

    def send(self, batch: EncodedBatch) -> SendResult:
        self.sent += 1
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    def close(self) -> None:
        pass

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


def test_retries_until_accepted_honouring_retry_after_and_resets_the_backoff() -> None:
    sender = Script(BUSY, BUSY, TAKEN)
    backoff = Backoff(rng=random.Random(1))
    retried: list[SendResult] = []

    done = deliver(sender, BATCH, backoff, wait=sender.wait, on_retry=retried.append)

    assert (done, sender.waits, retried, backoff.attempts) == (
        Delivery(TAKEN, 3),
        [0.25, 0.25],
        [BUSY, BUSY],
        0,
    )


def test_a_rejection_is_final_at_once() -> None:
    sender = Script(REFUSED)
    assert (deliver(sender, BATCH, Backoff(), wait=sender.wait), sender.waits) == (Delivery(REFUSED, 1), [])


def test_gives_up_at_the_deadline_with_the_last_failure() -> None:
    sender = Script(BUSY)
    started = time.monotonic()
    done = deliver(sender, BATCH, Backoff(cap=0.05), deadline=started + 0.3)
    assert done.gave_up and not done.stopped and done.result == BUSY
    assert 0.3 <= time.monotonic() - started < 2.0
    assert done.attempts == sender.sent >= 2


def test_stops_when_the_wait_says_so() -> None:
    sender = Script(BUSY)
    done = deliver(sender, BATCH, Backoff(), wait=lambda seconds: True)
    assert (done, sender.sent) == (Delivery(BUSY, 1, stopped=True), 1)
