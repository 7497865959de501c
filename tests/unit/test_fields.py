"""The gateway's checks of a body's types (`tfgw.gateway.fields`): a 400 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tfgw.errors import BadRequestError
from tfgw.gateway import fields


def refusal(body: dict[str, Any], table: Any, parts: Any) -> tuple[str, str | None]:
    with pytest.raises(BadRequestError) as caught:
        fields.check(body, table, parts)
    return caught.value.message, caught.value.param


@pytest.mark.parametrize("kind", [{"a": 1}, ["text"], 7])
def test_a_content_part_whose_type_is_not_a_string_is_named(kind: Any) -> None:
    """Found by the fuzz run: a part whose `type` was an object raised TypeError (a 500)."""
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": kind}]}]}
    assert refusal(body, fields.MESSAGES, fields.messages_parts) == (
        "'messages[0].content[1].type' must be a string",
        "messages[0].content[1].type",
    )
    assert refusal(body, fields.CHAT, fields.chat_parts) == (
        "'messages[0].content[1].type' must be a string",
        "messages[0].content[1].type",
    )


def test_parts_of_known_and_unknown_string_types_pass_as_before() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "audio"}, {}]}]
    }
    fields.check(body, fields.MESSAGES, fields.messages_parts)  # no refusal
