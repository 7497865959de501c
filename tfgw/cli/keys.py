"""`tfgw keys add | list | revoke`: gateway keys, stored only as hashes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tfgw.cli.options import CONFIG, config_path
from tfgw.config import KeySettings, Settings, load
from tfgw.config_bus import with_bus_secrets
from tfgw.config_file import append_table, remove_table
from tfgw.errors import ConfigError
from tfgw.keys import generate_key, hash_key
from tfgw.policy.counters import table_path
from tfgw.policy.limits import Usage, read_usage

app = typer.Typer(
    help="Gateway keys: clients send them as 'Authorization: Bearer <key>'.", no_args_is_help=True
)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A name for the key, e.g. the service that uses it."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute allowed."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute allowed."),
    config: Path | None = CONFIG,
) -> None:
    """Make a key. Prints the key alone (shown once); only its hash is stored."""
    path = config_path(config)
    settings = load(path, resolve_secrets=False) if path.exists() else None
    if settings is not None and any(k.name == name for k in settings.keys):
        raise ConfigError(str(path), f"a key named {name!r} already exists", key="keys")
    key = generate_key()
    entry: dict[str, object] = {"name": name, "hash": hash_key(key)}
    entry.update({k: v for k, v in (("rpm", rpm), ("tpm", tpm)) if v is not None})
    append_table(path, "keys", entry)
    print(key)
    print(f"added key {name!r} to {path}; it is shown only this once", file=sys.stderr)


@app.command("list")
def list_(
    config: Path | None = CONFIG, json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """List the keys: their limits and what each has used in the last minute, today and this month
    (UTC). Never the keys themselves."""
    file = config_path(config)
    settings = load(file, resolve_secrets=False)
    used = _usage(settings, file)
    rows = [_row(k, used[k.name]) for k in settings.keys]
    if json:
        print(orjson.dumps(rows).decode())
        return
    table = Table("name", "hash", "rpm", "tpm", "today", "this month", box=None)
    for key, row in zip(settings.keys, rows, strict=True):
        usage = used[key.name]
        table.add_row(
            key.name,
            str(row["hash"]),
            _count(usage.requests, key.rpm),
            _count(usage.tokens, key.tpm),
            _spend(usage.spent_usd_day, key.budget_usd_day),
            _spend(usage.spent_usd_month, key.budget_usd_month),
        )
    Console().print(table if rows else "no keys: the gateway accepts any caller on loopback")


def _usage(settings: Settings, file: Path) -> dict[str, Usage]:
    """Each key's usage: counted across the gateways in NATS with a NATS bus, else in the local
    table (and the local table, said so on stderr, when NATS cannot be reached)."""
    names = [k.name for k in settings.keys]
    if settings.bus.kind == "nats" and names:
        from tfgw.bus.connect import BusError
        from tfgw.policy.shared import read_shared_usage

        try:
            return asyncio.run(read_shared_usage(with_bus_secrets(settings.bus, file), names))
        except BusError as exc:
            print(f"tfgw: {exc.message}; showing this host's counts", file=sys.stderr)
    return read_usage(table_path(settings.tracing.state_path(settings.server.state_dir)), names)


def _row(key: KeySettings, usage: Usage) -> dict[str, object]:
    return {
        "name": key.name,
        "hash": key.hash[:15] + "…",
        "rpm": key.rpm,
        "tpm": key.tpm,
        "budget_usd_day": key.budget_usd_day,
        "budget_usd_month": key.budget_usd_month,
        "usage": {
            "rpm": usage.requests,
            "tpm": usage.tokens,
            "usd_day": usage.spent_usd_day,
            "usd_month": usage.spent_usd_month,
        },
    }


def _count(used: int, limit: int | None) -> str:
    """`12/600`; `12` without a limit."""
    return str(used) if limit is None else f"{used}/{limit}"


def _spend(used: float, budget: float | None) -> str:
    """`$1.23 of $5.00`; `$1.23` without a budget."""
    return f"${used:.2f}" if budget is None else f"${used:.2f} of ${budget:.2f}"


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The key's name."), config: Path | None = CONFIG) -> None:
    """Delete a key; requests using it are refused from the gateway's next start."""
    path = config_path(config)
    keys = load(path, resolve_secrets=False).keys
    index = next((i for i, k in enumerate(keys) if k.name == name), None)
    if index is None:
        raise ConfigError(str(path), f"no key named {name!r}", key="keys")
    remove_table(path, "keys", index)
    print(f"revoked key {name!r} in {path}", file=sys.stderr)
