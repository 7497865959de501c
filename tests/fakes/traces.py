"""A stand-in for the gateway's trace log, for tests that run the app in process."""

from __future__ import annotations

from tfgw.tracing.spans import RequestTrace


class Traces:
    """Stands in for the trace log: keeps every finished trace."""

    def __init__(self) -> None:
        self.traces: list[RequestTrace] = []

    def submit(self, trace: RequestTrace) -> None:
        self.traces.append(trace)

    def close(self) -> None:
        pass
