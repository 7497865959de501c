"""Where the memory of tfgw's process tree goes, against the floor's, after the same load.

    python bench/rss.py                    # the tables, about 30 s with the defaults
    python bench/rss.py --tracemalloc      # the same under tracemalloc: its top allocators too
    python bench/rss.py --tree DIR --json  # tfgw from another checkout; one JSON object

All on 127.0.0.1, as `bench/floor.py` starts them: `fake_upstream.py`, a span-counting receiver,
the floor (`framework_floor.py --serve-quart`) and `tfgw serve` (tracing, one http/protobuf target
at the receiver). Each of the floor and tfgw
gets `--duration` s of JSON then of streamed calls at `--concurrency`, after a warm-up each; the
exporter is given time to deliver (polled, with a deadline). Then, per process: VmRSS,
smaps_rollup (anonymous, file-backed, PSS), and from smaps the glibc heap, the other threads'
malloc arenas and the thread stacks. A `sitecustomize` probe (one SIGUSR2 handler, on PYTHONPATH)
has each process write its `sys.modules` (and a tracemalloc snapshot); the modules beyond the
floor's (the exporter: a bare interpreter's) are imported again in a fresh interpreter,
dependencies first, and each package's RSS is printed. Every process is stopped on exit, ^C,
SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor import EXTRA_CONFIG, checkout
from load import exit_on_bad_window, run_load
from run import (
    BENCH_DIR,
    CHAT_PATH,
    CONFIG_TEMPLATE,
    HOST,
    BenchError,
    chat_body,
    child_env,
    free_port,
    otlp_receiver,
    process_tree,
    progress,
    run_command,
    running,
    tfgw_command,
    trace_log_stats,
    wait_for_health,
    wait_for_ready_line,
)

PROBE_WAIT_S = 10.0
SETTLE_DEADLINE_S = 60.0
SPANS_PER_TRACE = {"json": 4, "stream": 5}
TOP_ALLOCATORS = 15
TOP_FILES = 12
#: a glibc malloc arena of a thread other than the main one reserves this much address space
ARENA_RESERVE_KIB = 64 * 1024

PROBE = '''\
"""bench/rss.py's probe: on SIGUSR2, this process's modules (and tracemalloc's snapshot) to a file."""
import os, signal, sys

_OUT = os.environ.get("TFGW_RSS_PROBE")
if _OUT:
    if os.environ.get("TFGW_RSS_TRACEMALLOC"):
        import tracemalloc; tracemalloc.start(1)

    def _tfgw_rss_dump(signum, frame):
        modules = list(sys.modules)  # before this handler imports anything
        import json
        data = {"pid": os.getpid(), "argv": sys.argv, "modules": modules}
        if "tracemalloc" in sys.modules and sys.modules["tracemalloc"].is_tracing():
            tracemalloc = sys.modules["tracemalloc"]
            stats = tracemalloc.take_snapshot().statistics("filename")
            data["traced_bytes"] = sum(stat.size for stat in stats)
            data["by_file"] = [[str(s.traceback[0].filename), s.size, s.count] for s in stats[:400]]
        path = os.path.join(_OUT, f"{os.getpid()}.json")
        with open(path + ".part", "w") as f:
            json.dump(data, f)
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR2, _tfgw_rss_dump)
'''

#: run in a fresh interpreter: the modules on stdin (one a line) imported in that order, each
#: package's RSS (KiB) and import time (µs) printed as JSON
COSTER = """
import importlib, json, sys, time

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4

cost = {}
start = rss()
for name in sys.stdin.read().split():
    parts = name.split(".")
    group = ".".join(parts[:2]) if parts[0] in ("tfgw", "google", "opentelemetry") else parts[0]
    before, t0 = rss(), time.perf_counter()
    try:
        importlib.import_module(name)
    except Exception:
        continue
    entry = cost.setdefault(group, [0, 0, 0])
    entry[0] += rss() - before
    entry[1] += int((time.perf_counter() - t0) * 1e6)
    entry[2] += 1
print(json.dumps({"start_kib": start, "end_kib": rss(), "groups": cost}))
"""

SKIP_MODULES = ("__main__", "__mp_main__", "sitecustomize", "tracemalloc", "_tfgw_rss")


# --- the processes -------------------------------------------------------------------------------


def start_probed(
    command: list[str], log: Path, probe_dir: Path, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    """`command` with the probe on its PYTHONPATH (and its children's: the exporter inherits it),
    then `--tree` if given; run in the run's directory, so no checkout is found in the cwd."""
    env = child_env()
    path = [str(probe_dir), str(args.tree or ""), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    env["TFGW_RSS_PROBE"] = str(probe_dir / "out")
    if args.tracemalloc:
        env["TFGW_RSS_TRACEMALLOC"] = "1"
    with log.open("ab") as sink:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=env,
                                cwd=probe_dir.parent)  # fmt: skip


@dataclass(slots=True)
class Stack:
    directory: Path
    upstream_port: int
    floor_port: int
    floor_pid: int
    tfgw_port: int
    tfgw_pid: int
    received: Any  # () -> spans the receiver counted


@contextlib.contextmanager
def stack(args: argparse.Namespace, directory: Path) -> Iterator[Stack]:
    """The upstream, the receiver, the floor and tfgw, stopped again whatever happens."""
    probe_dir = directory / "probe"
    (probe_dir / "out").mkdir(parents=True)
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    with otlp_receiver(directory) as (receiver, received), running([]) as processes:
        upstream_port, log = free_port(), directory / "upstream.log"
        command = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port)]
        with log.open("ab") as sink:
            upstream = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, env=child_env())
        processes.append(upstream)
        wait_for_ready_line(upstream, log)
        floor_port, log = free_port(), directory / "floor.log"
        serve = ["--serve-quart", str(floor_port), str(upstream_port), str(upstream_port)]
        floor = start_probed(
            [sys.executable, str(BENCH_DIR / "framework_floor.py"), *serve], log, probe_dir, args
        )
        processes.append(floor)
        wait_for_health(floor, floor_port, log)
        tfgw_port, log = free_port(), directory / "tfgw.log"
        config = write_config(directory, tfgw_port, upstream_port, receiver)
        command = [*tfgw_command(args.tfgw), "serve", "--config", str(config), "--port", str(tfgw_port)]
        tfgw = start_probed(command, log, probe_dir, args)
        processes.append(tfgw)
        wait_for_health(tfgw, tfgw_port, log)
        yield Stack(directory, upstream_port, floor_port, floor.pid, tfgw_port, tfgw.pid, received)


def write_config(directory: Path, port: int, upstream_port: int, receiver: str) -> Path:
    """floor.py's tfgw config: tracing on, one http/protobuf target at the receiver."""
    text = CONFIG_TEMPLATE.format(
        host=HOST, port=port, upstream_port=upstream_port, tracing="true", traces=directory / "traces"
    )
    text += EXTRA_CONFIG.format(host=HOST, paced_port=upstream_port, receiver=receiver)
    path = directory / "tfgw.toml"
    path.write_text(text)
    return path


# --- the load ------------------------------------------------------------------------------------


def load(args: argparse.Namespace, made: Stack) -> dict[str, int]:
    """JSON, then streamed calls, through the floor and tfgw; requests answered by each."""
    answered: dict[str, int] = {"floor": 0, "tfgw": 0}
    written_before = int(trace_log_stats(made.tfgw_port).get("written", 0))
    for kind in ("json", "stream"):
        body = chat_body(kind == "stream", usage=True)
        for path, port in (("floor", made.floor_port), ("tfgw", made.tfgw_port)):
            url = f"http://{HOST}:{port}{CHAT_PATH}"
            for seconds in (args.warmup, args.duration):
                if seconds > 0:
                    result = run_load(url, body, args.concurrency, seconds, args.tool)
                    answered[path] += result.requests - result.errors
            progress(f"{kind:6} {path:5} {answered[path]:,} answered so far")
    settle(made, written_before)
    return answered


def settle(made: Stack, written_before: int) -> None:
    """Until the receiver holds a span for every one written (4 a JSON trace, 5 a streamed one: at
    least 4 each), quiet for a second, or the deadline."""
    deadline, last, last_change = time.monotonic() + SETTLE_DEADLINE_S, -1, time.monotonic()
    while time.monotonic() < deadline:
        written = int(trace_log_stats(made.tfgw_port).get("written", 0)) - written_before
        now = made.received()
        if now != last:
            last, last_change = now, time.monotonic()
        if now >= written * SPANS_PER_TRACE["json"] and time.monotonic() - last_change >= 1.0:
            break
        time.sleep(0.2)
    progress(f"exporter: {last:,} spans delivered")


# --- /proc ---------------------------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int]:
    """The KiB fields of /proc/PID/smaps_rollup."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def mappings(pid: int) -> list[dict[str, Any]]:
    """Each mapping of /proc/PID/smaps: its name, permissions, Size and Rss in KiB."""
    maps: list[dict[str, Any]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            maps.append({"perms": head[1], "name": head[5] if len(head) > 5 else "", "Size": 0, "Rss": 0})
        elif head[0] in ("Size:", "Rss:"):
            maps[-1][head[0][:-1]] = int(head[1])
    return maps


def anon_breakdown(pid: int, threads: int) -> dict[str, int]:
    """RSS (KiB) of the glibc main heap, of the other threads' malloc arenas (a rw part followed by
    its reserved rest, 64 MiB together) and of thread stacks (8 MiB rw after a guard page)."""
    maps = mappings(pid)
    heap = sum(m["Rss"] for m in maps if m["name"] == "[heap]")
    arenas = arena_count = stacks = 0
    for i, m in enumerate(maps):
        if m["name"] or not m["perms"].startswith("rw"):
            continue
        after = maps[i + 1] if i + 1 < len(maps) else None
        before = maps[i - 1] if i else None
        reserved = after and not after["name"] and after["perms"].startswith("---")
        if reserved and m["Size"] + after["Size"] == ARENA_RESERVE_KIB:
            arenas, arena_count = arenas + m["Rss"], arena_count + 1
            continue
        if before and not before["name"] and before["perms"].startswith("---") and before["Size"] == 4:
            stacks += m["Rss"]
    files: dict[str, int] = {}
    for m in maps:
        if m["name"].startswith("/"):
            files[m["name"]] = files.get(m["name"], 0) + m["Rss"]
    biggest = sorted(files.items(), key=lambda item: -item[1])[:TOP_FILES]
    return {"heap_kib": heap, "thread_arenas_kib": arenas, "thread_arenas": arena_count,
            "thread_stacks_kib": stacks, "threads": threads, "files_kib": dict(biggest)}  # fmt: skip


def status_field(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def describe(pid: int) -> dict[str, Any]:
    """One process's memory, in KiB."""
    rollup = smaps_rollup(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return {
        "pid": pid,
        "command": " ".join(part.decode(errors="replace") for part in cmdline[:4]).strip(),
        "vmrss_kib": status_field(pid, "VmRSS"),
        "rss_kib": rollup.get("Rss", 0),
        "pss_kib": rollup.get("Pss", 0),
        "anon_kib": rollup.get("Anonymous", 0),
        "file_kib": rollup.get("Rss", 0) - rollup.get("Anonymous", 0) - rollup.get("Pss_Shmem", 0),
        **anon_breakdown(pid, status_field(pid, "Threads")),
    }


def role(command: str) -> str:
    if "framework_floor.py" in command:
        return "floor"
    words = command.split()  # `tfgw serve` execs `python -m tfgw.serving {...options}`
    return "exporter" if "tfgw.export" in words or "exporter" in words else "gateway worker"


# --- modules -------------------------------------------------------------------------------------


def probe(directory: Path, pids: list[int]) -> dict[int, dict[str, Any]]:
    """Each process's probe dump (SIGUSR2, then the file it writes, polled with a deadline)."""
    out = directory / "probe" / "out"
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    deadline, found = time.monotonic() + PROBE_WAIT_S, {}
    while time.monotonic() < deadline and len(found) < len(pids):
        for pid in pids:
            path = out / f"{pid}.json"
            if pid not in found and path.exists():
                found[pid] = json.loads(path.read_text())
        time.sleep(0.1)
    missing = sorted(set(pids) - set(found))
    if missing:
        raise BenchError(f"no probe dump from {missing} within {PROBE_WAIT_S:g} s")
    return found


def bare_modules() -> list[str]:
    """What a bare interpreter of this venv holds at start."""
    code = "import sys; print(' '.join(sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          check=True).stdout.split()  # fmt: skip


def import_order(modules: list[str]) -> list[str]:
    """`modules` in the order their imports complete (`-X importtime` in a fresh interpreter), so a
    module's dependencies come before it; those that fail to import alone are left out."""
    # __import__, not importlib.import_module: only the import statement's path prints the times
    code = (
        "import sys\nfor n in sys.stdin.read().split():\n    try: __import__(n)\n    except Exception: pass\n"
    )
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], input="\n".join(modules),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    wanted, order = set(modules), []
    for line in done.stderr.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        if line.startswith("import time:") and name in wanted and name not in order:
            order.append(name)
    return order


def import_cost(base: list[str], extra: list[str]) -> dict[str, Any]:
    """RSS and time each package of `extra` adds to an interpreter that imported `base` first."""
    order = import_order(base + extra)
    first = [name for name in order if name in set(base)]
    rest = [name for name in order if name not in set(base)]
    code = (
        f"import importlib\nfor n in {first!r}:\n"
        + "    try: importlib.import_module(n)\n    except Exception: pass\n"
    )
    code += COSTER
    done = subprocess.run([sys.executable, "-c", code], input="\n".join(rest), capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result | {"names": rest}


def extra_modules(modules: list[str], base: list[str]) -> list[str]:
    held = set(base)
    return [m for m in modules if m not in held and not m.startswith(SKIP_MODULES)]


def package_of(filename: str) -> str:
    """The package a source file belongs to: `tfgw.export`, `google.protobuf`, `stdlib json`, ..."""
    parts = Path(filename).with_suffix("").parts
    if "site-packages" in parts:
        tail = parts[parts.index("site-packages") + 1 :]
        return ".".join(tail[:2]) if tail[0] in ("google", "opentelemetry") and len(tail) > 1 else tail[0]
    if "tfgw" in parts:
        tail = parts[len(parts) - 1 - parts[::-1].index("tfgw") :]
        return ".".join(tail[:2])
    lib = [i for i, part in enumerate(parts) if part.startswith("python3")]
    if lib and len(parts) > lib[-1] + 1:
        return f"stdlib {parts[lib[-1] + 1]}"
    return filename


def top_allocators(dump: dict[str, Any]) -> list[tuple[str, int]]:
    """tracemalloc's live bytes after the load, by package, the largest first."""
    by_package: dict[str, int] = {}
    for filename, size, _count in dump.get("by_file", []):
        key = package_of(filename)
        by_package[key] = by_package.get(key, 0) + size
    return sorted(by_package.items(), key=lambda item: -item[1])[:TOP_ALLOCATORS]


# --- the report ----------------------------------------------------------------------------------


@dataclass(slots=True)
class RssReport:
    date: str
    checkout: str
    settings: dict[str, Any]
    answered: dict[str, int] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    trees_mib: dict[str, float] = field(default_factory=dict)
    bare_interpreter_kib: int = 0
    imports: dict[str, Any] = field(default_factory=dict)  # role: {"base", "count", cost}
    allocators: dict[str, Any] = field(default_factory=dict)  # role: {"traced_bytes", "top"}


def measure(args: argparse.Namespace, made: Stack, report: RssReport) -> None:
    """Memory of every process of both trees, then what their modules and allocations are."""
    report.answered = load(args, made)
    trees = {"floor": process_tree(made.floor_pid), "tfgw": process_tree(made.tfgw_pid)}
    for tree, pids in trees.items():
        for pid in pids:
            described = describe(pid)
            report.processes.append({"tree": tree, "role": role(described["command"]), **described})
        report.trees_mib[tree] = sum(p["vmrss_kib"] for p in report.processes if p["tree"] == tree) / 1024
    dumps = probe(made.directory, [p["pid"] for p in report.processes])
    roles = {p["pid"]: p["role"] for p in report.processes}
    modules = {roles[pid]: dump["modules"] for pid, dump in dumps.items()}
    bare = bare_modules()
    report.bare_interpreter_kib = bare_rss_kib()
    for name, base in (("gateway worker", modules["floor"]), ("exporter", bare), ("floor", bare)):
        extra = extra_modules(modules.get(name, []), base)
        report.imports[name] = {"base": "floor" if base is not bare else "bare interpreter",
                                "modules": len(extra), **import_cost(base, extra)}  # fmt: skip
        progress(f"imports of the {name}: {len(extra)} modules beyond the {report.imports[name]['base']}")
    for pid, dump in dumps.items():
        if "by_file" in dump:
            report.allocators[roles[pid]] = {
                "traced_bytes": dump["traced_bytes"],
                "top": top_allocators(dump),
            }


def bare_rss_kib() -> int:
    code = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                              check=True).stdout)  # fmt: skip


def bench(args: argparse.Namespace) -> RssReport:
    report = RssReport(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        checkout=f"the tree {args.tree}" if args.tree else checkout(),
        settings={"duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
                  "tracemalloc": args.tracemalloc,
                  "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")},
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tfgw-rss-") as tmp, stack(args, Path(tmp)) as made:
        measure(args, made, report)
    return report


# --- output --------------------------------------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def process_table(report: RssReport) -> list[str]:
    lines = [
        "| tree | process | VmRSS | anonymous | file-backed | PSS | glibc heap | thread arenas "
        "| thread stacks | threads |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in report.processes:
        kib = [p[key] for key in ("vmrss_kib", "anon_kib", "file_kib", "pss_kib", "heap_kib")]
        arenas = f"{mib(p['thread_arenas_kib'])} ({p['thread_arenas']})"
        cells = [p["tree"], p["role"], *map(mib, kib), arenas, mib(p["thread_stacks_kib"]), str(p["threads"])]
        lines.append("| " + " | ".join(cells) + " |")
    floor, tfgw = report.trees_mib.get("floor", 0.0), report.trees_mib.get("tfgw", 0.0)
    lines += [
        "",
        f"Trees (VmRSS, MiB): floor {floor:.1f}, tfgw {tfgw:.1f}; tfgw - floor = {tfgw - floor:.1f} "
        f"(bound 40). A bare interpreter of this venv: {mib(report.bare_interpreter_kib)} MiB.",
    ]
    return lines


def imports_table(name: str, imports: dict[str, Any]) -> list[str]:
    groups = sorted(imports["groups"].items(), key=lambda item: -item[1][0])
    total = imports["end_kib"] - imports["start_kib"]
    lines = [
        f"Imports of the {name} beyond the {imports['base']}: {imports['modules']} modules, "
        f"{mib(total)} MiB, imported again in a fresh interpreter, dependencies first:",
        "",
        "| package | modules | MiB | import ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for group, (kib, us, count) in groups:
        if kib >= 100 or us >= 5000:
            lines.append(f"| {group} | {count} | {mib(kib)} | {us / 1000:.1f} |")
    small = [g for g in groups if not (g[1][0] >= 100 or g[1][1] >= 5000)]
    if small:
        kib, count = sum(g[1][0] for g in small), sum(g[1][2] for g in small)
        lines.append(f"| {len(small)} others under 0.1 MiB each | {count} | {mib(kib)} | |")
    return lines


def allocators_table(name: str, allocators: dict[str, Any]) -> list[str]:
    lines = [
        f"tracemalloc in the {name} after the load: {allocators['traced_bytes'] / 2**20:.1f} MiB traced",
        "",
        "| package | MiB |",
        "| --- | ---: |",
    ]
    return lines + [f"| {package} | {size / 2**20:.2f} |" for package, size in allocators["top"]]


def markdown(report: RssReport) -> str:
    s = report.settings
    head = (
        f"{report.date}; tfgw at {report.checkout}; {s['duration_s']:g} s of JSON and {s['duration_s']:g} s "
        f"of streamed calls at c={s['concurrency']} after {s['warmup_s']:g} s warm-up each; answered: "
        f"floor {report.answered.get('floor', 0):,}, tfgw {report.answered.get('tfgw', 0):,}"
        + (" (under tracemalloc)" if s["tracemalloc"] else "")
        + (f"; MALLOC_ARENA_MAX={s['malloc_arena_max']}" if s["malloc_arena_max"] else "")
        + "; MiB"
    )
    blocks = [[head], process_table(report)]
    blocks += [imports_table(name, imports) for name, imports in report.imports.items()]
    blocks += [allocators_table(name, allocators) for name, allocators in report.allocators.items()]
    return "\n\n".join("\n".join(block) for block in blocks)


def as_json(report: RssReport) -> str:
    return json.dumps(asdict(report), indent=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags; a bad value is one line on stderr naming the flag, and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each load (default 3)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of warm-up before each (default 1)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="connections (default 50)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations: top allocators")
    parser.add_argument("--tfgw", help="command that runs tfgw (default: the tfgw beside this Python)")
    parser.add_argument(
        "--tree", type=Path, help="run tfgw (and the floor's tfgw imports) from this checkout"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    exit_on_bad_window(parser, args.duration, args.warmup)
    if not 1 <= args.concurrency <= 1000:
        parser.exit(2, f"error: --concurrency: must be within [1, 1000], got {args.concurrency}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: bench(args), as_json if args.json else markdown)


if __name__ == "__main__":
    sys.exit(main())
