"""The spans of one trace: the `traces show` waterfall (a rich Tree) and the indented lines
`traces tail --spans` prints under each request.

Spans are shown as a tree: a span whose parent is not in the trace is a root (the gateway's
SERVER span has the caller's span as parent when the request carried a `traceparent`), and
children come in order of start time. Each span shows its name, kind, start offset from the
trace's start, duration, a bar on the trace's time line, its status, and the attributes a
reader looks for first: model, provider, attempt, tokens in/out, cost, finish reason, time to
first token, and for a failure its `error.type` and exception message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from rich.tree import Tree

from tfgw.tracing import semconv as sc
from tfgw.tracing.reader import Trace, decode_span
from tfgw.views.terminal import cost, ms, timestamp

__all__ = ["error_text", "facts", "span_lines", "span_tree", "waterfall"]

Pair = tuple[Mapping[str, Any], Mapping[str, Any]]

BAR, BAR_MIN = 30, 10  # time line width, at most and at least
LABEL = 2 + 8 + 2 + 11 + 2 + 10 + 2 + 7  # kind, offset, duration, status and the gaps between
GUIDE = 4  # width of one level of rich's tree guides
STATUS_STYLES = {"ok": "green", "error": "bold red"}


def span_tree(spans: Sequence[Pair]) -> list[tuple[int, Pair]]:
    """`(depth, (resource, span))` depth first, children by start time. Spans no root leads to (a
    parent cycle) come last, as roots."""
    ids = {span.get("spanId") for _, span in spans}
    children: dict[Any, list[Pair]] = {}
    for pair in spans:
        parent = pair[1].get("parentSpanId")
        children.setdefault(parent if parent and parent in ids else None, []).append(pair)
    order: list[tuple[int, Pair]] = []
    seen: set[int] = set()
    stack = [(0, pair) for pair in sorted(children.get(None, ()), key=_start, reverse=True)]
    while stack:
        depth, pair = stack.pop()
        if id(pair) in seen:
            continue
        seen.add(id(pair))
        order.append((depth, pair))
        kids = children.get(pair[1].get("spanId"), ())
        stack.extend((depth + 1, kid) for kid in sorted(kids, key=_start, reverse=True))
    order.extend((0, pair) for pair in spans if id(pair) not in seen)
    return order


def _start(pair: Pair) -> tuple[int, str]:
    return int(pair[1].get("startTimeUnixNano") or 0), str(pair[1].get("name") or "")


def facts(span: Mapping[str, Any]) -> list[str]:
    """The attributes worth a glance, as `label value` strings, from a `decode_span()` object."""
    a = span["attributes"]
    out: list[str] = []
    http = a.get(sc.HTTP_STATUS)
    if http is not None:
        out.append(f"http {http}")
    for label, key in (("key", sc.KEY_NAME), ("session", sc.SESSION_ID), ("user", sc.USER_ID)):
        if a.get(key) is not None:
            out.append(f"{label} {a[key]}")
    asked = a.get(sc.GEN_REQUEST_MODEL) or a.get(sc.MODEL_REQUESTED)
    answered = a.get(sc.GEN_RESPONSE_MODEL)
    if asked or answered:
        out.append(
            f"model {asked or answered}" + (f" -> {answered}" if answered and asked != answered else "")
        )
    provider = a.get(sc.ROUTE_PROVIDER) or a.get(sc.LLM_PROVIDER) or a.get(sc.GEN_PROVIDER)
    if a.get(sc.ROUTE_MODEL) and not a.get(sc.GEN_OPERATION):  # model.resolve: where it goes
        out.append(f"route {provider or '-'}/{a[sc.ROUTE_MODEL]}")
    elif provider:
        out.append(f"provider {provider}")
    if a.get(sc.ROUTE_ATTEMPT) is not None and a.get(sc.GEN_OPERATION):
        out.append(f"attempt {a[sc.ROUTE_ATTEMPT]}")
    tokens_in = a.get(sc.TOKENS_PROMPT, a.get(sc.GEN_INPUT_TOKENS))
    tokens_out = a.get(sc.TOKENS_COMPLETION, a.get(sc.GEN_OUTPUT_TOKENS))
    if tokens_in is not None or tokens_out is not None:
        out.append(
            f"tokens {'-' if tokens_in is None else tokens_in}/{'-' if tokens_out is None else tokens_out}"
        )
    if a.get(sc.COST_TOTAL) is not None:
        out.append(f"cost {cost(a[sc.COST_TOTAL])}")
    finish = a.get(sc.GEN_FINISH_REASONS) or a.get(sc.LLM_FINISH)
    if finish:
        out.append("finish " + (",".join(map(str, finish)) if isinstance(finish, list) else str(finish)))
    ttft = a.get(sc.STREAM_TTFT)
    if ttft is None and a.get(sc.GEN_TTFC) is not None:
        ttft = float(a[sc.GEN_TTFC]) * 1000
    if ttft is not None:
        out.append(f"ttft {ms(float(ttft))}")
    if a.get(sc.STREAM_CHUNKS) is not None:
        out.append(f"chunks {a[sc.STREAM_CHUNKS]}")
    if a.get(sc.STREAM_CANCELLED):
        out.append("cancelled")
    if a.get(sc.ROUTE_FALLBACK_REASON):
        out.append(f"fallback {a[sc.ROUTE_FALLBACK_REASON]}")
    if a.get(sc.OVERHEAD_MS) is not None:
        out.append(f"overhead {ms(float(a[sc.OVERHEAD_MS]))}")
    return out


def error_text(span: Mapping[str, Any]) -> str | None:
    """`error.type: exception message` of a failed span (None if it did not fail)."""
    kind = span["attributes"].get(sc.ERROR_TYPE)
    message = next(
        (e["attributes"].get("exception.message") for e in span["events"] if e["name"] == "exception"),
        None,
    )
    message = message or span.get("status_message")
    if span["status"] != "error" and kind is None:
        return None
    return ": ".join(str(x) for x in (kind or "error", message) if x)


def waterfall(trace: Trace, width: int = 120) -> Tree:
    """`traces show`: a header line (trace id, start, duration, status) over the tree of spans,
    each with its place on the trace's time line; the bars shrink to fit `width` columns."""
    spans = [(depth, decode_span(res, span)) for depth, (res, span) in span_tree(trace.spans)]
    t0 = min(s["start"] for _, s in spans)
    t1 = max(max(s["end"], s["start"]) for _, s in spans)
    names = max(GUIDE * depth + len(str(s["name"])) for depth, s in spans)
    bar = max(BAR_MIN, min(BAR, width - GUIDE - names - LABEL))
    row = trace.row() or {}
    header = Text.assemble(
        ("trace ", "bold"),
        (trace.trace_id, "cyan"),
        f"  {timestamp(t0)}  {ms((t1 - t0) / 1e6)}  {len(spans)} spans",
    )
    if row.get("status"):
        header.append(f"  {row['status']}", style=STATUS_STYLES.get(row["status"], ""))
    remote = next((s["parent_span_id"] for depth, s in spans if depth == 0 and s["parent_span_id"]), None)
    if remote:
        header.append(f"  parent span {remote} (the caller's)", style="dim")
    tree = Tree(header, guide_style="dim")
    parents: list[Tree] = [tree]
    for depth, span in spans:
        label = _label(span, names - GUIDE * depth, t0, max(t1 - t0, 1), bar)
        del parents[depth + 1 :]
        parents.append(parents[min(depth, len(parents) - 1)].add(label))
    return tree


def _label(span: Mapping[str, Any], name_width: int, t0: int, total: int, bar: int) -> Text:
    start, end = span["start"], max(span["end"], span["start"])
    text = Text()
    text.append(str(span["name"]).ljust(name_width), style="bold")
    offset_ms, duration_ms = "+" + ms((start - t0) / 1e6), ms((end - start) / 1e6)
    text.append(f"  {span['kind']:<8}  {offset_ms:>11}  {duration_ms:>10}  ")
    offset = min(bar - 1, (start - t0) * bar // total)
    length = max(1, min(bar - offset, round((end - start) * bar / total)))
    text.append("·" * offset, style="dim")
    text.append("█" * length, style=STATUS_STYLES.get(span["status"], "blue"))
    text.append("·" * (bar - offset - length), style="dim")
    if span["status"] != "unset":
        text.append(f"  {span['status']}", style=STATUS_STYLES.get(span["status"], ""))
    shown = facts(span)
    if shown:
        text.append("\n" + "  ".join(shown), style="dim")
    error = error_text(span)
    if error:
        text.append("\n" + error, style="red")
    return text


def span_lines(trace: Trace, indent: int = 2) -> list[Text]:
    """`traces tail --spans`: one line per span, indented by depth under the request's line."""
    lines = []
    for depth, (res, raw) in span_tree(trace.spans):
        span = decode_span(res, raw)
        text = Text(" " * (indent * (depth + 1)))
        text.append(str(span["name"]), style="bold")
        text.append(f"  {span['kind']}  {ms(span['duration_ms'])}")
        if span["status"] != "unset":
            text.append(f"  {span['status']}", style=STATUS_STYLES.get(span["status"], ""))
        shown = facts(span)
        if shown:
            text.append("  " + "  ".join(shown), style="dim")
        error = error_text(span)
        if error:
            text.append("  " + error, style="red")
        lines.append(text)
    return lines
