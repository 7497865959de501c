"""docs/attributes.md, the one table of every attribute tfgw writes, in step with the code:

- every key of `tfgw.tracing.semconv` has exactly one row, and the table has no other (but the
  `exception` event's attributes, which `tfgw.tracing.spans.Span.fail` writes);
- each row's convention follows from its key, agrees with `tfgw.tracing.conventions` (the export
  projection's classification), and its version is the one pinned for that convention;
- the schemaUrl the page names is `semconv.SCHEMA_URL`, and the encoder writes it on the
  resource and the scope.
"""

from __future__ import annotations

import importlib
import re

import pytest

from tests.test_docs import DOCS, semconv_keys
from tfgw.tracing import semconv
from tfgw.tracing.encode import Encoder
from tfgw.tracing.spans import RequestTrace

PAGE = DOCS / "attributes.md"
#: the `exception` span event's attributes: OTel's names, written as literals by Span.fail
EXCEPTION_EVENT = {"exception.type", "exception.message", "exception.stacktrace"}
OTEL_GENERAL = ("service.", "http.", "url.", "server.", "error.", "exception.")
GENAI_VERSION = semconv.SCHEMA_URL.rsplit("/", 1)[1]
PINNED = {
    "OpenInference": "0.1.32",
    "GenAI": GENAI_VERSION,
    "OTel general": GENAI_VERSION,
    "tfgw": "this release",
}
#: tfgw.tracing.conventions' names for the four
PROJECTION = {"openinference": "OpenInference", "gen_ai": "GenAI", "shared": "OTel general", "tfgw": "tfgw"}
SPANS = {"resource", "root", "auth", "guardrail", "model.resolve", "LLM", "stream", "failed"}
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", re.MULTILINE)


def table() -> list[tuple[str, str, str, str]]:
    text = PAGE.read_text(encoding="utf-8").split("\n## The table\n", 1)[1]
    return [tuple(cell.strip() for cell in m.groups()) for m in ROW.finditer(text)]  # type: ignore[misc]


def expected_convention(key: str) -> str:
    if key.startswith("tfgw."):
        return "tfgw"
    if key.startswith("gen_ai."):
        return "GenAI"
    if key.startswith(OTEL_GENERAL):
        return "OTel general"
    return "OpenInference"


def test_every_key_tfgw_writes_has_one_row_and_no_other_key_has_one() -> None:
    keys = [key for key, _, _, _ in table()]
    written = (semconv_keys() - {semconv.SCHEMA_URL}) | EXCEPTION_EVENT
    twice = sorted({k for k in keys if keys.count(k) > 1})
    assert (sorted(written - set(keys)), sorted(set(keys) - written), twice) == ([], [], [])


def test_each_row_names_its_convention_and_the_version_pinned_for_it() -> None:
    wrong = [
        (key, convention, version)
        for key, _, convention, version in table()
        if (convention, version) != (expected_convention(key), PINNED[expected_convention(key)])
    ]
    assert wrong == []


def test_each_row_names_spans_tfgw_has() -> None:
    unknown = []
    for key, spans, _, _ in table():
        # "root, LLM", "LLM (chat, streamed)", "LLM (chat): a prefix, …": the names before any note
        names = {name.strip() for name in re.sub(r"\([^)]*\)", "", spans.split(":")[0]).split(",")}
        if not names <= SPANS:
            unknown.append((key, spans))
    assert unknown == []


def test_the_conventions_agree_with_the_export_projection() -> None:
    try:
        conventions = importlib.import_module("tfgw.tracing.conventions")
    except ImportError:
        pytest.skip("tfgw.tracing.conventions is not there yet")
    found = {}
    for key, _, convention, _ in table():
        if key in (semconv.FIRST_TOKEN_EVENT, "exception"):
            projected = conventions.event_convention(key)
        else:
            projected = conventions.convention(key)
        if PROJECTION[projected] != convention:
            found[key] = (convention, PROJECTION[projected])
    assert found == {}


def test_the_pinned_versions_and_the_schema_url_are_the_code_s() -> None:
    text = PAGE.read_text(encoding="utf-8")
    pins = dict(re.findall(r"^\| (OpenInference|GenAI|OTel general|tfgw) \| ([^|]+) \|", text, re.MULTILINE))
    assert {name: version.strip() for name, version in pins.items()} == PINNED
    assert f"`{semconv.SCHEMA_URL}`" in text

    trace = RequestTrace("POST /v1/chat/completions", lambda t: None)
    trace.finish()
    [resource_spans] = Encoder("p").line(trace)["resourceSpans"]
    assert [resource_spans["schemaUrl"], *(ss["schemaUrl"] for ss in resource_spans["scopeSpans"])] == [
        semconv.SCHEMA_URL,
        semconv.SCHEMA_URL,
    ]
