"""The error tree.

Every error the gateway or the CLI raises on purpose is a `TfgwError`. Each class knows its HTTP
status, its OpenAI error `type` and `code`, and the CLI exit code, so one handler in the app and one
in the CLI turn any of them into the canonical output:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "GuardrailError",
    "ModelNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "TfgwError",
    "UpstreamStatusError",
]


class TfgwError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


class InputError(TfgwError):
    """Bad usage or bad input to a command (an option value, an unreadable file): exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A config file that cannot be used. The message names the file, the line and the key."""

    exit_code = 2

    def __init__(self, file: str, message: str, *, key: str | None = None, line: int | None = None):
        where = file if line is None else f"{file}:{line}"
        text = f"{where}: {message}" if key is None else f"{where}: {key}: {message}"
        super().__init__(text)
        self.file, self.key, self.line = file, key, line


class BadRequestError(TfgwError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(TfgwError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(TfgwError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class PayloadTooLargeError(TfgwError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(TfgwError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, limit: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: which of a key's limits refused: rpm, tpm, budget_usd_day or budget_usd_month
        self.limit = limit

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class ProviderError(TfgwError):
    """The provider could not give an answer (connection refused, 5xx, bad body) after fallbacks."""

    status = 502
    type = "api_error"
    code = "provider_error"

    #: whether another target (a fallback) may be tried: only true before any byte reached the client
    retryable: bool = True
    #: a stream's failure the client has seen already (the provider's own error event, passed on):
    #: the gateway adds no error event of its own
    relayed: bool = False


class ProviderTimeoutError(ProviderError):
    status = 504
    code = "provider_timeout"


class UpstreamStatusError(ProviderError):
    """The provider answered with an HTTP error status.

    A 4xx other than 429 is the caller's problem: it is passed on with the provider's own body
    (already scrubbed of our keys by the provider adapter), and no fallback is tried. 429 and 5xx
    are the provider's problem: a fallback is tried, and if none is left the client gets 429 (with
    the provider's Retry-After) or 502.
    """

    def __init__(self, provider: str, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.upstream_status = status
        self.upstream_body = body
        self.upstream_headers = headers or {}
        self.retryable = status == 429 or status >= 500
        super().__init__(f"provider {provider!r} returned HTTP {status}")

    @property
    def status(self) -> int:  # type: ignore[override]
        if self.upstream_status == 429:
            return 429
        return 502 if self.upstream_status >= 500 else self.upstream_status

    def headers(self) -> dict[str, str]:
        retry_after = self.upstream_headers.get("retry-after")
        return {"retry-after": retry_after} if retry_after and self.upstream_status == 429 else {}

    def body(self) -> bytes:
        if self.upstream_status < 500 and _is_openai_error(self.upstream_body):
            return self.upstream_body
        return super().body()


def _is_openai_error(body: bytes) -> bool:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict) and "message" in data["error"]


class BudgetExceededError(RateLimitError):
    """A key has spent its daily or monthly budget: refused until the budget resets (`retry_after`,
    seconds). The message names the key, the budget, the spend and the limit, and the reset time."""

    code = "budget_exceeded"


class GuardrailError(BadRequestError):
    """A `[[guardrails]]` rule with `action = "block"` matched. The message names the rule, the
    stage and the patterns that matched, never the matched text; `verdicts` are the guardrail
    verdicts up to and including this one, for the trace."""

    code = "guardrail_blocked"

    def __init__(self, rule: str, stage: str, patterns: tuple[str, ...], verdicts: tuple[Any, ...] = ()):
        super().__init__(f"Blocked by guardrail {rule!r} ({stage}: {', '.join(patterns)}).")
        self.rule, self.stage, self.patterns = rule, stage, patterns
        self.verdicts = verdicts
