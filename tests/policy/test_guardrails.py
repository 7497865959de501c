"""The guardrails engine: each pattern, redaction, blocking, verdicts, model selection, streams."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgw.config import GuardrailSettings
from tfgw.errors import GuardrailError
from tfgw.formats.messages import MessageEvents
from tfgw.formats.responses import ResponseEvents
from tfgw.policy import texts
from tfgw.policy.guardrails import HOLD_BACK, Guardrails, Rule, RuleSet, Verdict


def rule(
    kind: str, *patterns: str, name: str = "r", action: str = "redact", stages=("input", "output")
) -> Rule:
    return Rule(GuardrailSettings(name=name, kind=kind, patterns=patterns, stages=stages, action=action))


def rules(*rs: Rule) -> RuleSet:
    return RuleSet(list(rs))


PII = rule("pii", "email", "phone", "credit_card", "iban", "api_key", name="no-pii")


def found(text: str, r: Rule = PII) -> list[tuple[str, str]]:
    return [(text[s:e], label) for s, e, label in r.find(text, 0)]


# --------------------------------------------------------------------------------------------------
# Patterns


def test_email() -> None:
    assert found("mail bob.smith+tag@mail.example.co.uk, or Ann@x.io.") == [
        ("bob.smith+tag@mail.example.co.uk", "email"),
        ("Ann@x.io", "email"),
    ]
    assert found("user@localhost, @handle, a@b.c, x@10.0.0.1, name@") == []


def test_phone() -> None:
    assert found("call +1 (415) 555-2671 or +44 20 7946 0958 or +14155552671") == [
        ("+1 (415) 555-2671", "phone"),
        ("+44 20 7946 0958", "phone"),
        ("+14155552671", "phone"),
    ]
    assert found("(555) 123-4567 / 555.123.4567 / 020 7946 0958 / 06 12 34 56 78") == [
        ("(555) 123-4567", "phone"),
        ("555.123.4567", "phone"),
        ("020 7946 0958", "phone"),
        ("06 12 34 56 78", "phone"),
    ]


def test_phone_near_misses() -> None:
    years_and_prices = "In 2024 it cost $1,299.99, then 45,000 EUR; on 2024-01-15 at 10:30; ID 123456789."
    assert found(years_and_prices) == []
    assert found("12.345.678 units, 192.168.100.1, +1 23, version 1.2.3") == []


def test_credit_card() -> None:
    assert found("visa 4111 1111 1111 1111, amex 3782-822463-10005, mc 5555555555554444") == [
        ("4111 1111 1111 1111", "credit_card"),
        ("3782-822463-10005", "credit_card"),
        ("5555555555554444", "credit_card"),
    ]
    assert found("card 4111 1111 1111 1111 5 is on file") == [("4111 1111 1111 1111", "credit_card")]


def test_credit_card_luhn_invalid() -> None:
    assert found("4111 1111 1111 1112 and 5555555555554445") == []


def test_iban() -> None:
    assert found("pay DE89 3704 0044 0532 0130 00 or GB29NWBK60161331926819.") == [
        ("DE89 3704 0044 0532 0130 00", "iban"),
        ("GB29NWBK60161331926819", "iban"),
    ]


def test_iban_bad_checksum() -> None:
    assert found("pay DE88 3704 0044 0532 0130 00 or GB29NWBK60161331926818") == []


KEYS = {
    "openai": "sk-abcdefghijklmnopqrstuvwx1234",
    "project": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx_12-34",
    "anthropic": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2" * 9,
    "github oauth": "gho_" + "Z9y8" * 9,
    "github pat": "github_pat_11ABCDEFG0123456789_abcdefghij",
    "slack": "xoxb-1234567890-abcdefghij",
    "google": "AIza" + "Sy-_" * 8 + "abc",
}


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
def test_api_key(key: str) -> None:
    assert found(f"my key: {key}.") == [(key, "api_key")]


def test_bearer_token_is_redacted_not_the_word() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc"
    assert PII.redact(f"Authorization: Bearer {token}") == "Authorization: Bearer [REDACTED:api_key]"


def test_api_key_near_misses() -> None:
    assert found("task-abcdefghijklmnopqrstuvwxyz, sk-short, AKIAshort, ghp_tooshort, Bearer short") == []


def test_keywords_whole_words_any_case() -> None:
    r = rule("keywords", "secret", "top secret", name="words")
    text = "Top Secret: the SECRET of secrets, not a secretary; secret."
    assert found(text, r) == [("Top Secret", "keyword"), ("SECRET", "keyword"), ("secret", "keyword")]
    assert (
        r.redact(text)
        == "[REDACTED:words]: the [REDACTED:words] of secrets, not a secretary; [REDACTED:words]."
    )
    assert found("Überschrift: GEHEIM und geheim", rule("keywords", "geheim")) == [
        ("GEHEIM", "keyword"),
        ("geheim", "keyword"),
    ]


def test_regex() -> None:
    r = rule("regex", r"ACME-\d{4}", r"(project|codename)\s+falcon", name="internal")
    text = "ticket ACME-1234 for Project falcon and codename falcon"
    assert found(text, r) == [("ACME-1234", "regex[0]"), ("codename falcon", "regex[1]")]
    assert r.redact(text) == "ticket [REDACTED:internal] for Project falcon and [REDACTED:internal]"
    assert rule("regex", r"x*").redact("abc") == "abc"  # empty matches are no matches


def test_redaction_marks() -> None:
    text = ", ".join(
        [
            "bob@example.com",
            "4111 1111 1111 1111",
            "+44 20 7946 0958",
            "DE89 3704 0044 0532 0130 00",
            "AKIAIOSFODNN7EXAMPLE",
        ]
    )
    assert PII.redact(text) == (
        "[REDACTED:email], [REDACTED:credit_card], [REDACTED:phone], [REDACTED:iban], [REDACTED:api_key]"
    )
    unchanged = "nothing here"
    assert PII.redact(unchanged) is unchanged


def test_only_the_rules_patterns() -> None:
    assert found("bob@example.com 4111 1111 1111 1111", rule("pii", "credit_card")) == [
        ("4111 1111 1111 1111", "credit_card")
    ]


# --------------------------------------------------------------------------------------------------
# Checks


SECRET = "bob@example.com"


def chat(*contents: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents]}


def test_check_input_redacts_a_copy() -> None:
    body = chat(f"write to {SECRET}", "and to ann@example.org")
    out, verdicts = rules(PII, rule("keywords", "secret", name="kw", action="block")).check_input(
        "chat", body
    )
    assert out == chat("write to [REDACTED:email]", "and to [REDACTED:email]")
    assert body == chat(f"write to {SECRET}", "and to ann@example.org")
    assert verdicts == [
        Verdict("no-pii", "input", "redact", "redacted", 2, ("email",)),
        Verdict("kw", "input", "block", "pass"),
    ]


def test_check_input_no_match_is_the_body_itself() -> None:
    body = chat("hello")
    out, verdicts = rules(PII).check_input("chat", body)
    assert out is body
    assert verdicts == [Verdict("no-pii", "input", "redact", "pass")]


def test_block_names_the_rule_and_never_the_text() -> None:
    rs = rules(rule("keywords", "nothing", name="first"), rule("pii", "email", name="no-pii", action="block"))
    with pytest.raises(GuardrailError) as caught:
        rs.check_input("chat", chat(f"mail {SECRET}"))
    exc = caught.value
    assert (exc.status, exc.type, exc.code) == (400, "invalid_request_error", "guardrail_blocked")
    assert exc.message == "Blocked by guardrail 'no-pii' (input: email)."
    assert orjson.loads(exc.body()) == {
        "error": {
            "message": "Blocked by guardrail 'no-pii' (input: email).",
            "type": "invalid_request_error",
            "param": None,
            "code": "guardrail_blocked",
        }
    }
    assert exc.verdicts == (
        Verdict("first", "input", "redact", "pass"),
        Verdict("no-pii", "input", "block", "blocked", 1, ("email",)),
    )
    for verdict in exc.verdicts:
        assert SECRET not in repr(verdict) and "bob" not in repr(verdict)


def test_a_redaction_runs_before_the_next_rule() -> None:
    rs = rules(rule("pii", "email", name="redact"), rule("regex", "@", name="no-at", action="block"))
    out, verdicts = rs.check_input("chat", chat(f"mail {SECRET}"))
    assert out == chat("mail [REDACTED:email]")
    assert [v.outcome for v in verdicts] == ["redacted", "pass"]


def test_check_output_in_each_format() -> None:
    rs = rules(PII)
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"at {SECRET}"}}]}
    assert rs.check_output("chat", answer)[0] == {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "at [REDACTED:email]"}}]
    }
    message = {"content": [{"type": "text", "text": SECRET}]}
    assert rs.check_output("messages", message) == (
        {"content": [{"type": "text", "text": "[REDACTED:email]"}]},
        [Verdict("no-pii", "output", "redact", "redacted", 1, ("email",))],
    )
    response = {"output": [{"type": "message", "content": [{"type": "output_text", "text": SECRET}]}]}
    assert rs.check_output("responses", response)[0] == {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "[REDACTED:email]"}]}]
    }


def test_stages() -> None:
    rs = rules(rule("pii", "email", stages=("input",)), rule("pii", "phone", name="p", stages=("output",)))
    assert [r.name for r in rs.input] == ["r"]
    assert [r.name for r in rs.output] == ["p"]
    assert rules(rule("pii", "email", stages=("input",))).stream("chat") is None
    assert rs.stream("embeddings") is None


def test_for_model() -> None:
    settings = [
        GuardrailSettings("all", "pii", ("email",)),
        GuardrailSettings("gpt", "keywords", ("x",), models=("gpt-*",)),
        GuardrailSettings("one", "keywords", ("y",), models=("claude-haiku",)),
    ]
    guardrails = Guardrails(settings)
    gpt = guardrails.for_model("gpt-4o")
    assert gpt is not None and [r.name for r in gpt.input] == ["all", "gpt"]
    assert guardrails.for_model("gpt-4o") is gpt  # memoised
    assert guardrails.for_model("gpt-4.1") is gpt  # the same rules: the same set
    haiku = guardrails.for_model("claude-haiku")
    assert haiku is not None and [r.name for r in haiku.input] == ["all", "one"]
    only = Guardrails([GuardrailSettings("gpt", "keywords", ("x",), models=("gpt-*",))])
    assert only.for_model("claude-haiku") is None
    assert Guardrails([]).for_model("m") is None


# --------------------------------------------------------------------------------------------------
# Streams


def chat_frames(pieces: list[str]) -> list[bytes]:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    return [
        chunk({"role": "assistant", "content": ""}),
        b": keep-alive\n\n",
        *(chunk({"content": p}) for p in pieces),
        chunk({}, "stop"),
        chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}),  # type: ignore[arg-type]
        b"data: [DONE]\n\n",
    ]


def messages_frames(pieces: list[str]) -> list[bytes]:
    events = MessageEvents("m")
    frames = [
        events.feed({"id": "msg_1", "model": "m", "choices": [{"index": 0, "delta": {"content": pieces[0]}}]})
    ]
    frames += [events.feed(p) for p in pieces[1:]]
    frames.append(b'event: ping\ndata: {"type":"ping"}\n\n')
    frames.append(events.finish())
    return one_each(frames)


def responses_frames(pieces: list[str]) -> list[bytes]:
    events = ResponseEvents({"model": "m"})
    frames = [
        events.feed({"id": "r1", "model": "m", "choices": [{"index": 0, "delta": {"content": pieces[0]}}]})
    ]
    frames += [events.feed(p) for p in pieces[1:]]
    frames.append(events.finish())
    return one_each(frames)


def one_each(frames: list[bytes]) -> list[bytes]:
    """One event a frame, as a provider sends them."""
    return [event + b"\n\n" for frame in frames for event in frame.split(b"\n\n") if event]


FRAMES = {"chat": chat_frames, "messages": messages_frames, "responses": responses_frames}


def events(out: bytes) -> list[tuple[str | None, Any]]:
    parsed = []
    for raw in out.split(b"\n\n")[:-1]:
        name, data = texts.sse_event(raw)
        parsed.append((name, None if data in (None, b"[DONE]") else orjson.loads(data)))
    return parsed


def streamed_text(fmt: str, out: bytes) -> str:
    """The text a client assembles from the deltas of `out`."""
    pieces = []
    for name, data in events(out):
        if fmt == "chat" and data and data["choices"]:
            pieces.append(data["choices"][0]["delta"].get("content") or "")
        elif fmt == "messages" and name == "content_block_delta":
            pieces.append(data["delta"]["text"])
        elif fmt == "responses" and name == "response.output_text.delta":
            pieces.append(data["delta"])
    return "".join(pieces)


def run(guard: Any, frames: list[bytes]) -> bytes:
    return b"".join(guard.feed(f) for f in frames)


SPLIT = ["Write to bo", "b@exa", "mple.c", "om today, thanks!"]  # the address across 3 boundaries


@pytest.mark.parametrize("fmt", FRAMES)
def test_stream_redacts_a_secret_split_across_chunks(fmt: str) -> None:
    guard = rules(PII).stream(fmt)
    assert guard is not None
    out = run(guard, FRAMES[fmt](SPLIT))
    assert streamed_text(fmt, out) == "Write to [REDACTED:email] today, thanks!"
    for secret in ("bob@", "@exa", "example.com", "b@e"):
        assert secret.encode() not in out
    assert guard.verdicts == [Verdict("no-pii", "output", "redact", "redacted", 1, ("email",))]


def test_stream_responses_done_events_carry_the_redacted_text() -> None:
    guard = rules(PII).stream("responses")
    assert guard is not None
    out = events(run(guard, responses_frames(SPLIT)))
    done = {name: data for name, data in out if name and name.endswith((".done", ".completed"))}
    expected = "Write to [REDACTED:email] today, thanks!"
    assert done["response.output_text.done"]["text"] == expected
    assert done["response.content_part.done"]["part"]["text"] == expected
    assert done["response.output_item.done"]["item"]["content"][0]["text"] == expected
    assert done["response.completed"]["response"]["output"][0]["content"][0]["text"] == expected
    numbers = [data["sequence_number"] for _, data in out]
    assert numbers == list(range(len(numbers)))  # every event kept its place


@pytest.mark.parametrize("fmt", FRAMES)
def test_stream_frames_without_text_pass_byte_for_byte(fmt: str) -> None:
    frames = FRAMES[fmt](["Hello", " there", " friend"])
    guard = rules(PII).stream(fmt)
    assert guard is not None
    outputs = [guard.feed(f) for f in frames]
    assert streamed_text(fmt, b"".join(outputs)) == "Hello there friend"
    texty = (
        b'"content":"H',
        b'"content":" ',
        b"text_delta",
        b"output_text.delta",
        b'"stop"',
        b"_stop",
        b".done",
    )
    kept = [f for f in frames if not any(t in f for t in texty) and b"completed" not in f]
    assert kept and all(f in outputs for f in kept)
    assert guard.verdicts == [Verdict("no-pii", "output", "redact", "pass")]


def test_stream_chat_held_text_goes_out_before_the_finish() -> None:
    guard = rules(PII).stream("chat")
    assert guard is not None
    out = events(run(guard, chat_frames(["see ", "you"])))
    contents = [
        (d["choices"][0]["delta"].get("content"), d["choices"][0]["finish_reason"]) for _, d in out[:-2] if d
    ]
    assert contents == [("", None), ("see ", None), ("", None), ("you", None), (None, "stop")]


def test_stream_several_frames_in_one_feed() -> None:
    guard = rules(PII).stream("chat")
    assert guard is not None
    out = guard.feed(b"".join(chat_frames(SPLIT)))
    assert streamed_text("chat", out) == "Write to [REDACTED:email] today, thanks!"


@pytest.mark.parametrize("fmt", FRAMES)
def test_stream_block_raises_before_the_secret_went_out(fmt: str) -> None:
    guard = rules(rule("pii", "email", name="no-pii", action="block")).stream(fmt)
    assert guard is not None
    sent = b""
    with pytest.raises(GuardrailError) as caught:
        for frame in FRAMES[fmt](SPLIT):
            sent += guard.feed(frame)
    assert caught.value.message == "Blocked by guardrail 'no-pii' (output: email)."
    assert caught.value.verdicts == (Verdict("no-pii", "output", "block", "blocked", 1, ("email",)),)
    assert b"bo" not in sent.replace(b"bool", b"")  # not even the start of the address
    assert "Write to" in streamed_text(fmt, sent)


def test_stream_hold_back_is_bounded() -> None:
    guard = rules(rule("regex", "never", name="rx")).stream("chat")
    assert guard is not None
    text = "x " * 100
    out = events(run(guard, chat_frames([text])))
    first = out[2][1]["choices"][0]["delta"]["content"]
    assert first == text[: len(text) - HOLD_BACK]
    assert (
        streamed_text("chat", run(rules(rule("regex", "never")).stream("chat"), chat_frames([text]))) == text
    )


def test_stream_long_secret_beyond_the_window_is_still_redacted_where_it_matched() -> None:
    key = "sk-" + "a" * 100
    guard = rules(PII).stream("messages")
    assert guard is not None
    out = streamed_text("messages", run(guard, messages_frames(["key: ", key[:50], key[50:], " ok"])))
    assert "[REDACTED:api_key]" in out and key not in out


def all_splits(text: str, parts: int) -> list[list[str]]:
    return [
        [text[a:b] for a, b in zip((0, *cuts), (*cuts, len(text)), strict=True)]
        for cuts in itertools.combinations(range(1, len(text)), parts - 1)
    ]


@pytest.mark.parametrize("fmt", FRAMES)
def test_stream_every_split_in_three_equals_the_one_shot_redaction(fmt: str) -> None:
    text = "hi bob@ex.io x"
    expected = PII.redact(text)
    for pieces in all_splits(text, 3):
        guard = rules(PII).stream(fmt)
        assert guard is not None
        assert streamed_text(fmt, run(guard, FRAMES[fmt](pieces))) == expected, pieces


@settings(max_examples=200, deadline=None)
@given(
    before=st.text(alphabet="ab .,@-+0123456789xyz\n", max_size=40),
    after=st.text(alphabet="ab .,@-+0123456789xyz\n", max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8),
    fmt=st.sampled_from(list(FRAMES)),
)
def test_stream_property_any_split_equals_the_one_shot_redaction(
    before: str, after: str, cuts: list[int], fmt: str
) -> None:
    text = f"{before} mail jane.doe@example.com {after}"
    points = sorted({c for c in cuts if 0 < c < len(text)})
    pieces = [text[a:b] for a, b in zip((0, *points), (*points, len(text)), strict=True)]
    guard = rules(PII, rule("keywords", "mail", name="kw")).stream(fmt)
    assert guard is not None
    one_shot = rules(PII, rule("keywords", "mail", name="kw")).check_output(
        "chat", {"choices": [{"message": {"content": text}}]}
    )[0]["choices"][0]["message"]["content"]
    assert streamed_text(fmt, run(guard, FRAMES[fmt](pieces))) == one_shot
