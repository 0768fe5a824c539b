"""The recipes of docs/get-logs.md, run as pasted against the demo store."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from streamer.config import Settings
from streamer.demo import seed
from testkit.servers import Running


def docs_recipes() -> list[str]:
    text = (Path(__file__).parent.parent / "docs" / "get-logs.md").read_text()
    section = text[text.index("## Recipes") : text.index("## What a page costs")]
    return [block.split("```")[0] for block in section.split("```sh\n")[1:]]


def test_the_docs_recipes_run_as_pasted(
    base_settings: Settings,
    settings_server: Callable[..., Running],
    token: str,
    tmp_path: Path,
) -> None:
    seed(tmp_path, big_log_bytes=1 << 20)
    running = settings_server(base_settings, storage_url=str(tmp_path))
    recipes = docs_recipes()
    assert len(recipes) == 3
    outputs = []
    for recipe in recipes:
        lines = recipe.splitlines()
        assert lines[0].startswith("TOKEN=") and lines[1].startswith("MODEL=")
        assert lines[2].startswith("RUN=")
        script = "\n".join([f"TOKEN={token}", *lines[1:]])
        script = script.replace("http://127.0.0.1:8080", running.url)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    last, scrolled, live = outputs
    assert len(last) == 200 and len({line.split("\t")[0] for line in last}) == 200
    assert 0 < len(scrolled) <= 150
    assert all(line.split(" ")[1] in ("WARN", "ERROR") for line in scrolled)
    assert all(line.split(" ")[0] >= "2026-03-13T10:10:00Z" for line in scrolled)
    assert len(live) == 10
