"""docs/ is the contract in the project's own words: these tests keep it in step with the code.

- every key the config loader accepts is documented once, in its table's section of docs/config.md
  (the keys are read from the loader's own `table(...)` calls, so a new key fails here until it is
  documented);
- every attribute key of `tfgw.tracing.semconv` is documented once in docs/spans.md;
- the repository stands on its own: no file points outside it to a design document;
- every relative link and every `tfgw/…` path the docs name exists.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfgw.tracing import semconv

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CONFIG_PY = REPO / "tfgw" / "config.py"

#: the loader's methods that check a table, and the heading of the docs/config.md section for it
SECTIONS = {
    "server": "`[server]`",
    "keys": "`[[keys]]`",
    "providers": "`[providers.NAME]`",
    "models": "`[[models]]`",
    "targets": "`[[models]]`",  # the `targets = [{...}]` of a model
    "cache": "`[[models]]`",  # the `cache = {...}` of a model
    "guardrails": "`[[guardrails]]`",
    "routing": "`[routing]`",
    "tracing": "`[tracing]`",
    "otel": "`[otel.targets.NAME]`",
    "bus": "`[bus]`",
    "_tls": "`[bus]`",  # the `tls = {...}` of the bus
}


# -- config ----------------------------------------------------------------------------------------


def _allowed_keys(call: ast.Call, local: dict[str, ast.expr]) -> tuple[str, ...] | None:
    """The key tuple of one `self.table(value, path, allowed)` call; None for a named table, whose
    keys are the user's (`tuple(value) if isinstance(value, dict) else ()`)."""
    node = call.args[2] if len(call.args) > 2 else None
    if isinstance(node, ast.Name):
        node = local.get(node.id)
    if isinstance(node, ast.IfExp):
        return None
    values = (
        [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if isinstance(node, ast.Tuple)
        else None
    )
    if node is None or values is None or len(values) != len(node.elts):
        line = f"tfgw/config.py:{call.lineno}"
        raise AssertionError(f"{line}: cannot read the allowed keys of this table() call")
    return tuple(values)


def loader_keys() -> dict[str, set[str]]:
    """{loader method: keys its `table(...)` calls allow}, read from tfgw/config.py and the
    sections' checks it mixes in: tfgw/config_policy.py (governance), tfgw/config_otel.py (export),
    tfgw/config_bus.py (the bus)."""
    methods = []
    mixins = (
        ("config_policy.py", "PolicyChecks"),
        ("config_otel.py", "OtelChecks"),
        ("config_bus.py", "BusChecks"),
    )
    for path, name in ((CONFIG_PY, "_Validator"), *((CONFIG_PY.with_name(f), c) for f, c in mixins)):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        methods += next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name).body
    found: dict[str, set[str]] = {}
    for method in methods:
        if not isinstance(method, ast.FunctionDef):
            continue
        local = {
            t.id: n.value
            for n in ast.walk(method)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "table"
                and method.name != "table"
            ):
                keys = _allowed_keys(node, local)
                if keys is not None:
                    found.setdefault(method.name, set()).update(keys)
    return found


def section(text: str, heading: str) -> str:
    """The text of the `## ...` section whose heading holds `heading`, up to the next one."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    matches = [p for p in parts[1:] if heading in p.splitlines()[0]]
    assert len(matches) == 1, f"docs/config.md: expected one section headed with {heading}"
    return matches[0]


def rows(text: str, key: str) -> int:
    """How many table rows document `key` (its name, in backticks, in the first column)."""
    return len(re.findall(rf"^\| `{re.escape(key)}` \|", text, flags=re.MULTILINE))


def test_the_loader_is_read_whole():
    keys = loader_keys()
    assert set(keys) == {"settings", *SECTIONS}, (
        "a loader method checks a table this test does not know: add its docs/config.md section to SECTIONS"
    )
    assert {"host", "port"} <= keys["server"]
    assert {"kind", "endpoint", "api_key"} <= keys["otel"]


def test_every_config_table_has_its_section():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for table in sorted(loader_keys()["settings"]):
        assert any(f"`[{table}" in h or f"`[[{table}" in h for h in headings), table


@pytest.mark.parametrize("method", sorted(SECTIONS))
def test_every_config_key_is_documented_once_in_its_section(method: str):
    text = section((DOCS / "config.md").read_text(encoding="utf-8"), SECTIONS[method])
    keys = loader_keys()[method]
    missing = sorted(k for k in keys if rows(text, k) == 0)
    twice = sorted(k for k in keys if rows(text, k) > 1)
    assert (missing, twice) == ([], []), f"section {SECTIONS[method]}: missing {missing}, twice {twice}"


# -- spans -----------------------------------------------------------------------------------------


def semconv_keys() -> set[str]:
    """Every key constant of tfgw.tracing.semconv (the values of its mappings too)."""
    keys: set[str] = set()
    for name, value in vars(semconv).items():
        if not name.isupper():
            continue
        if isinstance(value, str):
            keys.add(value)
        elif isinstance(value, dict):
            keys.update(v for v in value.values() if isinstance(v, str))
    return keys


def test_semconv_has_keys():
    keys = semconv_keys()
    assert {"openinference.span.kind", "gen_ai.request.temperature", "tfgw.overhead_ms"} <= keys


def test_every_span_attribute_is_documented_once():
    text = (DOCS / "spans.md").read_text(encoding="utf-8")
    keys = semconv_keys()
    missing = sorted(k for k in keys if rows(text, k) == 0)
    twice = sorted(k for k in keys if rows(text, k) > 1)
    assert (missing, twice) == ([], [])


# -- the repository stands on its own --------------------------------------------------------------

#: spelled in parts, so that this file does not match itself
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")
CHECKED = ("tfgw", "tests", "bench", "configs", "docs", "README.md")


def repository_files() -> Iterator[Path]:
    for name in CHECKED:
        root = REPO / name
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def test_no_file_points_outside_the_repository():
    found = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # not text: nothing to point anywhere
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if any(word in line for word in FORBIDDEN):
                found.append(f"{path.relative_to(REPO)}:{number}")
    assert found == []


# -- the docs' own references ----------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE_PATH = re.compile(r"`((?:tfgw|bench|configs|tests)/[\w./-]+)`")


def test_docs_name_only_paths_that_exist():
    missing = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.name}: {target}")
        for target in CODE_PATH.findall(text):
            if not (REPO / target.rstrip("/")).exists():
                missing.append(f"{page.name}: {target}")
    assert missing == []
