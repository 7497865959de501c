"""`GET /metrics` through the app's test client: the snapshot as it is, behind a key when there
are keys, 503 with a reason without one."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from tfgw.config import KeySettings, demo_settings
from tfgw.gateway import create_app
from tfgw.keys import hash_key
from tfgw.metrics import catalog
from tfgw.metrics.deriver import prepare

KEY = "tfgw-unit-metrics-key-0123456789"


def settings(tmp_path: Path, *, tracing: bool = True, keys: bool = False) -> Any:
    base = demo_settings()
    tracing_settings = replace(base.tracing, dir=str(tmp_path / "traces"), enabled=tracing)
    keyring = (KeySettings("unit", hash_key(KEY)),) if keys else ()
    return replace(base, tracing=tracing_settings, keys=keyring)


def get(settings: Any, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async def main() -> tuple[int, str, str]:
        app = create_app(settings)
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/metrics", headers=headers or {})
            return response.status_code, response.content_type, await response.get_data(as_text=True)

    return asyncio.run(main())


def test_the_snapshot_is_served_as_it_is(tmp_path: Path) -> None:
    s = settings(tmp_path)
    prepare(s)
    snapshot = tmp_path / "state" / "metrics.prom"
    snapshot.write_text("tfgw_spans_written_total 7\n")
    assert get(s) == (200, "text/plain; version=0.0.4; charset=utf-8", "tfgw_spans_written_total 7\n")


def test_without_a_snapshot_or_without_tracing_there_is_a_reason(tmp_path: Path) -> None:
    assert get(settings(tmp_path)) == (
        503,
        "text/plain; charset=utf-8",
        f"no metrics yet: the exporter has not written {tmp_path / 'state' / 'metrics.prom'}\n",
    )
    assert get(settings(tmp_path, tracing=False)) == (
        503,
        "text/plain; charset=utf-8",
        "no metrics: tracing is disabled ([tracing] enabled = false)\n",
    )


def test_with_keys_a_scrape_needs_one(tmp_path: Path) -> None:
    s = settings(tmp_path, keys=True)
    prepare(s)
    status, content_type, body = get(s)
    assert (status, content_type, orjson.loads(body)["error"]["code"]) == (
        401,
        "application/json",
        "invalid_api_key",
    )
    status, _, body = get(s, {"authorization": f"Bearer {KEY}"})
    assert (status, body.count("# TYPE ")) == (200, len(catalog.CATALOG))  # every family, empty
