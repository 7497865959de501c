"""The NATS exporter's decisions, without NATS: which fetched messages are acked, termed or nakked
(and with what delay) for each way a send can end, and the consumer every exporter shares.

The real consumer on a real nats-server is in tests/e2e/test_nats_export.py."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import orjson

from tests.export.target_stub import TargetStub
from tests.samples import Request, trace_line
from tfgw.bus.consume import TargetConsumer, _num_delivered, _Settlement, consumer_config
from tfgw.config_bus import BusSettings
from tfgw.export.encode import EncodedBatch
from tfgw.export.send import SendResult
from tfgw.retry import Backoff


@dataclass(frozen=True)
class Msg:
    """What `_deliver` reads of a nats-py message."""

    data: bytes


class Sender:
    """Answers each send with the next programmed result (then accepted); records the spans."""

    def __init__(self, *results: SendResult) -> None:
        self.results = list(results)
        self.sent: list[int] = []

    def send(self, batch: EncodedBatch) -> SendResult:
        self.sent.append(batch.spans)
        return self.results.pop(0) if self.results else SendResult("accepted", status="200")

    def close(self) -> None:
        pass


def msgs(*numbers: int) -> list[Msg]:
    return [Msg(orjson.dumps(trace_line(Request(n)))) for n in numbers]


def consumer(max_spans: int = 2000) -> TargetConsumer:
    target = TargetStub("http://127.0.0.1:9/v1/traces", name="rx", protocol="http/json")
    c = TargetConsumer(target, BusSettings(kind="nats"), threading.Event(), max_spans=max_spans)  # type: ignore[arg-type]
    c._backoff = Backoff(rng=random.Random(7))
    c.stats = dict.fromkeys(("delivered", "rejected", "partial_rejected", "unsendable", "unreadable"), 0)
    c.stats.update({"termed": 0, "acked": 0, "attempts": 0, "retries": 0, "retrying": False})
    c.stats.update({"last_error": None, "warning": None})
    return c


def counts(c: TargetConsumer) -> dict[str, object]:
    keys = (
        "delivered",
        "rejected",
        "partial_rejected",
        "unreadable",
        "termed",
        "acked",
        "attempts",
        "retries",
        "last_error",
    )
    return {k: c.stats[k] for k in keys}


def test_an_accepted_fetch_is_acked_whole() -> None:
    fetched, c, sender = msgs(1, 2, 3), consumer(), Sender()
    assert c._deliver(fetched, sender) == _Settlement(ack=fetched)  # type: ignore[arg-type]
    assert sender.sent == [12]
    assert counts(c) == {
        "delivered": 12, "rejected": 0, "partial_rejected": 0, "unreadable": 0, "termed": 0, "acked": 3,
        "attempts": 1, "retries": 0, "last_error": None,
    }  # fmt: skip


def test_a_retryable_failure_acks_what_was_accepted_and_naks_the_rest_after_retry_after() -> None:
    fetched, c = msgs(1, 2, 3, 4, 5), consumer(max_spans=8)  # payloads: lines 1-2, 3-4, 5
    sender = Sender(
        SendResult("accepted", status="200"),
        SendResult("retry", status="503", message="busy", retry_after=2.5),
    )
    settlement = c._deliver(fetched, sender)  # type: ignore[arg-type]
    assert settlement == _Settlement(ack=fetched[:2], nak=fetched[2:], delay=2.5)
    assert sender.sent == [8, 8]  # the third payload was not sent
    assert counts(c) == {
        "delivered": 8, "rejected": 0, "partial_rejected": 0, "unreadable": 0, "termed": 0, "acked": 2,
        "attempts": 2, "retries": 1, "last_error": "retrying (503): busy",
    }  # fmt: skip
    assert c.stats["retrying"] is True


def test_without_retry_after_the_nak_delay_follows_the_backoff_and_a_success_resets_it() -> None:
    c = consumer()
    expected = Backoff(rng=random.Random(7))
    delays = [c._deliver(msgs(1), Sender(SendResult("retry", status="UNAVAILABLE"))).delay for _ in range(3)]  # type: ignore[arg-type]
    assert delays == [expected.next_delay() for _ in range(3)]
    c._deliver(msgs(1), Sender())  # type: ignore[arg-type]
    assert (c._backoff.attempts, c.stats["retrying"]) == (0, False)
    assert (c.stats["attempts"], c.stats["retries"]) == (4, 3)  # every send counts, each failure a retry


def test_a_rejected_payload_is_termed_and_the_next_one_still_sent() -> None:
    fetched, c = msgs(1, 2, 3), consumer(max_spans=8)
    sender = Sender(SendResult("rejected", status="400", message="bad span"))
    assert c._deliver(fetched, sender) == _Settlement(ack=fetched[2:], term=fetched[:2])  # type: ignore[arg-type]
    assert counts(c) == {
        "delivered": 4, "rejected": 8, "partial_rejected": 0, "unreadable": 0, "termed": 2, "acked": 1,
        "attempts": 2, "retries": 0, "last_error": "rejected (400): bad span",
    }  # fmt: skip


def test_a_partial_success_is_acked_and_counted() -> None:
    fetched, c = msgs(1, 2), consumer()
    sender = Sender(SendResult("accepted", rejected_spans=3, message="3 too long", status="200"))
    assert c._deliver(fetched, sender) == _Settlement(ack=fetched)  # type: ignore[arg-type]
    assert (c.stats["delivered"], c.stats["partial_rejected"], c.stats["last_error"]) == (
        5,
        3,
        "partial success: 3 too long",
    )


def test_an_answer_that_is_not_otlp_is_acked_with_a_warning_the_next_good_one_clears() -> None:
    c, first, second = consumer(), msgs(1), msgs(2)
    warned = SendResult("accepted", status="200", warning="200 with a body that is not …")
    assert c._deliver(first, Sender(warned)) == _Settlement(ack=first)  # type: ignore[arg-type]
    after_warning = (c.stats["delivered"], c.stats["last_error"], c.stats["warning"])
    assert c._deliver(second, Sender()) == _Settlement(ack=second)  # type: ignore[arg-type]
    assert after_warning == (4, None, "200 with a body that is not …")
    assert (c.stats["delivered"], c.stats["last_error"], c.stats["warning"]) == (8, None, None)


def test_a_message_that_is_not_a_trace_line_is_termed_and_counted() -> None:
    good = msgs(1)
    fetched = [Msg(b"{torn"), good[0], Msg(b"[1, 2]")]
    c = consumer()
    assert c._deliver(fetched, Sender()) == _Settlement(ack=good, term=[fetched[0], fetched[2]])  # type: ignore[arg-type]
    assert (c.stats["unreadable"], c.stats["termed"], c.stats["delivered"]) == (2, 2, 4)


def test_every_exporter_shares_one_durable_explicit_ack_consumer_per_target() -> None:
    config = consumer_config(BusSettings(kind="nats", subject="t.x"), "mw").as_dict()
    assert config == {
        "name": "tfgw-mw",
        "durable_name": "tfgw-mw",
        "description": "tfgw exporters of target mw",
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": 60_000_000_000,
        "max_deliver": -1,
        "filter_subject": "t.x",
        "max_ack_pending": 20_000,
        "replay_policy": "instant",
        "idle_heartbeat": 0,
        "inactive_threshold": 0,
    }


def test_the_delivery_count_is_read_from_either_form_of_reply_subject() -> None:
    v1 = "$JS.ACK.TFGW_TRACES.tfgw-mw.3.17.20.1733000000000000000.0"
    v2 = "$JS.ACK._.ACCHASH.TFGW_TRACES.tfgw-mw.2.17.20.1733000000000000000.0.xyz"
    assert [_num_delivered(v1), _num_delivered(v2), _num_delivered("inbox.1")] == [3, 2, 1]
