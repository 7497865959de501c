"""A target for the encoding and sending tests: the fields of `tfgw.export.targets.ResolvedTarget`
that `encode` and `send` read, with test-friendly defaults (plaintext, no compression, short
timeout), so these tests do not depend on how targets are resolved from a config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KEY = "ak-0123456789abcdef"
SPACE = "U3BhY2U6MTIzNDU2Nzg="
ARIZE_HEADERS = {
    "authorization": KEY,
    "api_key": KEY,
    "arize-space-id": SPACE,
    "space_id": SPACE,
    "arize-interface": "otel",
}
MW_KEY = "mw0123456789abcdefgh"


@dataclass(frozen=True)
class TargetStub:
    endpoint: str
    name: str = "t"
    kind: str = "otlp"
    protocol: str = "http/protobuf"
    insecure: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    project: str = "default"
    exclude_request_data: bool = False
    compression: str | None = None
    timeout: float = 2.0
    enabled: bool = True
    secrets: tuple[str, ...] = ()
    conventions: tuple[str, ...] = ("openinference", "gen_ai")
