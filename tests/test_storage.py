"""The store's readers: each download reads its own bytes, whatever else is reading."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from streamer.storage import Store
from testkit.dataset import put

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 4096  # 1 MiB, every position distinct mod 256


@pytest.fixture(params=["local", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = str(tmp_path) if request.param == "local" else f"memory://readers-{uuid.uuid4().hex}"
    put(url, "models/mdl-a/runs/run-a/training.log", DATA)
    return url


async def test_concurrent_readers_of_one_object_do_not_share_a_position(store_url: str) -> None:
    store = Store.from_url(store_url)
    key = "models/mdl-a/runs/run-a/training.log"
    results: dict[int, bytes] = {}

    async def read(n: int, start: int, end: int | None) -> None:
        reader = await store.open(key, start, end)
        parts = []
        try:
            while part := await reader.read(4096):
                parts.append(part)
                await anyio.lowlevel.checkpoint()  # let the other readers move in between
        finally:
            await reader.aclose()
        results[n] = b"".join(parts)

    spans = [(0, None), (100, None), (5000, 70000), (0, len(DATA))]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for n, (start, end) in enumerate(spans):
                tasks.start_soon(read, n, start, end)
    for n, (start, end) in enumerate(spans):
        assert results[n] == DATA[start:end], n


async def test_a_missing_object_fails_at_open(store_url: str) -> None:
    store = Store.from_url(store_url)
    with pytest.raises(FileNotFoundError):
        await store.open("models/mdl-a/runs/run-a/training.log.gz")
