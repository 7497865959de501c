"""The short form of `bench/flap_load.py`, run by the same code: 20 s at 100 req/s over every route
(chat completions, `/v1/responses` and `/v1/messages`, each JSON and streamed, and embeddings)
through a real `tfgw serve`, while its export receiver goes down for 5 s of every 10 (refusing
connections, then answering 503). No request may fail because of the gateway, every span the
trace log's rows count must reach the receiver once the exporter has caught up, and no span may
arrive twice except in a whole re-sent batch (the duplicate docs/export.md allows)."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import flap_load  # bench/ is not a package: on sys.path above

pytestmark = pytest.mark.e2e

DURATION_S, RATE, FLAP_S = 20.0, 100.0, 5.0


def test_no_request_fails_and_no_span_is_lost_while_the_export_backend_flaps() -> None:
    settings = flap_load.Settings(duration=DURATION_S, rate=RATE, flap=FLAP_S, catch_up=35.0)

    report = flap_load.bench(settings)

    requests, spans, receiver = report["requests"], report["spans"], report["receiver"]
    scheduled = round(DURATION_S * RATE)
    by_route = Counter(flap_load.ROUTES[i % len(flap_load.ROUTES)].name for i in range(scheduled))
    assert report["verdict"] == {
        "gateway_failures": 0,
        "missing_spans": 0,
        "duplicates_beyond_documented": 0,
        "ok": True,
        "problems": [],
    }, flap_load.markdown(report)
    assert (requests["scheduled"], requests["started"], requests["answered"], requests["failed"]) == (
        scheduled,
        scheduled,
        scheduled,
        {},
    )
    assert {name: route["answered"] for name, route in report["routes"].items()} == dict(by_route)
    assert (spans["traces_written"], spans["rows"]) == (scheduled, scheduled)
    assert (spans["unique"], spans["missing"]) == (spans["written"], 0)
    assert spans["duplicates"] == spans["resent_spans"]
    # the backend was down both ways, and up for good at the end
    assert [mode for _, mode in receiver["phases"] if mode != "up"] == ["refuse", "503"]
    assert receiver["phases"][-1][1] == "up"
    # whether the exporter tries within a 5 s window (and meets the 503s) depends on its backoff
    # after the refusals and on the CPU it gets: the spans above are what must hold either way
