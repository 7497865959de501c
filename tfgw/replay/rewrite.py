"""Pass 2 of a replay, before encoding: what `--rebase-time` and `--new-ids` do to each line, and
enum names (`SPAN_KIND_SERVER`), which pass 1 accepted, as the integers OTLP wants.

`--new-ids` maps every id through a keyed hash (BLAKE2b, a random key per run): the same id maps
to the same new id in every file of a run, parents and links still resolve, two runs differ, and
nothing is remembered per span.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from tfgw.tracing.otlp.validate import kind_by_name, status_by_name

__all__ = ["Rewriter"]


class Rewriter:
    """What pass 2 does to each line before `encode.prepare`: in place, on a freshly parsed line."""

    def __init__(self, offset_ns: int, new_ids: bool) -> None:
        self.offset = offset_ns
        self.key = secrets.token_bytes(32) if new_ids else None
        self._last_trace: tuple[str, str] = ("", "")

    def line(self, data: dict[str, Any]) -> dict[str, Any]:
        offset, key = self.offset, self.key
        for rs in data.get("resourceSpans") or ():
            for ss in rs.get("scopeSpans") or ():
                for span in ss.get("spans") or ():
                    kind = span.get("kind")
                    if type(kind) is str:
                        span["kind"] = kind_by_name(kind)
                    status = span.get("status")
                    if status and type(status.get("code")) is str:
                        status["code"] = status_by_name(status["code"])
                    if offset:
                        span["startTimeUnixNano"] = str(int(span["startTimeUnixNano"]) + offset)
                        span["endTimeUnixNano"] = str(int(span["endTimeUnixNano"]) + offset)
                        for event in span.get("events") or ():
                            event["timeUnixNano"] = str(int(event["timeUnixNano"]) + offset)
                    if key is not None:
                        trace_id = span["traceId"].lower()
                        span["traceId"] = self.trace_id(trace_id)
                        span["spanId"] = self.span_id(trace_id, span["spanId"])
                        if span.get("parentSpanId"):
                            span["parentSpanId"] = self.span_id(trace_id, span["parentSpanId"])
                        for link in span.get("links") or ():
                            link_trace = link["traceId"].lower()
                            link["traceId"] = self.trace_id(link_trace)
                            link["spanId"] = self.span_id(link_trace, link["spanId"])
        return data

    def trace_id(self, trace_id: str) -> str:
        last = self._last_trace
        if last[0] == trace_id:
            return last[1]
        new = self._hash(trace_id, 16)
        self._last_trace = (trace_id, new)
        return new

    def span_id(self, trace_id: str, span_id: str) -> str:
        return self._hash(trace_id + span_id.lower(), 8)

    def _hash(self, data: str, size: int) -> str:
        digest = hashlib.blake2b(data.encode(), key=self.key or b"", digest_size=size).hexdigest()
        return digest if digest.strip("0") else "0" * (size * 2 - 1) + "1"
