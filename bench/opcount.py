"""Run a Python server counting the bytecodes it executes, per function (`bytecodes.py` drives it).

    python bench/opcount.py OUT -m tfgw.serving OPTIONS_JSON
    python bench/opcount.py OUT bench/framework_floor.py --serve-quart PORT UP PACED

SIGUSR1 starts counting (from zero), SIGUSR2 stops and writes `{"file:line:function": n}` to OUT as
JSON, then an empty `OUT.done`. Counting uses `sys.settrace` with opcode events, so the server runs
some ten times slower while it counts; what it counts does not depend on the machine's speed or
load, which is why `bytecodes.py` can set two servers' counts side by side to the bytecode.
"""

from __future__ import annotations

import collections
import json
import runpy
import signal
import sys
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

COUNTS: collections.Counter[CodeType] = collections.Counter()


def _opcode(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "opcode":
        COUNTS[frame.f_code] += 1
    return _opcode


def _call(frame: FrameType, event: str, arg: Any) -> Any:
    frame.f_trace_opcodes = True
    return _opcode


def name(code: CodeType) -> str:
    """`file:line:qualname`, the file from its package on (`h11/_util.py`, `tfgw/...`, `asyncio/...`)."""
    path = code.co_filename
    for root in ("site-packages/", "/python3.11/", "/python3.12/", "/python3.13/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    else:
        if "/tfgw/" in path:
            path = "tfgw/" + path.rsplit("/tfgw/", 1)[1]
        elif "/bench/" in path:
            path = "bench/" + path.rsplit("/bench/", 1)[1]
    return f"{path}:{code.co_firstlineno}:{code.co_qualname}"


def main(argv: list[str]) -> None:
    out = Path(argv[1])

    def start(*_: Any) -> None:
        COUNTS.clear()
        sys.settrace(_call)

    def stop(*_: Any) -> None:
        sys.settrace(None)
        counted: dict[str, int] = collections.Counter()
        for code, n in COUNTS.items():
            counted[name(code)] += n
        out.write_text(json.dumps(counted))
        out.with_name(out.name + ".done").touch()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    if argv[2] == "-m":
        sys.argv = [argv[3], *argv[4:]]
        runpy.run_module(argv[3], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv[2:]
        sys.path.insert(0, str(Path(argv[2]).resolve().parent))
        runpy.run_path(argv[2], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
