"""`python -m tfgw.export [--config F | --demo] [--nice N] [--parent PID] [--exporter]`: the exporter
process `tfgw serve` starts (`--parent`: its own pid, so that the exporter ends with it however it
ends; `--exporter`: `tfgw serve --exporter`, which with `[bus] kind = "nats"` runs the targets'
consumers beside the publisher).

The same work as `tfgw exporter` (`tfgw.export.worker.exporter_main`), started without the CLI:
Typer and what it imports (pydantic among them) would cost a process that lives as long as the
gateway about 15 MB of memory. For the same reason the HTTP sender is the standard library's
`http.client`, not httpx (whose own command line brings click, Rich and Pygments). A bad config
is one line on stderr and exit code 2, as from the CLI; `tfgw serve` has checked the config before
it starts this.
"""

from __future__ import annotations

import argparse
import sys

from tfgw.errors import TfgwError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfgw.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the config file (else the demo settings with --demo)")
    parser.add_argument("--demo", action="store_true", help="the demo settings (targets from OTEL_*)")
    parser.add_argument("--nice", type=int, default=0, choices=range(20), metavar="0..19")
    parser.add_argument("--parent", type=int, help="exit when this process (tfgw serve) is gone")
    parser.add_argument("--exporter", action="store_true", help="NATS mode: the targets' consumers too")
    args = parser.parse_args(argv)
    from tfgw.config import demo_settings, load
    from tfgw.export.worker import exporter_main

    try:
        settings = demo_settings() if args.demo or args.config is None else load(args.config)
        return exporter_main(settings, nice=args.nice, parent=args.parent, exporter=args.exporter)
    except TfgwError as exc:
        print(f"tfgw: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
