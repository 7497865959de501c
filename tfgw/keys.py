"""Gateway keys: made once, shown once, stored only as a hash.

A key is `tfgw-` followed by 43 URL-safe characters (256 random bits), so a plain SHA-256 is the
right hash: there is nothing to brute-force, and checking a request costs one hash and one dict
lookup.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["KEY_PREFIX", "generate_key", "hash_key"]

KEY_PREFIX = "tfgw-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
