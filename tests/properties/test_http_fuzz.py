"""schemathesis against the gateway's own OpenAPI document (tfgw/gateway/openapi.json), in process:
cases made from each operation's schema, valid and invalid ones, sent through the Quart app's test
client to a gateway on the built-in mock provider, with and without a valid gateway key; the
client's ASGI calls go through `Front`, as `tfgw serve` serves them (the traced routes on bare
ASGI, the rest the app's).

Properties: never a 5xx (the documented 503 of /metrics aside), nothing logged as an error (an
unexpected exception, a trace that could not be encoded), and every 4xx in the route's own error
shape with a message that says what was wrong. Headers an HTTP server refuses before the app (431,
bytes outside latin-1) never reach it and are not sent here; docs/http.md, "OpenAPI and fuzzing".

The short form runs in CI (`FUZZ_CASES` cases per operation and mode, over 2,000 in all); `-m
fuzz_long` runs ten times as many.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart.typing import TestClientProtocol as Client
from schemathesis import GenerationMode
from schemathesis.generation.case import Case

from tfgw.config import KeySettings, ServerSettings, TracingSettings, demo_settings
from tfgw.gateway import create_app
from tfgw.gateway.fast import Front
from tfgw.keys import hash_key

KEY = "tfgw-fuzz-key-0123456789abcdef"
DOCUMENT = Path(__file__).resolve().parents[2] / "tfgw" / "gateway" / "openapi.json"


def bounded(schema: Any) -> Any:
    """`schema` with small arrays, objects and strings where it sets no bound: cases as varied in
    shape, made ten times faster (a message list of 50 items finds nothing 2 items do not)."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {name: bounded(value) for name, value in schema.items()}
    kind = schema.get("type")
    if kind == "array":
        schema.setdefault("maxItems", 2)
    elif kind == "object" and "properties" not in schema:
        schema.setdefault("maxProperties", 2)
    elif kind == "string" and not {"enum", "pattern"} & schema.keys():
        schema.setdefault("maxLength", 16)
    return schema


SCHEMA = schemathesis.openapi.from_dict(bounded(orjson.loads(DOCUMENT.read_bytes())))
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}
#: cases per operation and generation mode in the short form: 5 operations with a body, valid and
#: invalid, x 190 = 1,900; the GET operations have a handful each; 150 paths and methods
FUZZ_CASES = 190
#: what a gateway key header may be: the valid key as either header, or what the case has
AUTH = ("bearer", "x-api-key", "as generated")
#: cases run, by operation and mode (what the summary at the end of the module counts)
RAN: dict[tuple[str, GenerationMode], int] = {}


@dataclass
class Gateway:
    loop: asyncio.AbstractEventLoop
    client: Client
    errors: list[logging.LogRecord]


class Served:
    """The app as `tfgw serve` serves it, for Quart's test client: its ASGI calls through `Front`
    (the traced routes on bare ASGI, the rest the app's), everything else the app's own."""

    def __init__(self, app: Any, front: Front) -> None:
        self._app, self._front = app, front

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._front(scope, receive, send)


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fuzz")
    config = replace(
        demo_settings(),
        keys=(KeySettings("fuzz", hash_key(KEY)),),
        server=ServerSettings(state_dir=str(root / "state")),
        tracing=TracingSettings(dir=str(root / "traces")),
    )
    app = create_app(config)
    loop = asyncio.new_event_loop()
    test_app = app.test_app()
    loop.run_until_complete(test_app.__aenter__())
    errors: list[logging.LogRecord] = []
    handler = _Collect(errors)
    logging.getLogger("tfgw").addHandler(handler)
    try:
        client = app.test_client_class(Served(app, Front(app, app.extensions["tfgw"])))  # type: ignore[arg-type]
        yield Gateway(loop, client, errors)
    finally:
        logging.getLogger("tfgw").removeHandler(handler)
        loop.run_until_complete(test_app.__aexit__(None, None, None))
        loop.close()


def _request(case: Case, auth: str) -> dict[str, Any]:
    """The test client's arguments for `case`: its headers (latin-1 text, as a server passes them
    on), its body encoded as its media type says, the gateway key as `auth` says."""
    headers = {name: value for name, value in (case.headers or {}).items() if _latin1(name, value)}
    if auth == "bearer":
        headers["authorization"] = f"Bearer {KEY}"
    elif auth == "x-api-key":
        headers["x-api-key"] = KEY
    kwargs: dict[str, Any] = {"headers": headers, "query_string": case.query or None}
    if not isinstance(case.body, type(schemathesis.core.NOT_SET)):
        body = case.body
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        headers.setdefault("content-type", case.media_type or "application/json")
        kwargs["data"] = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return kwargs


def _latin1(name: str, value: Any) -> bool:
    try:
        f"{name}{value}".encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not {"\r", "\n", "\0"} & set(f"{name}{value}") and name.isascii()


def check(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """The fuzzing's properties, for one answer."""
    where = f"{method} {path} -> {status}: {body[:300]!r}"
    if path == "/metrics" and status == 503:
        assert content_type.startswith("text/plain"), where
        return
    assert status < 500, where
    if status < 400:
        if content_type == "application/json":
            orjson.loads(body)
        return
    assert content_type == "application/json", where
    error = orjson.loads(body)
    if path.startswith("/v1/messages"):
        assert error.keys() == {"type", "error"} and error["type"] == "error", where
        assert error["error"].keys() == {"type", "message"}, where
    else:
        assert error.keys() == {"error"}, where
        assert error["error"].keys() == {"message", "type", "param", "code"}, where
    message = error["error"]["message"]
    assert isinstance(message, str) and len(message) > 10, where


def _cases(key: str, mode: GenerationMode) -> st.SearchStrategy[tuple[Case, str]]:
    return st.tuples(OPERATIONS[key].as_strategy(generation_mode=mode), st.sampled_from(AUTH))


def _params(scale: int) -> list[Any]:
    params = []
    for key, op in OPERATIONS.items():
        modes = [GenerationMode.POSITIVE]
        if op.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        params += [pytest.param(key, mode, scale * FUZZ_CASES, id=f"{key}-{mode.value}") for mode in modes]
    return params


def fuzz(gateway: Gateway, key: str, mode: GenerationMode, cases: int) -> None:
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_cases(key, mode))
    def one(example: tuple[Case, str]) -> None:
        RAN[key, mode] = RAN.get((key, mode), 0) + 1
        case, auth = example
        response = gateway.loop.run_until_complete(
            gateway.client.open(case.formatted_path, method=case.method, **_request(case, auth))
        )
        body = gateway.loop.run_until_complete(response.get_data())
        check(case.method, case.path, response.status_code, response.content_type or "", body)
        assert not gateway.errors, [record.getMessage() for record in gateway.errors]

    one()


@pytest.mark.parametrize(("key", "mode", "cases"), _params(1))
def test_fuzz(gateway: Gateway, key: str, mode: GenerationMode, cases: int) -> None:
    fuzz(gateway, key, mode, cases)


@pytest.mark.fuzz_long
@pytest.mark.parametrize(("key", "mode", "cases"), _params(10))
def test_fuzz_long(
    gateway: Gateway, key: str, mode: GenerationMode, cases: int, request: pytest.FixtureRequest
) -> None:
    if "fuzz_long" not in (request.config.getoption("markexpr") or "").replace("not fuzz_long", ""):
        pytest.skip("the long fuzz run: -m fuzz_long")
    fuzz(gateway, key, mode, cases)


paths = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"), max_size=30)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["/", "/v1/", "/v1/messages/", "/v1/chat/completions/"])
    .flatmap(lambda prefix: paths.map(lambda rest: prefix + rest))
    # a leading "//" is a URL's authority to the test client's own parser (it raised on "//::"
    # before sending anything): such a path never reached the gateway
    .filter(lambda path: not path.startswith("//")),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_any_path_and_method_is_answered_in_its_apis_shape(gateway: Gateway, path: str, method: str) -> None:
    RAN["paths", GenerationMode.POSITIVE] = RAN.get(("paths", GenerationMode.POSITIVE), 0) + 1
    response = gateway.loop.run_until_complete(gateway.client.open(path, method=method, data=b"{}"))
    body = gateway.loop.run_until_complete(response.get_data())
    if response.status_code < 400 or (path == "/metrics" and response.status_code == 503):
        return
    check(method, path, response.status_code, response.content_type or "", body)
    assert not gateway.errors, [record.getMessage() for record in gateway.errors]


def test_the_short_form_ran_over_2000_cases() -> None:
    """Last in the module (pytest keeps its order): what the short form's tests above ran."""
    if len(RAN) < len(_params(1)) + 1:
        pytest.skip("only part of the short form ran")
    assert sum(RAN.values()) >= 2000, RAN
