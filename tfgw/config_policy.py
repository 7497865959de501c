"""The config's governance sections: `cache` on a model and `[[guardrails]]` (`tfgw.config`
builds them with these checks; every problem names the file, line and key)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tfgw.config_toml import KeyPath, TableChecker

__all__ = ["PII_PATTERNS", "CacheSettings", "GuardrailSettings", "PolicyChecks"]

GUARDRAIL_KINDS = ("pii", "regex", "keywords")
GUARDRAIL_STAGES = ("input", "output")
GUARDRAIL_ACTIONS = ("block", "redact")
#: what `kind = "pii"` can look for
PII_PATTERNS = ("email", "phone", "credit_card", "iban", "api_key")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """`cache = { ttl = 300 }` on a model: exact-match answers kept `ttl` seconds, per gateway key
    unless `shared`."""

    ttl: float
    shared: bool = False


@dataclass(frozen=True, slots=True)
class GuardrailSettings:
    """One `[[guardrails]]` rule: what it looks for (`kind` and `patterns`: PII names, regular
    expressions or keywords), where (`stage`: input, output or both; `models`: names or globs) and
    what it does when it matches (`action`: block with 400, or redact)."""

    name: str
    kind: str
    patterns: tuple[str, ...]
    stages: tuple[str, ...] = ("input",)
    action: str = "block"
    models: tuple[str, ...] = ("*",)


class PolicyChecks(TableChecker):
    def cache(self, t: dict[str, Any], path: KeyPath) -> CacheSettings | None:
        if "cache" not in t:
            return None
        cp = (*path, "cache")
        ct = self.table(t["cache"], cp, ("ttl", "shared"))
        if "ttl" not in ct:
            raise self.fail(cp, "needs ttl (seconds an answer is kept), e.g. cache = { ttl = 300 }")
        return CacheSettings(
            ttl=self.positive(ct, cp, "ttl", float, None), shared=self.value(ct, cp, "shared", bool, False)
        )

    def guardrails(self, value: Any) -> tuple[GuardrailSettings, ...]:
        if not isinstance(value, list):
            raise self.fail(("guardrails",), "expected an array of tables ([[guardrails]])")
        rules: list[GuardrailSettings] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            path = ("guardrails", i)
            t = self.table(item, path, ("name", "stage", "kind", "patterns", "action", "models"))
            name = self.required(t, path, "name", str)
            if name in seen:
                raise self.fail((*path, "name"), f"duplicate guardrail name {name!r}")
            seen.add(name)
            kind = self.choice(t, path, "kind", GUARDRAIL_KINDS, None)
            if kind is None:
                raise self.fail((*path, "kind"), f"is required (one of {', '.join(GUARDRAIL_KINDS)})")
            patterns = self.str_list(t, path, "patterns")
            if not patterns:
                raise self.fail((*path, "patterns"), "needs at least one pattern")
            for j, pattern in enumerate(patterns):
                if kind == "pii" and pattern not in PII_PATTERNS:
                    raise self.fail(
                        (*path, "patterns", j),
                        f"unknown PII pattern {pattern!r} (one of {', '.join(PII_PATTERNS)})",
                    )
                if kind == "regex":
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise self.fail(
                            (*path, "patterns", j), f"is not a valid regular expression: {exc}"
                        ) from None
            stage = t.get("stage", "input")
            stages = (stage,) if isinstance(stage, str) else self.str_list(t, path, "stage")
            for j, one in enumerate(stages):
                if one not in GUARDRAIL_STAGES:
                    where = (*path, "stage") if isinstance(stage, str) else (*path, "stage", j)
                    raise self.fail(where, f"must be one of {', '.join(GUARDRAIL_STAGES)}, got {one!r}")
            if not stages:
                raise self.fail((*path, "stage"), "needs input, output or both")
            rules.append(
                GuardrailSettings(
                    name=name,
                    kind=kind,
                    patterns=patterns,
                    stages=tuple(dict.fromkeys(stages)),
                    action=self.choice(t, path, "action", GUARDRAIL_ACTIONS, "block") or "block",
                    models=self.str_list(t, path, "models") if "models" in t else ("*",),
                )
            )
        return tuple(rules)
