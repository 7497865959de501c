"""The TOML side of the config: reading the text, finding the line each key is written on, and
typed access to its tables, every failure a `ConfigError` naming the file, the line and the
dotted key (`models[1].targets[0].provider`).

It knows TOML and `env:VAR` references, not tfgw's schema: `tfgw.config` declares the sections
and builds the settings on top of `TableChecker`; `tfgw.config_file` edits the file with
`KeyLocator`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tfgw.errors import ConfigError

__all__ = ["KeyLocator", "KeyPath", "TableChecker", "dotted", "read_toml", "type_name"]

#: a key path: table names and keys, and the index of an entry in an array of tables
KeyPath = tuple[str | int, ...]


def read_toml(source: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(file, f"invalid TOML: {message}", line=line) from exc


class TableChecker:
    """Typed reads of a parsed TOML document; `env:VAR` strings are resolved by `secret()` when
    `resolve_secrets`."""

    def __init__(self, file: str, source: str, resolve_secrets: bool) -> None:
        self.file = file
        self.locate = KeyLocator(source)
        self.resolve_secrets = resolve_secrets

    def fail(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(self.file, message, key=dotted(path), line=self.locate(path))

    def table(self, value: Any, path: KeyPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table, got {type_name(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail((*path, key), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def value(self, table: dict[str, Any], path: KeyPath, key: str, kind: type | tuple, default: Any):
        if key not in table:
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            wanted = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise self.fail((*path, key), f"expected {wanted}, got {type_name(value)}")
        return value

    def required(self, table: dict[str, Any], path: KeyPath, key: str, kind: type) -> Any:
        if key not in table:
            raise self.fail((*path, key), "is required")
        return self.value(table, path, key, kind, None)

    def positive(self, table, path, key, kind, default, *, zero: bool = False):
        value = self.value(table, path, key, kind, default)
        if value is not None and (value < 0 or (value == 0 and not zero)):
            raise self.fail((*path, key), f"must be {'>= 0' if zero else '> 0'}, got {value}")
        return value

    def choice(self, table, path, key, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.value(table, path, key, str, default)
        if value is not None and value not in choices:
            raise self.fail((*path, key), f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def str_map(self, table, path, key) -> Mapping[str, str]:
        value = self.value(table, path, key, dict, {})
        for k, v in value.items():
            if not isinstance(v, str):
                raise self.fail((*path, key, k), f"expected a string, got {type_name(v)}")
        return MappingProxyType({k: self.secret((*path, key, k), v) or "" for k, v in value.items()})

    def str_list(self, table, path, key) -> tuple[str, ...]:
        value = self.value(table, path, key, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail((*path, key, i), f"expected a string, got {type_name(item)}")
        return tuple(value)

    def secret(self, path: KeyPath, value: str | None) -> str | None:
        if value is None or not value.startswith("env:") or not self.resolve_secrets:
            return value
        var = value[4:]
        resolved = os.environ.get(var)
        if not resolved:
            raise self.fail(path, f"environment variable {var} is not set")
        return resolved


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def type_name(value: Any) -> str:
    for kind in (bool, str, int, float, list, dict):
        if isinstance(value, kind):
            return _TYPE_NAMES[kind]
    return type(value).__name__


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --------------------------------------------------------------------------------------------------
# Finding lines: tomllib reports lines only for syntax errors, so the source is scanned once.

_BASIC = r'"(?:[^"\\]|\\.)*"'  # a basic-string key, escapes (\") included
_HEADER = re.compile(rf"""^\s*(\[\[?)\s*((?:{_BASIC}|'[^']*'|[^\]"'])+?)\s*\]\]?\s*(?:#.*)?$""")
_ASSIGN = re.compile(rf"""^\s*((?:{_BASIC}|'[^']*'|[A-Za-z0-9_.\-" ])+?)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(_unescape(a) if a else b or c for a, b, c in parts)


def _unescape(quoted: str) -> str:
    """A basic-string key as TOML reads it (`"\\u001f"` is one character), so that the key the
    validator names is found; as written when it is not valid TOML."""
    if "\\" not in quoted:
        return quoted
    try:
        return next(iter(tomllib.loads(f'"{quoted}" = 0')))
    except tomllib.TOMLDecodeError:
        return quoted


class KeyLocator:
    """Maps a key path such as ("models", 1, "targets") to the line it is written on."""

    def __init__(self, source: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        #: the line numbers of every table header
        self.headers: list[int] = []
        counters: dict[KeyPath, int] = {}
        table: KeyPath = ()
        # TOML ends lines at LF (CRLF too) only; str.splitlines would also at \x85, \u2028, ...
        for number, line in enumerate(source.split("\n"), start=1):
            if header := _HEADER.match(line):
                keys = _split_key(header.group(2))
                resolved = self._resolve(keys, counters)
                if header.group(1) == "[[":
                    index = counters.get(resolved, -1) + 1
                    counters[resolved] = index
                    table = (*resolved, index)
                else:
                    table = resolved
                for end in range(1, len(table) + 1):  # `[a.b]` makes `a` here too, if not before
                    self.lines.setdefault(table[:end], number)
                self.headers.append(number)
                continue
            if assign := _ASSIGN.match(line):
                path = table + _split_key(assign.group(1))
                self.lines.setdefault(path, number)
                for inner in re.finditer(r"[{,]\s*([A-Za-z0-9_\-]+)\s*=", line[assign.end() :]):
                    self.lines.setdefault((*path, inner.group(1)), number)

    @staticmethod
    def _resolve(keys: tuple[str, ...], counters: dict[KeyPath, int]) -> KeyPath:
        """`[models.price]` after `[[models]]` means the price of the latest model."""
        resolved: KeyPath = ()
        for key in keys:
            resolved = (*resolved, key)
            if resolved in counters and len(resolved) < len(keys):
                resolved = (*resolved, counters[resolved])
        return resolved

    def __call__(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            # a key inside an inline array (targets = [{...}, {...}]) is on its parent's line
            path = path[:-1]
        return None
