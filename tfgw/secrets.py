"""Masking and scrubbing of secrets: the one place that decides how a secret is shown."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["mask", "scrub"]


def mask(secret: str | None) -> str:
    """`sk-proj-abcdef…wxyz` → `sk-…wxyz`: enough to recognise a key, never enough to use it."""
    if not secret:
        return ""
    if len(secret) < 12:
        return "…"
    prefix = secret.split("-", 1)[0] + "-" if "-" in secret[:8] else ""
    return f"{prefix}…{secret[-4:]}"


def scrub(data: bytes, secrets: Iterable[str | None]) -> bytes:
    """Replace every occurrence of each secret in `data` with its masked form."""
    for secret in secrets:
        if secret and len(secret) >= 8 and secret.encode() in data:
            data = data.replace(secret.encode(), mask(secret).encode())
    return data
