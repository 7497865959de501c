"""Editing a config file in place: append or remove one `[[array]]` table, set keys in or delete a
named `[a.b.c]` table, keeping the rest of the file (comments included) as the user wrote it.
Every edit is validated before it is written, and written atomically, so a config is never left
half-written."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from tfgw.config import KeyLocator, Settings, parse, read_toml
from tfgw.errors import ConfigError, InputError

__all__ = ["append_table", "delete_table", "remove_table", "update_table", "write_atomic"]

Check = Callable[[Settings], object]


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


# --------------------------------------------------------------------------------------------------
# Named tables: [a.b.c]


def update_table(
    path: Path, table: tuple[str, ...], values: Mapping[str, Any], *, check: Check | None = None
) -> Settings:
    """Set `values` in the `[a.b.c]` table named by `table` (a key set to None is removed), keeping
    its other keys and every comment. A table that does not exist yet is appended to the file.
    `check` may reject the resulting settings (by raising) before anything is written."""
    source = _read(path)
    data = read_toml(source, str(path))
    current = _lookup(data, table)
    if current is None:
        text = _append_named(source, table, values)
    else:
        text = _edit_named(source, table, values, path)
    expected = {**(current or {}), **values}
    if _lookup(read_toml(text, str(path)), table) != {k: v for k, v in expected.items() if v is not None}:
        raise _cannot_edit(path, table)
    return _validate_and_write(path, text, check)


def delete_table(path: Path, table: tuple[str, ...], *, check: Check | None = None) -> Settings:
    """Remove the `[a.b.c]` table named by `table` and its sub-tables. The comments above it and
    the blank lines and comments at its end (which describe what follows) are kept."""
    source = _read(path)
    if _lookup(read_toml(source, str(path)), table) is None:
        raise ValueError(f"[{_header_key(table)}] is not in {path}")
    lines = source.splitlines(keepends=True)
    located = KeyLocator(source)
    headers = _header_paths(located)
    if headers.get(located.lines.get(table, 0)) != table:
        raise _cannot_edit(path, table)
    doomed: set[int] = set()
    for line, header in headers.items():
        if header[: len(table)] == table:
            doomed.update(range(line, _last_content(lines, line, located) + 1))
    kept: list[str] = []
    for number, line_text in enumerate(lines, start=1):
        if number in doomed:
            continue
        # where a table was taken out from between two blank lines (or from the top), one is enough
        follows_removal = number - 1 in doomed
        if follows_removal and not line_text.strip() and (not kept or not kept[-1].strip()):
            continue
        kept.append(line_text)
    if len(lines) in doomed:  # taken from the end: so is the blank line that separated it
        while kept and not kept[-1].strip():
            kept.pop()
    text = "".join(kept)
    if _lookup(read_toml(text, str(path)), table) is not None:
        raise _cannot_edit(path, table)
    return _validate_and_write(path, text, check)


def _validate_and_write(path: Path, text: str, check: Check | None) -> Settings:
    try:
        settings = parse(text, str(path), resolve_secrets=False)
    except ConfigError as exc:
        # the line is one of the edited text, which is not written: name the key alone
        where = exc.file if exc.line is None else f"{exc.file}:{exc.line}"
        error = ConfigError(exc.file, exc.message.removeprefix(f"{where}: "))
        error.key = exc.key
        raise error from None
    if check is not None:
        check(settings)
    write_atomic(path, text)
    return settings


def _cannot_edit(path: Path, table: tuple[str, ...]) -> InputError:
    return InputError(
        f"{path}: cannot edit [{_header_key(table)}] in place (it is not written as one "
        f"[{_header_key(table)}] table); edit the file by hand"
    )


def _lookup(data: dict[str, Any], table: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = data
    for key in table:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _value(key)


def _header_key(table: tuple[str, ...]) -> str:
    return ".".join(_key(k) for k in table)


def _value(value: Any) -> str:
    """One TOML value on one line; a table is written inline."""
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def _append_named(source: str, table: tuple[str, ...], values: Mapping[str, Any]) -> str:
    if source and not source.endswith("\n"):
        source += "\n"
    if source and not source.endswith("\n\n"):
        source += "\n"
    body = "".join(f"{_key(k)} = {_value(v)}\n" for k, v in values.items() if v is not None)
    return f"{source}[{_header_key(table)}]\n{body}"


def _header_paths(located: KeyLocator) -> dict[int, tuple[str | int, ...]]:
    """The key path of each table header line."""
    headers = set(located.headers)
    return {line: path for path, line in located.lines.items() if line in headers}


def _next_header(located: KeyLocator, line: int, total: int) -> int:
    return min((h for h in located.headers if h > line), default=total + 1)


def _is_content(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


def _last_content(lines: list[str], header: int, located: KeyLocator) -> int:
    """The last line of a table's own keys: its blank lines and comments before the next header
    are left to what follows."""
    last = header
    for number in range(header + 1, _next_header(located, header, len(lines))):
        if _is_content(lines[number - 1]):
            last = number
    return last


def _statement_end(lines: list[str], line: int, limit: int) -> int:
    """The last line of the `key = value` statement that starts on `line` (a value may span lines)."""
    for end in range(line, limit + 1):
        try:
            tomllib.loads("".join(lines[line - 1 : end]))
        except tomllib.TOMLDecodeError:
            continue
        return end
    raise ValueError("unterminated value")


def _replace_line(line: str, value: Any) -> str:
    """`key = value  # comment` with the new value, the key as written and the comment kept in place."""
    prefix = re.match(r"^[^=]*=", line)
    assert prefix is not None  # the line was located as an assignment
    head = prefix.group(0) + " " + _value(value)
    ending = "\n" if line.endswith("\n") else ""
    body = line.rstrip("\n")
    whole = tomllib.loads(body)
    for hash_at in (m.start() for m in re.finditer("#", body)):
        try:
            if tomllib.loads(body[:hash_at]) != whole:
                continue
        except tomllib.TOMLDecodeError:
            continue
        spaces = len(body[:hash_at]) - len(body[:hash_at].rstrip())
        return head + " " * max(hash_at - len(head), min(spaces, 2), 1) + body[hash_at:] + ending
    return head + ending


def _edit_named(source: str, table: tuple[str, ...], values: Mapping[str, Any], path: Path) -> str:
    lines = source.splitlines(keepends=True)
    located = KeyLocator(source)
    headers = _header_paths(located)
    start = located.lines.get(table)
    if start is None or headers.get(start) != table:
        raise _cannot_edit(path, table)
    end = _next_header(located, start, len(lines)) - 1
    # (first line, last line, new lines), applied bottom up so the line numbers stay right
    edits: list[tuple[int, int, list[str]]] = []
    added: list[str] = []
    for key, value in values.items():
        line = located.lines.get((*table, key))
        if line is not None and headers.get(line) == (*table, key):
            # written as a sub-table [a.b.c.key]: take it out, and write the key inline instead
            last = _last_content(lines, line, located)
            if last < len(lines) and not lines[last].strip() and not lines[line - 2].strip():
                last += 1  # and one of the blank lines around it
            edits.append((line, last, []))
            line = None
        if line is None or not start < line <= end:
            if value is not None:
                added.append(f"{_key(key)} = {_value(value)}\n")
            continue
        try:
            last = _statement_end(lines, line, end)
        except ValueError:
            raise _cannot_edit(path, table) from None
        if value is None:
            new = []
        elif last == line:
            new = [_replace_line(lines[line - 1], value)]
        else:
            new = [f"{_key(key)} = {_value(value)}\n"]
        edits.append((line, last, new))
    if added:
        after = _last_content(lines, start, located)
        edits.append((after + 1, after, added))
    for first, last, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[first - 1 : last] = new
    return "".join(lines)
