"""What a replay reports: per file, spans read, sent, accepted, rejected and dropped; the
backend's failures; and whether every span was accepted (the exit code a CI job gates on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["MAX_FAILURES", "MAX_WARNINGS", "FileVerdict", "ReplayResult", "Warnings"]

#: distinct failure messages kept in the verdict (all are counted)
MAX_FAILURES = 20
#: warnings kept in the verdict (all are counted)
MAX_WARNINGS = 50


@dataclass(slots=True)
class Warnings:
    """The first `MAX_WARNINGS` warnings of a replay, both passes, and how many more there were."""

    shown: list[str] = field(default_factory=list)
    hidden: int = 0

    def add(self, text: str) -> None:
        if len(self.shown) < MAX_WARNINGS:
            self.shown.append(text)
        else:
            self.hidden += 1

    def as_list(self) -> list[str]:
        return [*self.shown, f"… {self.hidden} more warnings"] if self.hidden else list(self.shown)


@dataclass(slots=True)
class FileVerdict:
    file: str
    spans: int  # read
    sent: int = 0
    accepted: int = 0
    rejected: int = 0  # refused by the backend: a permanent error, or partial success
    dropped: int = 0  # not sendable at all (too big even without its text, not encodable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "spans": self.spans,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "dropped": self.dropped,
        }


@dataclass(slots=True)
class ReplayResult:
    target: str
    protocol: str
    endpoint: str
    dry_run: bool
    files: list[FileVerdict]
    projects: dict[str, int]  # as sent: --project, else the files' own
    start_ns: int | None  # the time range as sent (rebased if asked)
    end_ns: int | None
    #: failures as the backend gave them: {file, status, message, spans}
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: Warnings = field(default_factory=Warnings)
    unreachable: str | None = None  # why the replay stopped, if the backend stayed unreachable

    @property
    def spans(self) -> int:
        return sum(f.spans for f in self.files)

    def total(self, what: str) -> int:
        return sum(getattr(f, what) for f in self.files)

    @property
    def ok(self) -> bool:
        """Every span accepted (a dry run: every line valid)."""
        if self.dry_run:
            return True
        return self.unreachable is None and self.total("accepted") == self.spans

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "target": self.target,
            "protocol": self.protocol,
            "endpoint": self.endpoint,
            "spans": self.spans,
        }
        if not self.dry_run:
            out |= {k: self.total(k) for k in ("sent", "accepted", "rejected", "dropped")}
        out |= {
            "projects": self.projects,
            "time_range": {"start": _iso(self.start_ns), "end": _iso(self.end_ns)},
            "files": [
                f.as_dict() if not self.dry_run else {"file": f.file, "spans": f.spans} for f in self.files
            ],
        }
        if not self.dry_run:
            out |= {"failures": self.failures, "unreachable": self.unreachable}
        out["warnings"] = self.warnings.as_list()
        return out


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
