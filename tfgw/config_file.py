"""Editing a config file in place: append or remove one `[[array]]` table, keeping the rest of the
file (comments included) as the user wrote it. Every edit is validated before it is written, and
written atomically, so a config is never left half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from tfgw.config import KeyLocator, Settings, parse

__all__ = ["append_table", "remove_table", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def append_table(path: Path, array: str, entry: dict[str, Any]) -> Settings:
    """Add `entry` as a new `[[array]]` table at the end of the file."""
    source = _read(path)
    block = tomli_w.dumps({array: [entry]})
    text = source + ("\n" if source and not source.endswith("\n\n") else "") + block
    settings = parse(text, str(path), resolve_secrets=False)
    write_atomic(path, text)
    return settings


def remove_table(path: Path, array: str, index: int) -> Settings:
    """Remove the `index`-th `[[array]]` table: its header line up to the next header."""
    source = _read(path)
    lines = source.splitlines(keepends=True)
    located = KeyLocator(source)
    start = located.lines.get((array, index))
    if start is None:
        raise ValueError(f"[[{array}]] number {index} is not written as a table in {path}")
    end = min((line for line in located.headers if line > start), default=len(lines) + 1)
    text = "".join(lines[: start - 1] + lines[end - 1 :])
    settings = parse(text, str(path), resolve_secrets=False)
    write_atomic(path, text)
    return settings
