"""Who may import whom among streamer/, testkit/, tests/ and bench/.

streamer imports none of the others; testkit (the parts the tests and the benchmark share)
imports neither tests nor bench; bench imports nothing from tests; a test module imports
no other test module, no conftest and nothing from bench (it runs the benchmark as a child
process). Imports inside functions count too.
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
