"""Guardrails: the `[[guardrails]]` rules, compiled once, run on requests, answers and streams.

A rule looks for PII (`kind = "pii"`: email, phone, credit_card, iban, api_key), for regular
expressions (`regex`, as written) or for keywords (`keywords`: case-insensitive, whole words), in
the client's texts (`stage = "input"`), the model's (`"output"`) or both, for the models its
`models` names or globs match. On a match it blocks (`GuardrailError`, a 400 naming the rule) or
redacts: each match becomes `[REDACTED:<name>]`, the PII pattern's name or, for regex and keywords,
the rule's. Every rule evaluated leaves a `Verdict`: its outcome, how many matches and which
patterns matched (`email`, `regex[0]`, `keyword`), never the matched text.

Card numbers are Luhn-checked and IBANs mod-97 checked, so a number of the right shape that is no
card or account is left alone; a phone number needs 9 to 15 digits, a leading `+` or separators, so
years, prices and bare numbers are not phones. Each pattern is found by its own expression behind a
literal test that costs a memchr (an `@` for an email, a head such as `sk-` for a key, a run of nine
digits for a phone, a card or an IBAN): one alternation of them all cannot use the regex engine's
prefix scan and was ten times slower on a 1 KB prompt without PII. Regex and keyword rules are one
alternation each.

Streams (`RuleSet.stream`, `OutputGuard`) are checked on the assembled text of each content block.
Text is held back only while it could still be the start of a match, at most `HOLD_BACK`
characters, and let out as soon as it cannot; what is held is let out, redacted, before the
block's end event. The consequence of the bound: a match longer than `HOLD_BACK` characters may
pass (partly) unredacted, and a regex rule, whose matches cannot be foreseen, holds back the last
`HOLD_BACK` characters of every block until its end. A block rule raises from `feed` before any of
the matched text went out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from tfgw.config import GuardrailSettings
from tfgw.errors import GuardrailError
from tfgw.policy import texts
from tfgw.tracing import semconv as sc
from tfgw.tracing.spans import Constant

__all__ = ["HOLD_BACK", "Guardrails", "OutputGuard", "Rule", "RuleSet", "Verdict"]

#: the most characters of a streamed block held back while they could start a match
HOLD_BACK = 64
#: model names remembered by `Guardrails.for_model` (past it the rules are matched each time)
MAX_MODELS = 4096

Span = tuple[int, int, str]  # start, end, the pattern's label
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule decided about one request, answer or stream."""

    rule: str
    stage: str  # input | output
    action: str  # block | redact
    outcome: str  # pass | blocked | redacted
    matches: int = 0
    patterns: tuple[str, ...] = ()  # what matched: "email", "regex[0]", "keyword"; never the text
    #: a passed verdict's span attributes, made once with the rule (every request shares them)
    attributes: Constant | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------------
# PII


def _luhn(span: str) -> bool:
    digits = [ord(c) - 48 for c in span if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def _mod97(span: str) -> bool:
    iban = span.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _phone_digits(span: str) -> bool:
    return 9 <= sum(c.isdigit() for c in span) <= 15


_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])")
#: API keys: (a literal the text must hold, the key's shape); the look-behind follows the head, so
#: the engine can scan for the head
_KEYS = (  # the first literal is one character: a memchr
    ("-", "sk-", re.compile(r"sk-(?<![\w-]sk-)[A-Za-z0-9_-]{20,}")),
    ("-", "xox", re.compile(r"xox(?<![\w-]xox)[bap]-[A-Za-z0-9-]{10,}")),
    ("_", "_", re.compile(r"g(?<!\wg)(?:h[po]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})")),
    (
        "A",
        "A",
        re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA[0-9A-Z]{16}(?![A-Za-z0-9])|Iza[0-9A-Za-z_-]{35}(?![\w-]))"),
    ),
    ("r", "earer", re.compile(r"(?<!\w)[Bb]earer\s+([A-Za-z0-9._~+/=-]{32,})")),  # the token is redacted
)
#: Each number's expression consumes its first character before its look-behinds (written to see
#: past it): a pattern that starts with a character set lets the engine scan for it, where leading
#: look-behinds made it try every position (2.5 times slower on a prompt with a nine-digit run).
_CARD = re.compile(
    r"[0-9](?<![0-9][0-9])(?<![0-9][ -][0-9])"
    r"(?:[0-9]{12,18}|[0-9]{3}(?:[ -][0-9]{4}){2}(?:[ -][0-9]{1,4}){1,2}|[0-9]{3}[ -][0-9]{6}[ -][0-9]{4,5})"
    r"(?![0-9])"
)
_PHONE = re.compile(
    r"[+(0-9](?<![\w+][+(0-9])(?<![0-9][ .-][+(0-9])(?:"
    r"(?<=\+)[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]){6,14}"  # +44 20 7946 0958
    r"|(?<=\()[0-9]{2,5}\)[ .-]?[0-9]{3,4}[ .-][0-9]{4}"  # (555) 123-4567
    r"|(?<=[0-9])[0-9]{1,4}[ .-][0-9]{3,4}[ .-][0-9]{4}"  # 555-123-4567, 020 7946 0958
    r"|(?<=0)[0-9](?:[ .-][0-9]{2}){4}"  # 06 12 34 56 78
    r")(?![0-9]|[ .-][0-9])"
)
_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
#: bytes → "0" for a digit, "x" for the rest, and the separators of a phone's or a card's digits
_SHAPE = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))
_SEPARATORS = b" -.()+/"
#: what could be the start of a match at the end of a streamed text, by pattern
_TAILS = {
    "email": r"[A-Za-z0-9._%+-]*+(?:@[A-Za-z0-9.-]*+)?",
    "api_key": r"[A-Za-z0-9_-]++|[Bb]earer(?:\s++[A-Za-z0-9._~+/=-]*+)?",
    "iban": r"[A-Z][A-Z0-9 ]*+",
    "credit_card": r"[0-9][0-9 -]*+",
    "phone": r"[+(0-9][0-9 ().+-]*+",
}


def _digit_runs(text: str) -> bytes:
    """The text's shape: "0" for each digit, "x" for anything else, its separators left out. The
    digits of a match of a number's pattern stand together in it (two C calls, where a regex
    scan of the text costs 40 us): nine for a phone or an IBAN, thirteen for a card."""
    return text.encode().translate(_SHAPE, _SEPARATORS)


def _checked(
    rx: re.Pattern[str], check: Callable[[str], bool], label: str, text: str, pos: int, end: int
) -> list[Span]:
    """The matches of `rx` in text[pos:end] that pass `check`; one that fails is tried again
    without its last group (a card followed by more digits)."""
    out = []
    m = rx.search(text, pos, end)
    while m is not None:
        found: re.Match[str] | None = m
        while found is not None and not check(found.group()):
            cut = max(found.group().rfind(" "), found.group().rfind("-"))
            found = rx.match(text, found.start(), found.start() + cut) if cut > 0 else None
        if found is not None:
            out.append((found.start(), found.end(), label))
        m = rx.search(text, m.end(), end)
    return out


_NINE = b"0" * 9  # the shortest run of digits a number's match has in `_digit_runs`
#: (pattern, expression, check, the run of digits its matches have in `_digit_runs`)
_NUMBERS = (
    ("iban", _IBAN, _mod97, _NINE),
    ("credit_card", _CARD, _luhn, b"0" * 13),
    ("phone", _PHONE, _phone_digits, _NINE),
)


class _Pii:
    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = frozenset(patterns)
        self.email, self.keys = "email" in self.patterns, "api_key" in self.patterns
        self.numbers = tuple(number for number in _NUMBERS if number[0] in self.patterns)
        self.tail = re.compile("(?:" + "|".join(_TAILS[p] for p in sorted(self.patterns)) + r")\Z")

    def find(self, text: str, pos: int = 0) -> list[Span]:
        spans: list[Span] = []
        if self.email and "@" in text:
            spans += self._emails(text, pos)
        if self.keys:
            for char, head, rx in _KEYS:
                if char in text and head in text:
                    spans += [(m.start(m.lastindex or 0), m.end(), "api_key") for m in rx.finditer(text, pos)]
        # `find`, not `in`: `bytes in bytes` raises and clears a TypeError first (tfgw.providers.http.CR)
        if self.numbers and (shape := _digit_runs(text)).find(_NINE) >= 0:
            for name, rx, check, run in self.numbers:
                if shape.find(run) >= 0:
                    spans += _checked(rx, check, name, text, pos, len(text))
        return _merge(spans) if len(spans) > 1 else spans

    @staticmethod
    def _emails(text: str, pos: int) -> list[Span]:
        out = []
        at = text.find("@", pos)
        while at >= 0:
            local = _LOCAL.search(text, max(pos, at - 64), at)
            domain = _DOMAIN.match(text, at + 1)
            if local is not None and domain is not None:
                out.append((local.start(), domain.end(), "email"))
                at = text.find("@", domain.end())
            else:
                at = text.find("@", at + 1)
        return out


def _merge(spans: list[Span]) -> list[Span]:
    """`spans` in order, without overlaps: the earliest (and then the longest) wins."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    out = [spans[0]]
    for span in spans[1:]:
        if span[0] >= out[-1][1]:
            out.append(span)
    return out


# --------------------------------------------------------------------------------------------------
# Regular expressions and keywords


class _Regex:
    """The patterns as written, each compiled on its own: in one alternation the engine cannot
    scan for a pattern's literal head, and two patterns took 52 us on 1 KB instead of 2 us."""

    tail: re.Pattern[str] | None = None  # what a regex could still match cannot be known

    def __init__(self, patterns: Sequence[str]) -> None:
        self.regexes = [(f"regex[{i}]", re.compile(p)) for i, p in enumerate(patterns)]

    def find(self, text: str, pos: int = 0) -> list[Span]:
        spans = [
            (m.start(), m.end(), label)
            for label, rx in self.regexes
            for m in rx.finditer(text, pos)
            if m.end() > m.start()
        ]
        return _merge(spans) if len(self.regexes) > 1 and spans else spans


class _Keywords:
    def __init__(self, words: Sequence[str]) -> None:
        ordered = sorted(set(words), key=len, reverse=True)
        self.folded = tuple(w.casefold() for w in ordered)
        alternation = "|".join(map(re.escape, ordered))
        self.rx = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
        prefixes = "|".join(_prefixes(w) for w in ordered)
        self.tail = re.compile(rf"(?:{prefixes})\Z", re.IGNORECASE)

    def find(self, text: str, pos: int = 0) -> list[Span]:
        if text.isascii():
            folded = text.casefold()
            for word in self.folded:
                if word in folded:
                    break
            else:
                return []
        return [(m.start(), m.end(), "keyword") for m in self.rx.finditer(text, pos)]


def _prefixes(word: str) -> str:
    """A regex for every non-empty prefix of `word`: w(?:o(?:r(?:d)?)?)?"""
    out = ""
    for c in reversed(word[1:]):
        out = f"(?:{re.escape(c)}{out})?"
    return re.escape(word[0]) + out


# --------------------------------------------------------------------------------------------------
# Rules


class Rule:
    """One `[[guardrails]]` rule, compiled: `find` its matches in a text, `redact` them."""

    def __init__(self, settings: GuardrailSettings) -> None:
        self.settings = settings
        self.name, self.action, self.stages = settings.name, settings.action, settings.stages
        kinds: dict[str, Callable[[Sequence[str]], _Pii | _Regex | _Keywords]]
        kinds = {"pii": _Pii, "regex": _Regex, "keywords": _Keywords}
        finder = kinds[settings.kind](settings.patterns)
        self.find: Callable[[str, int], list[Span]] = finder.find
        self.tail: re.Pattern[str] | None = finder.tail
        if settings.kind == "pii":
            self.labels = tuple(settings.patterns)
        elif settings.kind == "regex":
            self.labels = tuple(f"regex[{i}]" for i in range(len(settings.patterns)))
        else:
            self.labels = ("keyword",)
        mark = (lambda label: label) if settings.kind == "pii" else (lambda label: settings.name)
        self.marks = {label: f"[REDACTED:{mark(label)}]" for label in self.labels}
        self.passed = {stage: self._passed(stage) for stage in ("input", "output")}

    def _passed(self, stage: str) -> Verdict:
        attributes = Constant(
            {
                sc.OI_SPAN_KIND: "GUARDRAIL",
                sc.GUARDRAIL_NAME: self.name,
                sc.GUARDRAIL_STAGE: stage,
                sc.GUARDRAIL_ACTION: self.action,
                sc.GUARDRAIL_OUTCOME: "pass",
                sc.GUARDRAIL_MATCHES: 0,
            }
        )
        return Verdict(self.name, stage, self.action, "pass", attributes=attributes)

    def scan(self, found: Iterable[str]) -> tuple[int, tuple[str, ...]]:
        """How many matches in `found` texts, and the labels of those that matched (rule order)."""
        count, labels = 0, set()
        for text in found:
            for _, _, label in self.find(text, 0):
                count += 1
                labels.add(label)
        return count, tuple(label for label in self.labels if label in labels)

    def redact(self, text: str) -> str:
        """`text` with each match replaced; `text` itself when nothing matched."""
        spans = self.find(text, 0)
        return self.replace(text, spans, 0, len(text)) if spans else text

    def replace(self, text: str, spans: Sequence[Span], start: int, end: int) -> str:
        """text[start:end] with each of `spans` (all inside it) replaced by its mark."""
        parts: list[str] = []
        at = start
        for s, e, label in spans:
            parts += (text[at:s], self.marks[label])
            at = e
        parts.append(text[at:end])
        return "".join(parts)

    def verdict(self, stage: str, outcome: str, count: int, labels: Iterable[str]) -> Verdict:
        if outcome == "pass":
            return self.passed[stage]
        return Verdict(self.name, stage, self.action, outcome, count, tuple(labels))

    def blocked(
        self, stage: str, count: int, labels: tuple[str, ...], verdicts: list[Verdict]
    ) -> GuardrailError:
        verdicts.append(self.verdict(stage, "blocked", count, labels))
        return GuardrailError(self.name, stage, labels, tuple(verdicts))

    def could_start(self, text: str, floor: int) -> int:
        """The first index ≥ `floor` from which the end of `text` could be the start of a match."""
        if self.tail is None:
            return floor
        m = self.tail.search(text, floor)
        return len(text) if m is None else m.start()


class RuleSet:
    """The rules of one model: `input` and `output`, each in config order."""

    __slots__ = ("_passed_input", "input", "output")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.input = tuple(r for r in rules if "input" in r.stages)
        self.output = tuple(r for r in rules if "output" in r.stages)
        self._passed_input = tuple(rule.passed["input"] for rule in self.input)

    def check_input(self, fmt: str, body: Json, plain: list[str] | None = None) -> tuple[Json, list[Verdict]]:
        """The request body (redacted, or `body` itself when nothing matched) and the verdicts;
        `GuardrailError` on the first blocking match, with the verdicts so far. `plain`: the body's
        `texts.plain_texts`, when read already."""
        rules = self.input
        if plain is None:
            plain = texts.plain_texts(fmt, body)
        if plain is not None:  # the common case, read cheaply: nothing matches
            for text in plain:
                for rule in rules:
                    if rule.find(text, 0):
                        return self._check_input(fmt, body)
            return body, list(self._passed_input)
        return self._check_input(fmt, body)

    def _check_input(self, fmt: str, body: Json) -> tuple[Json, list[Verdict]]:
        return _check(
            self.input,
            "input",
            body,
            lambda b: texts.request_texts(fmt, b),
            lambda b, f: texts.rewrite_request(fmt, b, f),
        )

    def check_output(self, fmt: str, answer: Json) -> tuple[Json, list[Verdict]]:
        """The answer (redacted, or `answer` itself) and the verdicts, as `check_input` does."""
        return _check(
            self.output,
            "output",
            answer,
            lambda b: texts.answer_texts(fmt, b),
            lambda b, f: texts.rewrite_answer(fmt, b, f),
        )

    def stream(self, fmt: str) -> OutputGuard | None:
        """A guard for a streamed answer in `fmt`, or None when no rule reads answers."""
        if not self.output or fmt not in texts.STREAM_FORMATS:
            return None
        return OutputGuard(fmt, self.output)


def _check(
    rules: Sequence[Rule],
    stage: str,
    body: Json,
    read: Callable[[Json], Iterable[str]],
    rewrite: Callable[[Json, Callable[[str], str]], Json],
) -> tuple[Json, list[Verdict]]:
    matched = False

    def look(text: str) -> str:  # the common case, nothing matches: one walk, every rule
        nonlocal matched
        matched = matched or any(rule.find(text, 0) for rule in rules)
        return text

    rewrite(body, look)
    if not matched:
        return body, [rule.passed[stage] for rule in rules]
    verdicts: list[Verdict] = []
    found: list[str] | None = None
    for rule in rules:
        if found is None:
            found = list(read(body))
        count, labels = rule.scan(found)
        if not count:
            verdicts.append(rule.passed[stage])
        elif rule.action == "block":
            raise rule.blocked(stage, count, labels, verdicts)
        else:
            body, found = rewrite(body, rule.redact), None
            verdicts.append(rule.verdict(stage, "redacted", count, labels))
    return body, verdicts


class Guardrails:
    """Every rule of the config, compiled once; `for_model` picks those of a model."""

    def __init__(self, rules: Sequence[GuardrailSettings]) -> None:
        self.rules = tuple(Rule(settings) for settings in rules)
        self._by_model: dict[str, RuleSet | None] = {}
        self._sets: dict[tuple[int, ...], RuleSet] = {}

    def for_model(self, name: str) -> RuleSet | None:
        """The rules whose `models` match `name` (a name or an fnmatch glob), or None."""
        try:
            return self._by_model[name]
        except KeyError:
            pass
        chosen = tuple(
            i for i, r in enumerate(self.rules) if any(fnmatchcase(name, g) for g in r.settings.models)
        )
        found = None
        if chosen:
            found = self._sets.get(chosen) or self._sets.setdefault(
                chosen, RuleSet([self.rules[i] for i in chosen])
            )
        if len(self._by_model) < MAX_MODELS:
            self._by_model[name] = found
        return found


# --------------------------------------------------------------------------------------------------
# Streams


class _Block:
    """One streamed content block: the end of the text let out (what look-behinds see), the text
    held back, and (named-event APIs) the held text event that carries what is let out next."""

    __slots__ = ("carrier", "ctx", "held", "out")

    def __init__(self) -> None:
        self.ctx = self.held = self.out = ""
        self.carrier: texts.Frame | None = None


class OutputGuard(texts.StreamTexts):
    """The output rules run on a streamed answer, frame by frame (the module docstring says how).

    `feed` takes whole SSE events and returns them rewritten: text deltas with their text redacted
    (held text makes a delta go out shorter, or later), frames without text byte for byte. In
    `chat`, held text goes out in a chunk of its own before the choice's finishing chunk or
    `[DONE]`; in `messages` and `responses` a text event whose text is partly held is itself held
    and goes out with the next text of its block (or before the block's end), so every event keeps
    its place and its `sequence_number`. `verdicts`: one per rule, once the stream ended."""

    def __init__(self, fmt: str, rules: Sequence[Rule]) -> None:
        super().__init__(fmt)
        self.rules = tuple(rules)
        self._found: dict[str, tuple[list[int], set[str]]] = {r.name: ([0], set()) for r in self.rules}
        self._blocked: str | None = None

    @property
    def verdicts(self) -> list[Verdict]:
        out = []
        for rule in self.rules:
            (count, *_), labels = self._found[rule.name]
            outcome = "blocked" if rule.name == self._blocked else "redacted" if count else "pass"
            out.append(rule.verdict("output", outcome, count, [x for x in rule.labels if x in labels]))
        return out

    # ----------------------------------------------------------------------------------------------
    # Text: held back, let out, redacted

    def _release(self, block: _Block, text: str, final: bool) -> str:
        """What of the block's text can go out now that `text` came (all of it when `final`)."""
        whole = block.ctx + block.held + text
        base = len(block.ctx)
        cut = len(whole) if final else self._cut(whole, base)
        out = self._let_out(whole, base, cut) if cut > base else ""
        block.ctx, block.held = whole[max(0, cut - HOLD_BACK) : cut], whole[cut:]
        return out

    def _cut(self, whole: str, base: int) -> int:
        """Where the text that goes out ends: before whatever could still start a match (within
        the last HOLD_BACK characters), and never inside a match."""
        end = len(whole)
        floor = max(base, end - HOLD_BACK)
        cut = min(rule.could_start(whole, floor) for rule in self.rules)
        for _ in range(4):
            moved = cut
            for rule in self.rules if cut < end else ():
                for s, e, _ in rule.find(whole, base):
                    if s < moved < e:
                        moved = s if s >= floor else e  # a match begun before the window goes whole
            if moved == cut:
                break
            cut = moved
        return cut

    def _let_out(self, whole: str, base: int, cut: int) -> str:
        for rule in self.rules:
            spans = [span for span in rule.find(whole, base) if span[1] <= cut]
            if not spans:
                continue
            count, labels = self._found[rule.name]
            count[0] += len(spans)
            labels.update(label for _, _, label in spans)
            if rule.action == "block":
                raise self._stop(rule)
            piece = rule.replace(whole, spans, base, cut)
            whole, cut = whole[:base] + piece + whole[cut:], base + len(piece)
        return whole[base:cut]

    def _whole(self, text: str) -> str:
        """A text event carries again (a `.done` event, the completed response), redacted."""
        for rule in self.rules:
            if rule.action == "redact":
                text = rule.redact(text)
            elif spans := rule.find(text, 0):
                self._found[rule.name][1].update(label for _, _, label in spans)
                raise self._stop(rule)
        return text

    def _stop(self, rule: Rule) -> GuardrailError:
        self._blocked = rule.name
        verdicts = self.verdicts[: self.rules.index(rule) + 1]
        return GuardrailError(rule.name, "output", verdicts[-1].patterns, tuple(verdicts))

    def _text(self, key: Any, text: str, final: bool) -> str:
        block = self._blocks.setdefault(key, _Block())
        if final:
            del self._blocks[key]
        return self._release(block, text, final)

    def _carry(self, key: Any, frame: texts.Frame) -> bytes:
        """A text event of a named-event API: it goes out now with what can, or is held with it."""
        block = self._blocks.setdefault(key, _Block())
        released = self._release(block, frame.text, False)
        out = b""
        if block.carrier is not None:
            out, released = block.carrier.bytes(block.out + released), ""
        block.carrier, block.out = frame, released
        if not block.held:
            out += frame.bytes(released)
            block.carrier, block.out = None, ""
        return out

    def _close(self, keys: Iterable[Any]) -> bytes:
        """The held text of these blocks, let out (in their held text events) as they end."""
        out = []
        for key in list(keys):
            block = self._blocks.pop(key)
            released = self._release(block, "", True)
            if block.carrier is not None:
                out.append(block.carrier.bytes(block.out + released))
        return b"".join(out)
