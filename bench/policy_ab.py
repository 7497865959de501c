"""What the policy layer costs a request: none of it configured against the tree before it, and all
of it configured against none.

    python bench/policy_ab.py                      # callgrind, 200 requests a path, ~4 minutes
    python bench/policy_ab.py --callgrind 0        # CPU time of sequential requests only, ~2 minutes
    python bench/policy_ab.py --load               # also CPU µs/request under load, interleaved
    python bench/policy_ab.py --before HEAD        # against another commit (a `git archive` of it)
    python bench/policy_ab.py --tree /tmp/other    # against a tree holding tfgw/
    python bench/policy_ab.py --here HEAD          # this checkout's HEAD, not its working tree
    python bench/policy_ab.py --limits budget      # the key with its daily budget only (the issue's case)

One run starts, on 127.0.0.1, `bench/fake_upstream.py` and three `tfgw serve` (one worker, tracing
on, the model `bench` on an `openai` provider at the fake upstream, one gateway key):
`before`, the other tree (default: commit ecc465c by `git archive`) on the plain config (the key
without limits, no cache, no guardrails); `none`, this checkout's tfgw/ (copied at the start, so
edits during the run do not reach it) on the same config; `policy`, this checkout with all of it:
the key's `rpm`, `tpm` and `budget_usd_day` too high to refuse (with `--limits budget`, its
`budget_usd_day` alone: a key, a budget, one cache rule and two guardrails), the model's
`cache = { ttl }`, two input guardrails (`pii` email + credit_card, `keywords`; redact) that
match nothing. Every request is distinct (a serial in its question), so on `policy` each is a
cache miss that is stored; path `hit` sends one request again and again to that gateway, each
answered from the cache. Each tree is imported with PYTHONPATH ahead of the editable install
(checked at the start), every process started in the run's directory (no checkout's `tfgw/`
ahead of it).

Chat completions, JSON and streamed (with the usage chunk). `--callgrind N` counts the
instructions of N sequential requests a path, each gateway in its turn under valgrind;
`--sequential N` requests a path without valgrind, interleaved before none policy hit hit policy
none before (`--rounds` times), give CPU µs a request, and `none`'s µs per instruction converts
instruction differences to µs. `--load` adds wrk (or Python) runs in the same order, CPU of each gateway's
tree around them. Every process is stopped on exit, ^C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import itertools
import json
import math
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind
from floor import REPO, Endpoint, FloorRun, checkout, conditions, start_upstream
from load import MAX_DURATION_S, LoadError, run_load
from messages_ab import rows_of, runs_table
from run import (
    CHAT_PATH,
    CONFIG_TEMPLATE,
    HOST,
    BenchError,
    alive,
    calibration_ms,
    child_env,
    cpu_seconds,
    fmt,
    free_port,
    log_tail,
    machine,
    progress,
    run_command,
    running,
    start_gateway,
    tfgw_command,
    trace_log_stats,
)

from tfgw.keys import hash_key

BEFORE = "ecc465c"  # the last commit before the policy layer acted on a request
PATHS = ("before", "none", "policy", "hit")
ORDER = ("before", "none", "policy", "hit", "hit", "policy", "none", "before")
GATEWAY = {"before": "before", "none": "none", "policy": "policy", "hit": "policy"}
KINDS = ("json", "stream")
KEY = "tfgw-bench-policy-key"  # the gateway key every request sends (a bench's, guards nothing)
QUESTION = "Say hello in one short sentence."
BOUND_NONE_PCT = 1.0  # none configured: within callgrind's run-to-run spread of the tree before
BOUND_POLICY_US = 80.0  # all of it configured: at most this much CPU a request more than none
CACHE_TTL_S = 3600.0

PLAIN_KEY = f'\n[[keys]]\nname = "bench"\nhash = "{hash_key(KEY)}"\n'
LIMITS = "rpm = 100000000\ntpm = 100000000000\nbudget_usd_day = 1000000.0\n"
#: `--limits`: the key's limits on the `policy` gateway
KEY_LIMITS = {"all": LIMITS, "budget": "budget_usd_day = 1000000.0\n"}
GUARDRAILS = """guardrails = [  # top-level: before the first table
  { name = "pii", kind = "pii", patterns = ["email", "credit_card"], stage = "input", action = "redact" },
  { name = "words", kind = "keywords", patterns = ["project bluebird", "top secret"], action = "redact" },
]
"""


def config_text(
    port: int,
    upstream: Endpoint,
    traces: Path,
    policy: bool,
    polled: bool = False,
    limits: str = LIMITS,
    tracing: bool = True,
) -> str:
    """The plain config (run.py's: one model, tracing on unless `tracing` is false) with one key;
    with `policy`, the key's limits and budget, the model's cache and the two guardrails too.
    `polled`: a tree whose gateway polls its config file (live config) has it off, `reload =
    false`: the poll every 0.25 s costs in proportion to wall time, which valgrind and a loaded
    machine stretch by a different factor for each gateway (+50 k instructions a request seen on
    the slower one)."""
    text = CONFIG_TEMPLATE.format(
        host=HOST, port=port, upstream_port=upstream.port, tracing=str(tracing).lower(), traces=traces
    )
    if polled:
        text = text.replace("[server]\n", "[server]\nreload = false\n", 1)
    if not policy:
        return text + PLAIN_KEY
    cached = text.replace("\n[tracing]", f"cache = {{ ttl = {CACHE_TTL_S:g} }}\n\n[tracing]", 1)
    if cached == text:
        raise BenchError("run.CONFIG_TEMPLATE has no [tracing] table to put the model's cache before")
    return GUARDRAILS + cached + PLAIN_KEY + limits


# --- the requests --------------------------------------------------------------------------------

HEADERS = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
SERIALS = itertools.count()
NONCE = secrets.token_hex(4)  # this run's: no request of it is one a gateway's cache saw before


def body(kind: str, tag: str) -> bytes:
    """A chat completion asking `QUESTION (tag)`; a stream asks for the usage chunk."""
    out: dict[str, Any] = {"model": "bench", "messages": [{"role": "user", "content": f"{QUESTION} ({tag})"}]}
    if kind == "stream":
        out |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(out).encode()


def bodies(path: str, kind: str) -> Iterator[bytes]:
    """Every request distinct (`NONCE-serial`), or for `hit` the same one each time."""
    if path == "hit":
        return itertools.repeat(body(kind, f"{NONCE}-cached"))
    return (body(kind, f"{NONCE}-{next(SERIALS):09d}") for _ in itertools.count())


def send(port: int, path: str, kind: str, count: int) -> None:
    """`count` requests of `path` one after another on one connection; one that is not answered
    200 with a whole answer is a BenchError."""
    expected = b"data: [DONE]" if kind == "stream" else b'"object":"chat.completion"'
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        for data in itertools.islice(bodies(path, kind), count):
            connection.request("POST", CHAT_PATH, data, HEADERS)
            response = connection.getresponse()
            status, answer = response.status, response.read()
            if status != 200 or expected not in answer:
                raise BenchError(f"{path} {kind}: POST {CHAT_PATH} answered {status}: {answer[:300]!r}")
    except OSError as exc:
        raise BenchError(f"{path} {kind}: POST {CHAT_PATH} failed: {exc}") from exc
    finally:
        connection.close()


# --- the trees and the gateways ------------------------------------------------------------------


def export_tree(commit: str, into: Path) -> Path:
    """tfgw/ of `commit` (`git archive`) under `into`."""
    into.mkdir(parents=True)
    archive = into / "tfgw.tar"
    command = ["git", "-C", str(REPO), "archive", "--format=tar", f"--output={archive}", commit, "tfgw"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"git archive {commit} failed: {done.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into


def snapshot_here(into: Path) -> Path:
    """This checkout's tfgw/ as it is now, copied: what `none` and `policy` import all run long."""
    shutil.copytree(REPO / "tfgw", into / "tfgw", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def imported_from(tree: Path, cwd: Path) -> str:
    """Where a Python with `tree` on PYTHONPATH imports tfgw from; a BenchError unless from `tree`."""
    code = "import tfgw, pathlib; print(pathlib.Path(tfgw.__file__).parent)"
    env = child_env() | {"PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    found = done.stdout.strip()
    if done.returncode != 0 or Path(found) != tree / "tfgw":
        raise BenchError(f"PYTHONPATH={tree} imports tfgw from {found or done.stderr.strip()!r}, not {tree}")
    return found


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str  # before | none | policy
    tree: Path
    policy: bool
    limits: str = LIMITS  # the key's, with `policy`

    @property
    def env(self) -> list[str]:
        """What runs its tfgw ahead of the editable install (`env` execs: the pid stays)."""
        return ["env", f"PYTHONPATH={self.tree}"]

    @property
    def polled(self) -> bool:
        """Whether its tree has the live config's `[server] reload` (ecc465c has not)."""
        return "reload: bool" in (self.tree / "tfgw" / "config.py").read_text()

    def config(self, directory: Path, upstream: Endpoint, port: int) -> Path:
        """Its config in `directory`, its trace log in `directory/traces-<port>`."""
        config = directory / f"{self.name}-{port}.toml"
        traces = directory / f"traces-{port}"
        config.write_text(config_text(port, upstream, traces, self.policy, self.polled, self.limits))
        return config


def start_plain(gateway: Gateway, directory: Path, upstream: Endpoint, processes: list[Any]) -> Endpoint:
    """`env PYTHONPATH=tree tfgw serve` on the gateway's config, answering GET /healthz."""
    port, log = free_port(), directory / f"{gateway.name}.log"
    args = argparse.Namespace(tfgw=shlex.join([*gateway.env, *tfgw_command(None)]))
    process = start_gateway(args, gateway.config(directory, upstream, port), port, log, False, processes)
    return Endpoint(port, process.pid, log)


def start_counted(gateway: Gateway, directory: Path, upstream: Endpoint, processes: list[Any]) -> Endpoint:
    """The same under callgrind, its dumps in `directory`."""
    port, log = free_port(), directory / f"{gateway.name}-callgrind.log"
    serve = [*tfgw_command(None), "serve", "--config", str(gateway.config(directory, upstream, port))]
    command = [*gateway.env, *callgrind.valgrind_command(directory), *serve, "--port", str(port)]
    return callgrind.serve_under_callgrind(command, port, log, processes)


HIT, MISS = (b'"tfgw.cache.hit","value":{"boolValue":%s}' % v for v in (b"true", b"false"))
OUTCOME = b'"tfgw.guardrail.outcome","value":{"stringValue":'
PASSED = OUTCOME + b'"pass"}'


def policy_seen(gateway: Endpoint, directory: Path, sent: int) -> dict[str, int]:
    """What the `policy` gateway's trace log says it did, once it holds the `sent` traces (or 30 s
    went by): cache misses and hits (a hit marks its root and LLM spans), guardrail verdicts."""
    deadline = time.monotonic() + 30
    while (
        written := int(trace_log_stats(gateway.port, KEY).get("written", 0))
    ) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    data = b"".join(f.read_bytes() for f in (directory / f"traces-{gateway.port}").glob("*.jsonl"))
    passed = data.count(PASSED)
    return {
        "traces": written,
        "cache_misses": data.count(MISS),
        "cache_hits": data.count(HIT) // 2,
        "guardrails_passed": passed,
        "guardrails_not_passed": data.count(OUTCOME) - passed,
    }


# --- measuring -----------------------------------------------------------------------------------


def sequential_run(gateways: dict[str, Endpoint], path: str, kind: str, count: int) -> dict[str, Any]:
    """CPU µs a request of `count` sequential requests (after `callgrind.WARMUP`), no valgrind."""
    gateway = gateways[GATEWAY[path]]
    send(gateway.port, path, kind, callgrind.WARMUP)
    before = cpu_seconds(gateway.pid)
    send(gateway.port, path, kind, count)
    cpu_us = (cpu_seconds(gateway.pid) - before) * 1e6 / count
    progress(f"sequential {kind:6} {path:6} {cpu_us:8.0f} µs CPU a request")
    return {"kind": kind, "path": path, "requests": count, "cpu_us_per_request": cpu_us}


def count_instructions(gateway: Endpoint, dump: Path, path: str, kind: str, count: int) -> float:
    """Instructions a request of `count` sequential requests, after `callgrind.WARMUP`."""
    send(gateway.port, path, kind, callgrind.WARMUP)
    callgrind.zero(gateway)
    send(gateway.port, path, kind, count)
    per_request = callgrind.dumped_instructions(gateway, dump) / count
    progress(f"callgrind {kind:6} {path:6} {per_request:12,.0f} instructions a request")
    return per_request


def callgrind_rows(
    gateways: list[Gateway], directory: Path, upstream: Endpoint, kinds: list[str], count: int
) -> list[dict[str, Any]]:
    """Each gateway in its turn under callgrind (stopped before the next): its paths' instructions.
    Nothing else of the run is up meanwhile but the upstream (the gateways of the sequential runs
    are stopped first): a gateway's timers run by the wall clock, which valgrind stretches, so what
    else runs beside it moves its count."""
    counted: dict[tuple[str, str], float] = {}
    for gateway in gateways:
        with running([]) as processes:
            served = start_counted(gateway, directory, upstream, processes)
            dumps = itertools.count(1)
            try:
                for kind in kinds:
                    for path in (p for p in PATHS if GATEWAY[p] == gateway.name):
                        dump = directory / f"callgrind.{served.pid}.{next(dumps)}"
                        counted[kind, path] = count_instructions(served, dump, path, kind, count)
            except (OSError, subprocess.SubprocessError) as exc:
                raise BenchError(f"callgrind_control failed: {exc}\n{log_tail(served.log)}") from exc
    return [{"kind": k, "path": p, "instructions": counted[k, p]} for k in kinds for p in PATHS]


def load_run(gateways: dict[str, Endpoint], path: str, kind: str, args: argparse.Namespace) -> FloorRun:
    """Warm-up, then one measured run of `path` under load, CPU of its gateway's tree around it."""
    gateway = gateways[GATEWAY[path]]
    url, c = f"http://{HOST}:{gateway.port}{CHAT_PATH}", args.concurrency
    numbered = path != "hit"  # a template of distinct bodies, this run's own, or the cached one

    def data() -> bytes:
        return body(kind, f"{NONCE}-{next(SERIALS)}-%s") if numbered else body(kind, f"{NONCE}-cached")

    answered = 0
    if args.warmup > 0:
        warm = run_load(url, data(), c, args.warmup, args.tool, headers=HEADERS, numbered=numbered)
        answered = warm.requests - warm.errors
    before = cpu_seconds(gateway.pid)
    result = run_load(url, data(), c, args.duration, args.tool, headers=HEADERS, numbered=numbered)
    run = FloorRun(f"{kind}-{c}", path, result, cpu_seconds(gateway.pid) - before, answered + result.requests)
    progress(
        f"load {kind}-{c:<4} {path:6} {result.rps:7.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"errors {result.errors}  CPU {fmt(run.cpu_us_per_request, 0)} µs/req"
    )
    return run


# --- the run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class PolicyReport:
    date: str
    machine: dict[str, Any]
    kinds: list[str]
    trees: dict[str, str]  # gateway -> what its tfgw/ is
    callgrind_requests: int  # a path, under callgrind (0: not counted)
    sequential_requests: int  # a path and run, without valgrind
    limits: str = "all"  # `--limits`: the key's on the policy gateway
    sequential: list[dict[str, Any]] = field(default_factory=list)
    callgrind: list[dict[str, Any]] = field(default_factory=list)
    us_per_instruction: dict[str, float | None] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    load_runs: list[FloorRun] = field(default_factory=list)
    load_rows: list[dict[str, Any]] = field(default_factory=list)
    policy_seen: dict[str, int] = field(default_factory=dict)  # the policy gateway's trace log


def bench(args: argparse.Namespace) -> PolicyReport:
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    report = PolicyReport(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine(tool, False) | {"checkout": checkout()},
        kinds=args.kinds,
        trees={},
        callgrind_requests=args.callgrind,
        sequential_requests=args.sequential,
        limits=args.limits,
    )
    with tempfile.TemporaryDirectory(prefix="tfgw-policy-") as tmp:
        directory = Path(tmp)
        before = Path(args.tree) if args.tree else export_tree(args.before, directory / "before")
        here = export_tree(args.here, directory / "here") if args.here else snapshot_here(directory / "here")
        mine = f"{args.here} (git archive)" if args.here else report.machine["checkout"]
        theirs = f"{args.tree} (--tree)" if args.tree else f"{args.before} (git archive)"
        report.trees = {"before": theirs, "none": mine, "policy": mine}
        for tree in (before, here):
            imported_from(tree.resolve(), directory)
        gateways = [Gateway("before", before.resolve(), False), Gateway("none", here, False)]
        gateways.append(Gateway("policy", here, True, KEY_LIMITS[args.limits]))
        measure(args, directory, gateways, report)
    report.machine["calibration_ms_at_end"] = calibration_ms()
    report.us_per_instruction = calibrations(report)
    report.verdicts = verdicts(report)
    return report


def measure(args: argparse.Namespace, directory: Path, gateways: list[Gateway], report: PolicyReport) -> None:
    """The sequential runs (and the load runs) with every gateway up; then each under callgrind."""
    with running([]) as processes:
        upstream = start_upstream(directory, "upstream", 0, processes)
        with running([]) as plain:  # stopped before callgrind: see `callgrind_rows`
            started = {g.name: start_plain(g, directory, upstream, plain) for g in gateways}
            try:
                for kind, _ in itertools.product(args.kinds, range(args.rounds)):  # ORDER `rounds` times
                    report.sequential += [sequential_run(started, p, kind, args.sequential) for p in ORDER]
                if args.load:
                    report.load_runs = [load_run(started, p, k, args) for k in args.kinds for p in ORDER]
            except (BenchError, LoadError):
                progress("\n".join(f"{name} log tail:\n{log_tail(e.log)}" for name, e in started.items()))
                raise
            for name, gateway in started.items():
                if not alive(gateway.pid):
                    raise BenchError(f"{name} exited during the runs:\n{log_tail(gateway.log)}")
            sent = sum(
                r["requests"] + callgrind.WARMUP for r in report.sequential if r["path"] in ("policy", "hit")
            )
            sent += sum(run.answered for run in report.load_runs if run.path in ("policy", "hit"))
            report.policy_seen = policy_seen(started["policy"], directory, sent)
        if args.callgrind:
            report.callgrind = callgrind_rows(gateways, directory, upstream, args.kinds, args.callgrind)
    report.load_rows = rows_of(report.load_runs)


def mean_cpu(report: PolicyReport, kind: str, path: str) -> float | None:
    """A path's CPU µs a request over its sequential runs."""
    runs = [r["cpu_us_per_request"] for r in report.sequential if (r["kind"], r["path"]) == (kind, path)]
    return sum(runs) / len(runs) if runs else None


def instructions(report: PolicyReport, kind: str, path: str) -> float | None:
    return next((r["instructions"] for r in report.callgrind if (r["kind"], r["path"]) == (kind, path)), None)


def calibrations(report: PolicyReport) -> dict[str, float | None]:
    """µs of CPU per instruction, by kind: `none`'s sequential CPU µs over its instructions."""
    out: dict[str, float | None] = {}
    for kind in report.kinds:
        cpu, counted = mean_cpu(report, kind, "none"), instructions(report, kind, "none")
        out[kind] = cpu / counted if cpu and counted else None  # no CPU counted: too few requests
    return out


COMPARED = (  # (requirement, path, reference)
    ("none configured against the tree before", "none", "before"),
    ("all of it configured, every request a cache miss stored", "policy", "none"),
    ("all of it configured, every request a cache hit", "hit", "none"),
)


VERDICT_KEYS: tuple[str, ...] = (
    "requirement",
    "kind",
    "path",
    "reference",
    "excess_instructions",
    "excess_pct",
)
VERDICT_KEYS += ("excess_us", "us_from", "sequential_cpu_excess_us", "bound", "ok")


def verdicts(report: PolicyReport) -> list[dict[str, Any]]:
    """Each comparison by kind: the excess in instructions (when counted) and in µs (instructions
    times the calibration, or else the sequential CPU time), against its bound."""
    out = []
    for kind in report.kinds:
        for what, path, reference in COMPARED:
            counted, base = instructions(report, kind, path), instructions(report, kind, reference)
            excess = counted - base if counted is not None and base is not None else None
            scale = report.us_per_instruction.get(kind)
            cpu, cpu_base = mean_cpu(report, kind, path), mean_cpu(report, kind, reference)
            cpu_excess = cpu - cpu_base if cpu is not None and cpu_base is not None else None
            us = excess * scale if excess is not None and scale is not None else cpu_excess
            pct = excess / base * 100 if excess is not None and base else None
            if path == "none":
                bound, ok = f"<= +{BOUND_NONE_PCT:g} %", None if pct is None else pct <= BOUND_NONE_PCT
            else:
                bound, ok = f"<= {BOUND_POLICY_US:g} µs", None if us is None else us <= BOUND_POLICY_US
            source = "instructions" if excess is not None and scale is not None else "cpu"
            values = (what, kind, path, reference, excess, pct, us, source, cpu_excess, bound, ok)
            out.append(dict(zip(VERDICT_KEYS, values, strict=True)))
    return out


# --- output --------------------------------------------------------------------------------------


def header(report: PolicyReport) -> str:
    m, trees = report.machine, report.trees
    n = report.callgrind_requests
    counted = f"callgrind, {n} sequential requests a path, " if n else ""
    return (
        f"{report.date}; {m['nproc']} CPUs, Python {m['python']}, tfgw at {trees['none']} against "
        f"{trees['before']}, {counted}{report.sequential_requests} sequential requests a path and run "
        f"without valgrind, {conditions(m)}"
    )


TREES = {"before": "before", "none": "this checkout", "policy": "this checkout", "hit": "this checkout"}
CONFIGS = {
    "before": "plain",
    "none": "plain",
    "policy": "{policy}, distinct requests",
    "hit": "{policy}, one request",
}
#: what the `policy` gateway has configured, by `--limits`
POLICY_CONFIGS = {"all": "all", "budget": "the key's budget, the cache, two guardrails"}


def config_label(report: PolicyReport, path: str) -> str:
    return CONFIGS[path].format(policy=POLICY_CONFIGS[report.limits])


def paths_table(report: PolicyReport) -> list[str]:
    lines = [
        "| kind | path | tree | config | instructions a request | CPU µs/req, sequential (each run) |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for kind in report.kinds:
        for path in PATHS:
            each = [
                r["cpu_us_per_request"] for r in report.sequential if (r["kind"], r["path"]) == (kind, path)
            ]
            runs, counted = " / ".join(fmt(v, 0) for v in each), fmt(instructions(report, kind, path), 0)
            lines.append(
                f"| {kind} | {path} | {TREES[path]} | {config_label(report, path)} | {counted} | "
                f"{fmt(mean_cpu(report, kind, path), 0)} ({runs}) |"
            )
    return lines


def verdicts_table(report: PolicyReport) -> list[str]:
    lines = [
        "| requirement | kind | path - reference | instructions | µs | bound | verdict |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for v in report.verdicts:
        verdict = "n/a" if v["ok"] is None else "pass" if v["ok"] else "FAIL"
        counted = "n/a" if v["excess_instructions"] is None else f"{v['excess_instructions']:+,.0f}"
        if v["excess_pct"] is not None:
            counted += f" ({v['excess_pct']:+.1f} %)"
        us = "n/a" if v["excess_us"] is None else f"{v['excess_us']:+,.1f}"
        us += " (CPU)" if v["us_from"] == "cpu" and v["excess_us"] is not None else ""
        lines.append(
            f"| {v['requirement']} | {v['kind']} | {v['path']} - {v['reference']} | {counted} | {us} | "
            f"{v['bound']} | {verdict} |"
        )
    return lines


def markdown(report: PolicyReport) -> str:
    scales = report.us_per_instruction.items()
    scale = ", ".join(f"{kind} {value * 1000:.3f} µs per 1,000" for kind, value in scales if value)
    parts = [header(report), "\n".join(paths_table(report))]
    if scale:
        parts.append(f"µs per instruction (`none`'s sequential CPU µs over its instructions): {scale}.")
    parts.append("\n".join(verdicts_table(report)))
    if seen := report.policy_seen:
        parts.append(
            f"The `policy` gateway's trace log: {seen['traces']:,} traces, {seen['cache_misses']:,} cache "
            f"misses, {seen['cache_hits']:,} hits, {seen['guardrails_passed']:,} guardrail verdicts pass, "
            f"{seen['guardrails_not_passed']:,} not."
        )
    if report.load_rows:
        parts.append("\n".join(runs_table(report.load_rows)))
    return "\n\n".join(parts)


def as_json(report: PolicyReport) -> str:
    data = asdict(report)
    data["load_runs"] = [
        {"scenario": run.scenario, "path": run.path}
        | {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(run.result).items()}
        | {"cpu_us_per_request": run.cpu_us_per_request}
        for run in report.load_runs
    ]  # NaN percentiles (no successful answer) as null: valid JSON
    return json.dumps(data, indent=2)


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags; a bad value is one line on stderr naming the flag, and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--callgrind", type=int, default=200, help="requests a path under callgrind (0: none)"
    )
    parser.add_argument("--sequential", type=int, default=1000, help="requests a path and run, no valgrind")
    parser.add_argument("--rounds", type=int, default=3, help="sequential runs a path: 2 x this (default 3)")
    parser.add_argument("--kinds", default="json,stream", help="json, stream or both (default both)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit to set against (default {BEFORE})")
    parser.add_argument("--tree", help="a directory holding the tfgw/ to set against, instead of --before")
    parser.add_argument("--here", help="this commit's tfgw/ (git archive) instead of the working tree's")
    parser.add_argument(
        "--limits",
        choices=sorted(KEY_LIMITS),
        default="all",
        help="the policy gateway key's limits: rpm, tpm and a daily budget (all), or the budget alone",
    )
    parser.add_argument("--load", action="store_true", help="also CPU µs/request under load, interleaved")
    parser.add_argument("--concurrency", type=int, default=10, help="with --load (default 10)")
    parser.add_argument("--duration", type=float, default=5.0, help="with --load: seconds a run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="with --load: warm-up seconds (default 1)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    problem = check_args(args, kinds)
    if problem:
        parser.exit(2, f"error: {problem}\n")
    if args.callgrind and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        parser.exit(2, "error: --callgrind: needs valgrind on PATH (apt-get install -y valgrind), or 0\n")
    args.kinds = kinds
    return args


def check_args(args: argparse.Namespace, kinds: list[str]) -> str | None:
    """What is wrong with the flags, naming the flag; None when nothing is."""
    if not kinds or any(kind not in KINDS for kind in kinds) or len(set(kinds)) != len(kinds):
        return f"--kinds: json, stream or both, got {args.kinds!r}"
    bounds = (
        ("callgrind", 0, 10_000),
        ("sequential", 1, 100_000),
        ("rounds", 1, 100),
        ("concurrency", 1, 1000),
    )
    for flag, low, high in bounds:
        if not low <= getattr(args, flag) <= high:
            return f"--{flag}: must be within {low}..{high}, got {getattr(args, flag)}"
    if not 0 < args.duration <= MAX_DURATION_S:
        return f"--duration: must be within (0, {MAX_DURATION_S:g}] s, got {args.duration:g}"
    if not 0 <= args.warmup <= MAX_DURATION_S:
        return f"--warmup: must be within [0, {MAX_DURATION_S:g}] s, got {args.warmup:g}"
    if args.tree and not (Path(args.tree) / "tfgw" / "__init__.py").is_file():
        return f"--tree: {args.tree} holds no tfgw/__init__.py"
    for flag, commit in (("before", None if args.tree else args.before), ("here", args.here)):
        verify = ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"]
        if commit and subprocess.run(verify, capture_output=True, timeout=30, check=False).returncode != 0:
            return f"--{flag}: {commit!r} is not a commit of {REPO}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: bench(args), as_json if args.json else markdown)


if __name__ == "__main__":
    sys.exit(main())
