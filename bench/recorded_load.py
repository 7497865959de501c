"""Loading recordings for the `recorded` provider, and what one recorded answer costs.

    python bench/recorded_load.py                  # about 1,000,000 spans (215,000 requests)
    python bench/recorded_load.py --spans 100000 --json
    python bench/recorded_load.py --dir /tmp/rec --keep   # keep the generated log

Writes a log as the gateway writes it, into a temporary directory (deleted at the end unless
`--keep`; its summary goes to `bench.log` there too): segments of 64 MiB of lines made by tfgw's own
encoder (`tfgw.tracing.encode.Encoder`) from real span records, in three request shapes taken in
turn: a streamed chat call with usage (5 spans), a chat call with tools (4 spans) and a streamed
`POST /v1/messages` call (5 spans). Every request asks something of its own (a numbered user
message), so each is its own recording: the index's worst case for memory.

Then loads it `--repeat` times, each in a fresh process (`tfgw.providers.recordings.load`), and
reports the wall and CPU time and the peak RSS of the process (`ru_maxrss`) and the RSS it had
after its imports, before loading; and times answers in-process: `RecordedProvider.chat` and a
whole `open_stream` against `MockProvider`'s (µs per call, best of 5 runs).

Bounded: at most 5,000,000 spans, 20 repeats; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfgw.config import ProviderSettings, Timeouts  # noqa: E402
from tfgw.formats import messages as messages_format  # noqa: E402
from tfgw.providers.base import Call  # noqa: E402
from tfgw.providers.mock import MockProvider  # noqa: E402
from tfgw.tracing.encode import Encoder  # noqa: E402
from tfgw.tracing.fold import StreamFold  # noqa: E402
from tfgw.tracing.spans import Event, LlmCall, RequestTrace  # noqa: E402

MAX_SPANS = 5_000_000
SEGMENT_BYTES = 64 * 1024 * 1024
MARK = "Q1234567Q"  # the numbered part of each request, replaced in the encoded line
SPANS_PER_SHAPE = (5, 4, 5)
ANSWER = "Sure. Here is a short answer to your question, in a handful of plain words."
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]  # fmt: skip

CHILD = """
import json, resource, sys, time
from tfgw.providers.recordings import load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
index = load([sys.argv[1]])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"recordings": len(index), "spans": index.spans, "wall_s": wall, "cpu_s": cpu,
                  "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))
"""


def _completion(text: str | None, tools: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    finish = "stop"
    if tools:
        call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {
        "id": "chatcmpl-bench" + MARK, "object": "chat.completion", "created": 1796000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48},
    }  # fmt: skip


def _line(shape: int) -> bytes:
    """One request of `shape`, encoded as the gateway writes it, with `MARK` to number."""
    lines: list[bytes] = []
    encoder = Encoder("bench")
    route = "POST /v1/messages" if shape == 2 else "POST /v1/chat/completions"
    trace = RequestTrace(route, lambda t: lines.append(orjson.dumps(encoder.line(t))))
    for name in ("auth", "model.resolve"):
        trace.child(name).close()
    question = f"Question {MARK}: what is the weather like in the city today?"
    body: dict[str, Any] = {"model": "gpt", "messages": [{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": question}]}  # fmt: skip
    client = None
    if shape == 1:
        body["tools"] = TOOLS
    if shape == 2:
        client = {"model": "claude", "max_tokens": 256, "system": "Be brief.", "stream": True,
                  "messages": [{"role": "user", "content": question}]}  # fmt: skip
        body = messages_format.to_chat_request(client)
    stream = shape != 1
    if stream and client is None:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    call = LlmCall("chat", "up", "openai", "http://127.0.0.1:9/v1", "gpt-4o-mini", "gpt", 1,
                   request=body, client_request=client, stream=stream)  # fmt: skip
    llm = trace.llm(call)
    completion = _completion(None if shape == 1 else ANSWER, tools=shape == 1)
    if stream:
        fold = StreamFold()
        fold.add({**completion, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for word in ANSWER.split(" "):
            fold.add({"choices": [{"index": 0, "delta": {"content": word + " "}}]})
        fold.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        fold.add({"choices": [], "usage": completion["usage"]})
        call.response, call.first_chunk = fold, time.time_ns()
        llm.events.append(Event("First Token Stream Event", call.first_chunk))
        trace.child("stream", parent=llm).attributes["tfgw.stream.chunks"] = fold.chunks
    else:
        call.response, call.response_body = completion, orjson.dumps(completion)
    trace.root.attributes["http.response.status_code"] = 200
    trace.finish()
    return lines[0] + b"\n"


def generate(directory: Path, spans: int) -> dict[str, Any]:
    templates = [_line(shape) for shape in range(3)]
    began = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    written = requests = count = seq = 0
    out = None
    while count < spans:
        shape = requests % 3
        line = templates[shape].replace(MARK.encode(), b"%09d" % requests)
        if out is None or out.tell() + len(line) > SEGMENT_BYTES:
            if out is not None:
                out.close()
            seq += 1
            out = (directory / f"tfgw-20261201-000000-1000-{seq:04d}.jsonl").open("wb")
        out.write(line)
        written += len(line)
        requests += 1
        count += SPANS_PER_SHAPE[shape]
    if out is not None:
        out.close()
    return {"requests": requests, "spans": count, "segments": seq, "segment_mib": round(written / 2**20, 1),
            "generate_s": round(time.perf_counter() - began, 2)}  # fmt: skip


def load_once(directory: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(directory)], capture_output=True, text=True,
                          check=True, cwd=REPO, timeout=600)  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def answer_costs(directory: Path, calls: int) -> dict[str, float]:
    """µs per answer, best of 5 runs of `calls`: recorded vs mock, JSON and a whole stream."""
    from tfgw.providers.recorded import RecordedProvider

    recorded = RecordedProvider(ProviderSettings("rec", "recorded", "", traces=(str(directory),)))
    mock = MockProvider(ProviderSettings("mock", "mock", "mock://"))
    mock.chunk_delay = 0  # the mock's stream waits 20 ms a chunk only to look like one in a terminal
    question = f"Question {4:09d}: what is the weather like in the city today?"  # a tools call
    body = {"model": "gpt", "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": question}], "tools": TOOLS}  # fmt: skip
    json_call = Call("gpt-4o-mini", body, Timeouts())
    stream_body = {"model": "gpt", "stream": True, "stream_options": {"include_usage": True},
                   "messages": body["messages"]}  # fmt: skip
    stream_call = Call("gpt-4o-mini", {**stream_body, "messages": [body["messages"][0], {
        "role": "user", "content": question.replace("000000004", "000000003")}]}, Timeouts())  # fmt: skip

    async def whole(provider: Any, call: Call) -> None:
        stream = await provider.open_stream(call)
        async for _ in stream:
            pass

    async def timed(make: Any) -> float:
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(calls):
                await make()
            best = min(best, (time.perf_counter() - began) / calls * 1e6)
        return round(best, 1)

    async def main() -> dict[str, float]:
        return {
            "recorded_json_us": await timed(lambda: recorded.chat(json_call)),
            "mock_json_us": await timed(lambda: mock.chat(json_call)),
            "recorded_stream_us": await timed(lambda: whole(recorded, stream_call)),
            "mock_stream_us": await timed(lambda: whole(mock, stream_call)),
        }

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="answers per timing run")
    parser.add_argument("--dir", type=Path, help="where to write the log (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the log")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 0 < args.spans <= MAX_SPANS or not 0 < args.repeat <= 20:
        parser.error(f"--spans must be 1..{MAX_SPANS:,}, --repeat 1..20")
    base = args.dir or Path(tempfile.mkdtemp(prefix="tfgw-recorded-"))
    directory = base / "log"
    try:
        report: dict[str, Any] = {"generated": generate(directory, args.spans)}
        loads = [load_once(directory) for _ in range(args.repeat)]
        report["load"] = {
            "recordings": loads[0]["recordings"], "spans": loads[0]["spans"],
            "best_wall_s": round(min(r["wall_s"] for r in loads), 2),
            "best_cpu_s": round(min(r["cpu_s"] for r in loads), 2),
            "rss_before_mb": round(min(r["rss_before_mb"] for r in loads), 1),
            "rss_peak_mb": round(max(r["rss_peak_mb"] for r in loads), 1),
        }  # fmt: skip
        report["answers"] = answer_costs(directory, args.calls)
        text = json.dumps(report, indent=None if args.json else 2)
        (base / "bench.log").write_text(text + "\n")
        print(text)
        print(f"log: {base / 'bench.log'}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
