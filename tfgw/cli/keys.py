"""`tfgw keys add | list | revoke`: gateway keys, stored only as hashes."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tfgw.cli.options import CONFIG, config_path
from tfgw.config import load
from tfgw.config_file import append_table, remove_table
from tfgw.errors import ConfigError
from tfgw.keys import generate_key, hash_key

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
    """List the keys (names and limits; never the keys)."""
    keys = load(config_path(config), resolve_secrets=False).keys
    rows = [{"name": k.name, "hash": k.hash[:15] + "…", "rpm": k.rpm, "tpm": k.tpm} for k in keys]
    if json:
        print(orjson.dumps(rows).decode())
        return
    table = Table("name", "hash", "rpm", "tpm", box=None)
    for row in rows:
        table.add_row(str(row["name"]), str(row["hash"]), str(row["rpm"] or "-"), str(row["tpm"] or "-"))
    Console().print(table if rows else "no keys: the gateway accepts any caller on loopback")


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
