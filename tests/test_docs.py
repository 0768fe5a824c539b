"""The docs hold: links resolve, the README stays a front door, and recipes run as pasted.

A fenced block marked `sh` is a recipe: it is run with `bash -euo pipefail` against a real
`streamer serve` on a free port, over the demo store, in a scratch folder laid out as
after `make run`, and must exit 0 and print something. `shell` blocks are shown, not run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer import demo
from streamer.config import ENV_PREFIX, Settings
from testkit.servers import SECRET, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
TOP = ("README.md", "CONTRIBUTING.md", "deploy/README.md", "bench/README.md")
DOCS = [ROOT / name for name in TOP] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DEMO_ADDRESS = "http://127.0.0.1:8080"


def _prose(text: str) -> str:
    """The text without its fenced blocks and inline code, where links are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if line.startswith("#"):
            base = anchor(line.lstrip("#"))
            name, n = base, 0
            while name in found:  # GitHub numbers a repeated heading's anchor
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def links() -> Iterator[tuple[Path, str]]:
    for doc in DOCS:
        for target in LINK.findall(_prose(doc.read_text())):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not http:, mailto:, ...
                yield doc, target


@pytest.mark.parametrize(
    ("doc", "target"),
    list(links()),
    ids=lambda x: str(x.relative_to(ROOT)) if isinstance(x, Path) else x,
)
def test_relative_links_resolve(doc: Path, target: str) -> None:
    file, _, fragment = target.partition("#")
    path = (doc.parent / file).resolve() if file else doc
    assert path.exists(), f"{doc.relative_to(ROOT)}: {target} is not a file"
    if fragment:
        assert fragment in anchors(path), f"{doc.relative_to(ROOT)}: no heading #{fragment}"


def test_the_link_checker_sees_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## What a token must carry\n\n## Title\n```sh\n# not one\n```\n")
    assert anchors(page) == {"title", "what-a-token-must-carry", "title-1"}
    text = "[a](page.md#title) `[b](x.md)`\n```\n[c](y.md)\n```\n"
    assert LINK.findall(_prose(text)) == ["page.md#title"]


def test_code_points_at_docs_that_exist() -> None:
    cited = re.compile(r"((?:docs/[\w-]+|bench/README|deploy/README)\.md)#([\w-]+)")
    sources = [*ROOT.glob("streamer/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py")]
    found = [
        (source.relative_to(ROOT), file, fragment)
        for source in sources
        for file, fragment in cited.findall(source.read_text())
    ]
    assert found  # the pattern still matches how code cites the docs
    broken = [f"{s}: {f}#{a}" for s, f, a in found if a not in anchors(ROOT / f)]
    assert not broken, broken


def test_the_readme_is_a_front_door() -> None:
    assert (ROOT / "README.md").stat().st_size < 15_000


def test_every_setting_is_documented() -> None:
    names = [ENV_PREFIX + field.name.upper() for field in dataclasses.fields(Settings)]
    for doc in (ROOT / "README.md", ROOT / "docs" / "configuration.md"):
        text = doc.read_text()
        missing = [name for name in names if f"`{name}`" not in text]
        assert not missing, f"{doc.relative_to(ROOT)} lacks {missing}"


def recipes() -> list[tuple[Path, int, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            if match[1] == "sh":
                found.append((doc, text[: match.start()].count("\n") + 1, match[2]))
    return found


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store `make run` seeds in var/demo, with the secret it keeps there."""
    root = tmp_path_factory.mktemp("demo")
    demo.seed(root, big_log_bytes=256 * 1024)
    (root / ".jwt-secret").write_text(SECRET)
    return root


@pytest.fixture(scope="module")
def demo_server(demo_store: Path) -> Iterator[ServerProcess]:
    env = {
        "STREAMER_STORAGE_URL": str(demo_store),
        "STREAMER_JWT_SECRET": SECRET,
        "STREAMER_CORS_ORIGINS": "https://panel.example,http://localhost:3000",  # browsers.md's
    }
    server = ServerProcess([], env)
    try:
        yield server
    finally:
        assert server.stop() in (0, -15)


@pytest.mark.parametrize(
    ("doc", "line", "script"),
    recipes(),
    ids=[f"{doc.relative_to(ROOT)}:{line}" for doc, line, _ in recipes()],
)
def test_recipe_runs_as_pasted(
    doc: Path, line: int, script: str, demo_store: Path, demo_server: ServerProcess, tmp_path: Path
) -> None:
    # The folder `make run` leaves: the venv's commands and the store it serves, secret
    # included. Recipes share that store: one that changes it works on a run of its own.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo").symlink_to(demo_store)
    token = subprocess.run(
        [sys.executable, "-m", "streamer", "token", "--sub", "alice", "--org", demo.ORG],
        env={**os.environ, "STREAMER_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
        "TOKEN": token,
        "BASE": demo_server.url,
        "MODEL": demo.MODEL,
        "RUN": demo.LATEST_RUN,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(DEMO_ADDRESS, demo_server.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    where = f"{doc.relative_to(ROOT)}:{line}"
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
    assert result.stdout.strip(), f"{where} printed nothing:\n{result.stderr}"
