"""How fast the trace-file validator reads: `tfgw traces check` and `tfgw replay`'s validation pass.

Writes N lines of tfgw trace log (half of them streamed requests: 4.5 spans a line), then times,
in a fresh process per checkout, best of `--repeat`, `tfgw.tracing.check.check_files` (strict,
with the tree and convention rules) and `tfgw.replay.plan` (lenient, the pass before anything is
sent).

    python bench/validate_throughput.py                   # this checkout
    git worktree add /tmp/before <rev> && python bench/validate_throughput.py --tree /tmp/before
        # the same file read by the code of another checkout, interleaved A B B A in one run
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]


def write_file(path: Path, lines: int) -> None:
    sys.path.insert(0, str(REPO))
    from tests import samples

    with path.open("wb") as out:
        for n in range(1, lines + 1):
            out.write(orjson.dumps(samples.trace_line(samples.Request(n, stream=n % 2 == 0))) + b"\n")


def measure(tree: Path, path: Path, repeat: int) -> None:
    """Run in a fresh interpreter with `tree` first on the path, so its tfgw is the one timed."""
    sys.path.insert(0, str(tree))
    tfgw = importlib.import_module("tfgw")
    assert str(Path(tfgw.__file__).resolve()).startswith(str(tree.resolve())), tfgw.__file__
    from tfgw.replay import plan
    from tfgw.tracing.check import check_files

    file = str(path)
    for name, run in (("traces check", lambda: check_files([file])), ("replay pass 1", lambda: plan([file]))):
        best = float("inf")
        spans = 0
        for _ in range(repeat):
            start = time.perf_counter()
            spans = run().spans
            best = min(best, time.perf_counter() - start)
        print(f"{tree}: {name}: {spans:,} spans in {best:.2f} s: {spans / best:,.0f} spans/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000, help="Trace log lines to write.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each; the best counts.")
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="Another checkout to time too."
    )
    parser.add_argument("--measure", nargs=2, metavar=("TREE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]), args.repeat)
        return
    with tempfile.TemporaryDirectory(prefix="tfgw-validate-bench-") as tmp:
        path = Path(tmp) / "traces.jsonl"
        write_file(path, args.lines)
        trees = [REPO, *args.tree]
        for tree in trees + trees[::-1] if len(trees) > 1 else trees:  # A B B A: drift shows
            command = [
                sys.executable,
                __file__,
                "--repeat",
                str(args.repeat),
                "--measure",
                str(tree),
                str(path),
            ]
            subprocess.run(command, check=True, cwd=tmp)


if __name__ == "__main__":
    main()
