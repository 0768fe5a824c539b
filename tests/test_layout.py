"""Who may import whom among streamer/, testkit/, tests/ and bench/, and how big its parts are.

streamer imports none of the others; testkit (the parts the tests and the benchmark share)
imports neither tests nor bench; bench imports nothing from tests; a test module imports
no other test module, no conftest and nothing from bench (it runs the benchmark as a child
process). Imports inside functions count too.

No module of streamer/ is over `MAX_MODULE_LINES` lines and no function (method, nested
function) over `MAX_FUNCTION_LINES`, but those on `OVERSIZED`, each with its reason; an
entry that has come within the limit must leave the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, absolute names (a relative import is resolved), and
    each name imported from one as `module.name` (it may be a module too)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = ".".join(filter(None, (parent, base)))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(
            name
            for name in imported(path, ROOT)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("streamer", ("tests", "testkit", "bench")),
        ("testkit", ("tests", "bench")),
        ("bench", ("tests",)),
    ],
)
def test_a_layer_imports_nothing_above_it(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == {}


def test_no_test_module_imports_another_or_the_benchmark() -> None:
    test_modules = tuple(f"tests.{path.stem}" for path in (ROOT / "tests").glob("test_*.py"))
    assert len(test_modules) > 10
    assert offending("tests", ("bench", "tests.conftest", *test_modules)) == {}


def test_relative_and_nested_imports_are_seen(tmp_path: Path) -> None:
    # The checks above are only as good as this: a relative or in-function import counts.
    module = tmp_path / "tests" / "test_new.py"
    module.parent.mkdir()
    module.write_text(
        "from . import test_auth\nfrom .test_http import get\n"
        "def f():\n    import bench.servers\n    from ..bench import report\n"
    )
    names = imported(module, tmp_path)
    assert {"tests.test_auth", "tests.test_http", "bench.servers", "bench.report"} <= names


MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
# "path" for a module, "path:qualified.name" for a function; each with why it still is.
OVERSIZED: dict[str, str] = {}


def sizes(folder: Path, root: Path = ROOT) -> dict[str, int]:
    """Lines of every module under `folder`, and of every function in them (as
    ``path:Class.method`` or ``path:outer.inner``)."""
    found: dict[str, int] = {}
    for path in sorted(folder.rglob("*.py")):
        name = str(path.relative_to(root))
        text = path.read_text()
        found[name] = len(text.splitlines())
        for qualified, node in functions(ast.parse(text, name)):
            assert node.end_lineno is not None
            found[f"{name}:{qualified}"] = node.end_lineno - node.lineno + 1
    return found


def functions(
    tree: ast.AST, prefix: str = ""
) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualified = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                found.append((qualified, node))
            found.extend(functions(node, qualified + "."))
        else:
            found.extend(functions(node, prefix))
    return found


def oversized(found: dict[str, int]) -> dict[str, int]:
    return {
        name: lines
        for name, lines in found.items()
        if lines > (MAX_FUNCTION_LINES if ":" in name else MAX_MODULE_LINES)
    }


def test_no_module_or_function_of_streamer_is_over_its_limit() -> None:
    over = oversized(sizes(ROOT / "streamer"))
    assert {name: lines for name, lines in over.items() if name not in OVERSIZED} == {}
    # An entry that fits now leaves the list, so the list only shrinks.
    assert sorted(set(OVERSIZED) - set(over)) == []


def test_sizes_see_methods_nested_and_async_functions(tmp_path: Path) -> None:
    # The check above is only as good as this: every kind of function is measured.
    body = "".join(f"        x{i} = {i}\n" for i in range(60))
    module = tmp_path / "streamer" / "m.py"
    module.parent.mkdir()
    module.write_text(
        "class C:\n    async def long(self):\n"
        + body
        + "def outer():\n    def inner():\n"
        + body
        + "    return inner\n"
        + "def short():\n    pass\n"
    )
    found = sizes(module.parent, tmp_path)
    over = {"streamer/m.py:C.long": 61, "streamer/m.py:outer": 63, "streamer/m.py:outer.inner": 61}
    assert oversized(found) == over
    assert (found["streamer/m.py"], found["streamer/m.py:short"]) == (127, 2)
    assert oversized({"streamer/m.py": MAX_MODULE_LINES + 1}) != {}
