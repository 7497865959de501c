"""What the config loader's property (tests/properties/test_parsers.py) found: keys whose line was
not found, so the error named no line. Each error now names file, line and key."""

from __future__ import annotations

import pytest

from tfgw.config import parse
from tfgw.errors import ConfigError

SERVER_KEYS = (
    "host, port, workers, max_body_bytes, body_timeout, graceful_timeout, state_dir, cache_max_mb, reload"
)
ROOT_KEYS = "server, keys, providers, models, guardrails, routing, tracing, otel, bus"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # a key written with an escape is the character it stands for
        (
            '[server]\nport = 1\n"\\u0041b" = 1\n',
            f"tfgw.toml:3: server.Ab: unknown key (allowed: {SERVER_KEYS})",
        ),
        ('[server]\n"a\\"b" = 1\n', f'tfgw.toml:2: server.a"b: unknown key (allowed: {SERVER_KEYS})'),
        # TOML ends lines at LF only: U+0085 and U+2028 in a comment or string end none
        (
            "[server]\n# a \x85 b \u2028 c\nnope = 1\n",
            f"tfgw.toml:3: server.nope: unknown key (allowed: {SERVER_KEYS})",
        ),
        # `[keys.x]` writes `keys` on its line
        ('[server]\n[keys.""]\n', "tfgw.toml:2: keys: expected an array of tables ([[keys]])"),
        # a header's quoted key may hold `]`
        ('\n["]"]\n', f"tfgw.toml:2: ]: unknown key (allowed: {ROOT_KEYS})"),
    ],
)
def test_an_unusual_key_is_named_with_its_line(source: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(source, "tfgw.toml")
    assert str(caught.value) == message
