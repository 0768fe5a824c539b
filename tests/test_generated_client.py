"""Clients generated from the OpenAPI document, driven end to end against a live server:
Python by openapi-python-client, TypeScript types by openapi-typescript (with openapi-fetch).

The Python client is generated as docs/clients.md says (its config maps `text/plain` to bytes),
into a temporary folder, and imported from there. It must keep a log's bytes exactly (the
fixture log is not UTF-8), answer a HEAD without a body, walk pages forward and backward by
their cursors alone, and parse problems into their typed codes.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from streamer.config import Settings
from testkit.dataset import LOG_A2
from testkit.servers import serve_in_thread

PACKAGE = "streamer_client"
# docs/clients.md shows this file: text/plain bodies are bytes (a log need not be UTF-8).
CONFIG = "content_type_overrides:\n  text/plain: application/octet-stream\npost_hooks: []\n"
DOCUMENT = Path(__file__).parents[1] / "streamer" / "openapi.json"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Any]]:
    """`import_(name)` imports `streamer_client.<name>` from a freshly generated client."""
    root = tmp_path_factory.mktemp("generated")
    (root / "config.yaml").write_text(CONFIG)
    command = [sys.executable, "-m", "openapi_python_client", "generate"]
    command += ["--path", str(DOCUMENT), "--meta", "none", "--config", str(root / "config.yaml")]
    command += ["--output-path", str(root / PACKAGE)]
    done = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
    # Every operation and schema made it into the client (the generator skips what it
    # cannot read, with a warning, and still exits 0).
    assert b"Warning" not in done.stdout + done.stderr, done.stdout.decode()[-3000:]
    sys.path.insert(0, str(root))
    try:
        yield lambda name: importlib.import_module(f"{PACKAGE}.{name}")
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def api(base_settings: Settings) -> Iterator[str]:
    server = serve_in_thread(base_settings)
    try:
        yield next(server).url
    finally:
        server.close()


def client(generated: Callable[[str], Any], url: str, token: str | None) -> Any:
    module: ModuleType = generated("client")
    if token is None:
        return module.Client(base_url=url)
    return module.AuthenticatedClient(base_url=url, token=token)


def test_a_download_keeps_the_bytes_and_a_head_has_none(
    generated: Callable[[str], Any], api: str, token: str
) -> None:
    download = generated("api.logs.download_training_logs")
    head = generated("api.logs.head_training_logs")
    with client(generated, api, token) as authenticated:
        answer = download.sync_detailed("mdl-alpha", client=authenticated, run_id="run-a2")
        assert answer.status_code == 200
        assert answer.parsed.payload.read() == LOG_A2
        part = download.sync_detailed(
            "mdl-alpha", client=authenticated, run_id="run-a2", range_="bytes=-20"
        )
        assert (part.status_code, part.parsed.payload.read()) == (206, LOG_A2[-20:])
        headers = head.sync_detailed("mdl-alpha", client=authenticated, run_id="run-a2")
        assert (headers.status_code, headers.parsed, headers.content) == (200, None, b"")
        assert headers.headers["content-length"] == str(len(LOG_A2))


def test_pages_walk_both_ways_by_their_cursors(
    generated: Callable[[str], Any], api: str, token: str
) -> None:
    pages = generated("api.logs.get_training_logs")
    direction = generated("models.get_training_logs_direction").GetTrainingLogsDirection
    with client(generated, api, token) as authenticated:
        whole = pages.sync("mdl-alpha", client=authenticated, run_id="run-a2", limit=1000)
        lines = [(entry.offset, entry.message) for entry in whole.data]
        assert len(lines) == LOG_A2.count(b"\n") + 1
        assert lines[0] == (0, "Initializing distributed training cluster.")
        walked: dict[str, list[tuple[int, str]]] = {}
        for way in (direction.FORWARD, direction.BACKWARD):
            page = pages.sync(
                "mdl-alpha", client=authenticated, run_id="run-a2", limit=3, direction=way
            )
            seen: list[tuple[int, str]] = []
            while True:
                assert 0 < len(page.data) <= 3
                chunk = [(entry.offset, entry.message) for entry in page.data]
                seen = [*seen, *chunk] if way == direction.FORWARD else [*chunk, *seen]
                if page.next_cursor is None:
                    break
                # The cursor continues the walk: the client sends no direction (the limit
                # is not remembered, so it goes again).
                page = pages.sync(
                    "mdl-alpha", client=authenticated, cursor=page.next_cursor, limit=3
                )
            walked[way.value] = seen
        assert walked == {"forward": lines, "backward": lines}


def test_problems_are_parsed(generated: Callable[[str], Any], api: str, token: str) -> None:
    pages = generated("api.logs.get_training_logs")
    download = generated("api.logs.download_training_logs")
    problem_code = generated("models.problem_code").ProblemCode
    problem_type = generated("models.problem").Problem
    with client(generated, api, token) as authenticated:
        missing = pages.sync("mdl-nope", client=authenticated)
        assert isinstance(missing, problem_type)
        assert (missing.status, missing.code) == (404, problem_code.MODEL_NOT_FOUND)
        assert missing.request_id
        bad = pages.sync("mdl-alpha", client=authenticated, cursor="x" * 5 + "." + "y" * 22)
        assert (bad.status, bad.code) == (400, problem_code.INVALID_CURSOR)
        gone = download.sync("mdl-alpha", client=authenticated, run_id="run-purged")
        assert (gone.status, gone.code) == (404, problem_code.LOGS_PURGED)
    with client(generated, api, None) as anonymous:
        refused = download.sync_detailed("mdl-alpha", client=anonymous)
        assert refused.status_code == 401
        assert refused.parsed.code == problem_code.MISSING_TOKEN
        assert refused.headers["www-authenticate"].startswith("Bearer")


# TypeScript: types from openapi-typescript, calls through openapi-fetch, checked by tsc.

TS_SOURCES = Path(__file__).with_name("ts")
NODE_MODULES = Path(__file__).parents[1] / "build" / "ts-client" / "node_modules"


def test_a_typescript_client_from_the_document(tmp_path: Path, api: str, token: str) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / ".bin" / "tsc").exists():
        pytest.fail(
            "node or the TypeScript client's packages are missing: `make tools` installs them"
        )
    for name in ("package.json", "tsconfig.json", "client.ts"):
        shutil.copy(TS_SOURCES / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    bin_ = NODE_MODULES / ".bin"
    steps = [
        [str(bin_ / "openapi-typescript"), str(DOCUMENT), "-o", "schema.d.ts"],
        [str(bin_ / "tsc"), "-p", "."],  # the generated types hold the calls client.ts makes
        [node, "out/client.js", api, token],
    ]
    for step in steps:
        done = subprocess.run(step, cwd=tmp_path, capture_output=True, timeout=300, check=False)
        assert done.returncode == 0, (
            step,
            done.stdout.decode()[-3000:],
            done.stderr.decode()[-3000:],
        )
    seen = json.loads(done.stdout)
    headers = {"Authorization": f"Bearer {token}"}
    whole = httpx.get(
        api + "/api/v1/models/mdl-alpha/training-metrics/logs",
        params={"run_id": "run-a2", "limit": 1000},
        headers=headers,
        timeout=10,
    ).json()
    lines = [[entry["offset"], entry["message"]] for entry in whole["data"]]
    assert seen == {
        "download": {"status": 200, "bytes": list(LOG_A2)},
        "head": {"status": 200, "length": str(len(LOG_A2))},
        "forward": lines,
        "backward": lines,
        "problem": {"status": 404, "code": "model_not_found"},
    }
