"""hypothesis properties of what parses outside input: the config loader, the trace-file reader,
`traceparent`, `x-tfgw-metadata` and the gateway key headers. Each answers with its result or its
own error, never another exception."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfgw.config import KeySettings, Settings, demo_settings, parse
from tfgw.errors import AuthenticationError, BadRequestError, ConfigError
from tfgw.gateway import create_app
from tfgw.gateway.auth import KeyRing
from tfgw.gateway.stages import _metadata
from tfgw.keys import hash_key
from tfgw.tracing.reader import file_traces, line_traces
from tfgw.tracing.spans import parse_traceparent

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = tomllib.loads((REPO / "configs" / "tfgw.example.toml").read_text())
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = "tfgw-property-key-0123456789"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
toml_values = st.recursive(
    scalars.filter(lambda value: value is not None),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


# -- the config loader ------------------------------------------------------------------------


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into the example config (tables, arrays of tables and their entries)."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += _paths(value, (*prefix, index))
    return paths


PATHS = _paths(EXAMPLE)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """The example config with a few of its values replaced, removed or added to, as TOML text."""
    data = orjson.loads(orjson.dumps(EXAMPLE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            action = draw(st.sampled_from(["replace", "remove", "add"]))
            last = path[-1]
            if action == "add" and isinstance(parent, dict):  # a key of any name, even an odd one
                parent[draw(st.text(min_size=1, max_size=8))] = draw(toml_values)
            elif action == "remove" and isinstance(parent, dict):
                parent.pop(last, None)
            elif (isinstance(parent, dict) and isinstance(last, str)) or (
                isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            ):
                parent[last] = draw(toml_values)
    return tomli_w.dumps(data)


def _loads_or_names_where(text: str) -> None:
    try:
        result = parse(text, "tfgw.toml", resolve_secrets=False)
    except ConfigError as exc:
        assert str(exc).startswith("tfgw.toml"), str(exc)
        if not str(exc).startswith("tfgw.toml: invalid TOML"):
            assert exc.line is not None and exc.key is not None, str(exc)
            assert str(exc).startswith(f"tfgw.toml:{exc.line}: {exc.key}: "), str(exc)
    else:
        assert isinstance(result, Settings)


@settings(FAST, max_examples=400)
@given(mutated_configs())
def test_a_config_parses_or_its_error_names_file_line_and_key(text: str) -> None:
    _loads_or_names_where(text)


@FAST
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        parse(text, "tfgw.toml", resolve_secrets=False)
    except ConfigError as exc:
        assert str(exc).startswith("tfgw.toml"), str(exc)


# -- the trace-file reader --------------------------------------------------------------------


def _otlp_lines() -> st.SearchStrategy[bytes]:
    span = st.fixed_dictionaries(
        {"traceId": json_values | st.text("0123456789abcdef", min_size=32, max_size=32)},
        optional={"spanId": json_values, "name": json_values, "attributes": json_values},
    )
    scope = st.fixed_dictionaries({"spans": st.lists(span, max_size=2) | json_values})
    resource = st.fixed_dictionaries({"scopeSpans": st.lists(scope, max_size=2) | json_values})
    line = st.fixed_dictionaries({"resourceSpans": st.lists(resource, max_size=2) | json_values})
    return line.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=200)


@settings(FAST, max_examples=300)
@given(st.lists(_otlp_lines(), max_size=4), st.booleans())
def test_any_bytes_read_as_traces_or_warnings(tmp_path: Path, lines: list[bytes], torn: bool) -> None:
    warnings: list[str] = []
    raw = b"\n".join(lines) + (b"" if torn else b"\n")
    for name in ("tfgw-20261201-000000-1-0001.jsonl", "other.jsonl"):
        path = tmp_path / name
        path.write_bytes(raw)
        assert all(trace.file == path for trace in file_traces(path, warn=warnings.append))
    for number, line in enumerate(lines, 1):
        line_traces(tmp_path / "x.jsonl", number, line, warnings.append)
    assert all(isinstance(warning, str) for warning in warnings)


# -- traceparent -------------------------------------------------------------------------------

HEX = "0123456789abcdef"
traceparents = st.builds(
    "{}-{}-{}-{}".format,
    st.text(HEX, min_size=2, max_size=2),
    st.text(HEX, min_size=32, max_size=32),
    st.text(HEX, min_size=16, max_size=16),
    st.text(HEX, min_size=2, max_size=2),
)


@FAST
@given(st.text() | traceparents | traceparents.map(str.upper) | traceparents.map(lambda v: f" {v}-x"))
def test_traceparent_is_none_or_a_valid_pair(value: str) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, span_id = parsed
        assert re.fullmatch("[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
        assert re.fullmatch("[0-9a-f]{16}", span_id) and span_id != "0" * 16
        assert value.strip().lower()[3:52] == f"{trace_id}-{span_id}"


# -- x-tfgw-metadata ----------------------------------------------------------------------------

header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)


@FAST
@given(header_values | json_values.map(lambda v: json.dumps(v)))
def test_metadata_is_a_json_object_or_400(value: str) -> None:
    try:
        recorded = _metadata(value)
    except BadRequestError as exc:
        assert (exc.status, exc.param) == (400, "x-tfgw-metadata")
    else:
        assert isinstance(orjson.loads(recorded), dict)


def test_metadata_through_the_routes_is_recorded_or_400_in_their_shape() -> None:
    loop = asyncio.new_event_loop()
    test_app = create_app(demo_settings()).test_app()
    loop.run_until_complete(test_app.__aenter__())
    client = test_app.test_client()

    @settings(FAST, max_examples=60)
    @given(header_values | json_values.map(lambda v: json.dumps(v)), st.sampled_from(ROUTES))
    def one(value: str, route: tuple[str, dict[str, Any]]) -> None:
        path, body = route
        answer = loop.run_until_complete(client.post(path, json=body, headers={"x-tfgw-metadata": value}))
        data = loop.run_until_complete(answer.get_json())
        assert answer.status_code in {200, 400}, (path, value, data)
        if answer.status_code == 400:
            assert data == REFUSED[path], (path, value, data)
        else:
            assert answer.headers["x-tfgw-trace-id"]

    try:
        one()
    finally:
        loop.run_until_complete(test_app.__aexit__(None, None, None))
        loop.close()


ROUTES = [
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
]
REFUSED = {
    "/v1/chat/completions": {
        "error": {
            "message": "The x-tfgw-metadata header must be a JSON object.",
            "type": "invalid_request_error",
            "param": "x-tfgw-metadata",
            "code": None,
        }
    },
    "/v1/messages": {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "The x-tfgw-metadata header must be a JSON object.",
        },
    },
}


# -- Authorization and x-api-key --------------------------------------------------------------


@FAST
@given(
    st.none() | header_values | st.builds("Bearer {}".format, header_values) | st.just(f"bearer  {KEY} "),
    st.none() | header_values | st.just(KEY),
)
@pytest.mark.parametrize("keyed", [True, False])
def test_a_key_header_is_a_key_none_or_401(
    keyed: bool, authorization: str | None, api_key: str | None
) -> None:
    key = KeySettings("k", hash_key(KEY))
    ring = KeyRing([key] if keyed else [])
    try:
        found = ring.authenticate(authorization, api_key=api_key)
    except AuthenticationError as exc:
        assert keyed and exc.status == 401
    else:
        assert found == (key if keyed else None)
