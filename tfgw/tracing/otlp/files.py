"""Finding and opening trace files: files, directories, `.gz` and standard input.

A directory stands for its `*.jsonl` and `*.json` files (and their `.gz`), sorted by name, not
recursing, so the gateway's `X.rows` files are never read. `-` is standard input, named
`<stdin>` in messages; a reader that needs two passes spools it to a temporary file first
(`spool`). A file that cannot be opened or read (missing, a broken gzip stream, a disk error) is a
`TraceFileError` naming it: bad input, exit code 2.

The torn-last-line rule, which every reader of trace files keeps: a last line without a newline
that is not JSON is a writer that crashed mid-write. It is skipped with a warning, never fatal
(`is_torn`).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, BinaryIO, Final, cast

from tfgw.errors import InputError

__all__ = [
    "STDIN_NAME",
    "TRACE_FILE_SUFFIXES",
    "TraceFileError",
    "is_torn",
    "open_trace_file",
    "read_lines",
    "spool",
    "trace_files",
]

STDIN_NAME: Final = "<stdin>"
TRACE_FILE_SUFFIXES: Final = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


class TraceFileError(InputError):
    """A trace file that cannot be read (missing, unreadable, a broken gzip stream): bad input."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"cannot read {file}: {reason}")
        self.file = file


def trace_files(args: Iterable[str | Path]) -> list[str]:
    """The files the arguments name: a directory's trace files sorted, `-` as `<stdin>`.

    Raises TraceFileError for a path that does not exist or a directory that cannot be listed.
    """
    files: list[str] = []
    for arg in args:
        name = str(arg)
        if name == "-":
            files.append(STDIN_NAME)
            continue
        path = Path(name)
        try:
            if path.is_dir():
                entries = sorted(p.name for p in path.iterdir() if p.name.endswith(TRACE_FILE_SUFFIXES))
                files.extend(str(path / e) for e in entries if not (path / e).is_dir())
            else:
                path.stat()
                files.append(name)
        except OSError as exc:
            raise TraceFileError(name, exc.strerror or str(exc)) from exc
    return files


@contextmanager
def open_trace_file(name: str, path: str | Path | None = None) -> Iterator[Iterator[bytes]]:
    """The lines of the trace file `name` (read from `path` instead when given: standard input
    spooled to disk), through gzip for `.gz`. A file that cannot be opened or read (a broken gzip
    stream, a disk error) is a TraceFileError naming `name`."""
    source = Path(name if path is None else path)
    try:
        raw = gzip.open(source, "rb") if name.endswith(".gz") else open(source, "rb")  # noqa: SIM115
        stream = cast("IO[bytes]", raw)
    except OSError as exc:
        raise TraceFileError(name, exc.strerror or str(exc)) from exc
    with stream:
        yield read_lines(name, stream)


def read_lines(name: str, stream: Iterable[bytes]) -> Iterator[bytes]:
    """`stream`'s lines, its read errors raised as a TraceFileError naming `name`."""
    try:
        yield from stream
    except (OSError, EOFError) as exc:
        raise TraceFileError(name, getattr(exc, "strerror", None) or str(exc)) from exc


def is_torn(raw: bytes) -> bool:
    """Whether a line that did not parse is a torn last line (no newline), not a bad one."""
    return not raw.endswith(b"\n")


def spool(stdin: BinaryIO, stack: ExitStack) -> Path:
    """Standard input copied to a temporary file (deleted when `stack` closes), for a second pass."""
    spooled = stack.enter_context(tempfile.NamedTemporaryFile(prefix="tfgw-", suffix=".jsonl"))  # noqa: SIM115
    shutil.copyfileobj(stdin, spooled, 1024 * 1024)
    spooled.flush()
    return Path(spooled.name)
