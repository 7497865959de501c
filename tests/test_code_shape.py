"""The shape of the code: no module under tfgw/ over 600 lines, no function or method over 60.

How they are measured:
- a module: the lines of its file;
- a function or method (nested ones too, each on its own): from its `def` line (decorators
  excluded) to its last line (`end_lineno`), docstring included;
- a Typer command whose signature is only option declarations: from the first statement of its
  body (its docstring, if it has one) to its last line, so a long list of options costs nothing.
  "Only option declarations" means every parameter has a `typer.Option(...)` or
  `typer.Argument(...)` default (directly, or through a module-level name bound to one, such as
  `tfgw.cli.options.CONFIG`), or an `Annotated[..., typer.Option(...)]` annotation, or is the
  `typer.Context`. How a command is registered (`@app.command`, `app.command("x")(fn)`) does not
  matter: the signature decides.

Every offender is listed in the one failure message.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "tfgw"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
DECLARATIONS = frozenset(("Option", "Argument"))

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _is_declaration_call(node: ast.expr | None) -> bool:
    """`typer.Option(...)`, `typer.Argument(...)`, or `Option(...)` imported from typer."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in DECLARATIONS


def _shared_declarations(trees: dict[Path, ast.Module]) -> frozenset[str]:
    """Module-level names bound to an option declaration (`CONFIG = typer.Option(...)`)."""
    names: set[str] = set()
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and _is_declaration_call(node.value):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def _declares(arg: ast.arg, default: ast.expr | None, shared: frozenset[str]) -> bool:
    """Whether one parameter is an option declaration (or the Typer context)."""
    if _is_declaration_call(default) or (isinstance(default, ast.Name) and default.id in shared):
        return True
    annotation = arg.annotation
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
        base = annotation.value
        if (isinstance(base, ast.Name) and base.id == "Annotated") or (
            isinstance(base, ast.Attribute) and base.attr == "Annotated"
        ):
            return any(_is_declaration_call(e) for e in annotation.slice.elts[1:])
    return isinstance(annotation, ast.Attribute | ast.Name) and ast.unparse(annotation) in (
        "typer.Context",
        "Context",
    )


def is_typer_command(node: Function, shared: frozenset[str]) -> bool:
    """A signature that is only option declarations (at least one)."""
    args = node.args
    if args.vararg or args.kwarg:
        return False
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return bool(params) and all(_declares(arg, default, shared) for arg, default in params)


def function_lines(node: Function, shared: frozenset[str]) -> int:
    first = node.body[0].lineno if is_typer_command(node, shared) else node.lineno
    assert node.end_lineno is not None
    return node.end_lineno - first + 1


def _functions(tree: ast.Module) -> list[tuple[str, Function]]:
    """Every function and method with its qualified name (`Class.method`, `outer.inner`)."""
    found: list[tuple[str, Function]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def offenders(package: Path = PACKAGE) -> list[str]:
    sources = {path: path.read_text(encoding="utf-8") for path in sorted(package.rglob("*.py"))}
    trees = {path: ast.parse(text, filename=str(path)) for path, text in sources.items()}
    shared = _shared_declarations(trees)
    out = []
    for path, text in sources.items():
        name = path.relative_to(package.parent).as_posix()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            out.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for qualname, node in _functions(trees[path]):
            if (lines := function_lines(node, shared)) > MAX_FUNCTION_LINES:
                out.append(f"{name}:{node.lineno} {qualname}: {lines} lines (at most {MAX_FUNCTION_LINES})")
    return out


def test_no_module_or_function_is_too_long() -> None:
    found = offenders()
    assert not found, f"{len(found)} over the limits:\n" + "\n".join(found)


def test_the_measure(tmp_path: Path) -> None:
    """What counts: decorators do not, a Typer command's option declarations do not, anything
    else in a signature does, and a nested function counts in its own right and in its parent."""
    body = "".join(f"    x{i} = {i}\n" for i in range(58))
    options = "".join(f'    o{i}: int = typer.Option(0, "--o{i}"),\n' for i in range(10))
    plain = "".join(f"    p{i}: int = 0,\n" for i in range(10))
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import typer\n"
        "SHARED = typer.Option(None)\n"
        "\n"
        "@app.command('x')\n"
        "@other\n"
        f"def fits():\n{body}    return 1\n"  # 60 lines from `def`
        "\n"
        f"def command(\n{options}    shared: str = SHARED,\n    ctx: typer.Context = None,\n):\n"
        f'    """Help."""\n{body}'  # 59 lines from the docstring
        "\n"
        f"def signature(\n{plain}):\n{body}"  # a plain function: 70 lines from `def`
        "\n"
        f"def mixed(\n{options}    p: int = 0,\n):\n{body}"  # not only declarations: 71
        "\n"
        "class K:\n"
        "    def outer(self):\n"
        "        def inner():\n"
        + "".join(f"            y{i} = {i}\n" for i in range(60))  # inner: 61, outer: 63
        + "        return inner\n",
        encoding="utf-8",
    )
    (package / "big.py").write_text("x = 1\n" * 601, encoding="utf-8")
    (package / "ok.py").write_text("x = 1\n" * 600, encoding="utf-8")

    assert offenders(package) == [
        "pkg/a.py:141 signature: 70 lines (at most 60)",
        "pkg/a.py:212 mixed: 71 lines (at most 60)",
        "pkg/a.py:285 K.outer: 63 lines (at most 60)",
        "pkg/a.py:286 K.outer.inner: 61 lines (at most 60)",
        "pkg/big.py: 601 lines (at most 600)",
    ]
