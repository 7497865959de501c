"""Who is calling: gateway keys checked by hash. Their limits and budgets are counted by every
worker together (`tfgw.policy.limits`, admitted in `tfgw.gateway.policy.admit`).

Only hashes are held, and a key presented is hashed before anything compares it: the look-up
compares SHA-256 digests, whose bytes a caller cannot choose, so how long it takes says nothing of
any configured key (the same reasoning as comparing with `hmac.compare_digest`, at one hash and
one dict look-up a request). The hash itself is not a key: sent as one, it is hashed again."""

from __future__ import annotations

from collections.abc import Iterable

from tfgw.config import KeySettings
from tfgw.errors import AuthenticationError
from tfgw.keys import hash_key

__all__ = ["KeyRing", "limited"]


def limited(key: KeySettings) -> bool:
    """Whether a key has a limit or a budget to count."""
    return bool(key.rpm or key.tpm) or key.budget_usd_day is not None or key.budget_usd_month is not None


class KeyRing:
    def __init__(self, keys: Iterable[KeySettings]) -> None:
        self.by_hash = {key.hash: key for key in keys}

    @property
    def enabled(self) -> bool:
        return bool(self.by_hash)

    def authenticate(self, authorization: str | None, *, api_key: str | None = None) -> KeySettings | None:
        """The caller's key (None when the gateway has no keys), from `Authorization: Bearer` or,
        as Anthropic's clients send it, `x-api-key` (`api_key`). Raises 401."""
        if not self.by_hash:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = (token if scheme.lower() == "bearer" else "").strip() or (api_key or "").strip()
        if not token:
            raise AuthenticationError(
                "You didn't provide an API key. Send your tfgw key as 'Authorization: Bearer <key>'"
                " (or 'x-api-key: <key>')."
            )
        key = self.by_hash.get(hash_key(token))
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        return key
