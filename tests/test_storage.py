"""The store: readers that each read their own bytes, versions that follow content, and the
read strategy it picks for a download."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest

from streamer.storage import ParallelReader, Store, StoreUnreachable
from testkit.dataset import put
from testkit.emulators import BUCKET
from testkit.fakes import SpyBackend

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


async def test_a_local_log_replaced_by_same_size_bytes_with_its_mtime_restored_is_another_version(
    tmp_path: Path,
) -> None:
    store = Store.from_url(str(tmp_path))
    key = "models/mdl-a/runs/run-a/training.log"
    path = tmp_path / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a" * 100)
    before = await store.info(key)
    stamp = path.stat().st_mtime_ns
    # Kept linked, the old file's inode cannot be handed to the replacement.
    os.link(path, tmp_path / "old")
    (tmp_path / "new").write_bytes(b"b" * 100)
    os.utime(tmp_path / "new", ns=(stamp, stamp))
    os.replace(tmp_path / "new", path)
    after = await store.info(key)
    assert before is not None and after is not None
    assert (after.size, after.modified) == (before.size, before.modified)
    assert after.etag != before.etag


async def test_an_inline_store_is_read_in_turn_and_its_reader_closed_by_the_store(
    store_url: str,
) -> None:
    spy = SpyBackend(store_url)
    key = "models/mdl-a/runs/run-a/training.log"
    async with spy.store.reading(key, 0, len(DATA), buffer_chunks=4) as reader:
        assert not reader.ahead  # a local file or memory: nothing to wait for
        assert await reader.read(10) == DATA[:10]
    assert (len(spy.opens), spy.closed) == (1, 1)
    async with spy.store.reading(key, 5, 15) as reader:
        await reader.aclose()  # its other owner (the pump) closes it first: one close
    assert (len(spy.opens), spy.closed) == (2, 2)


async def test_no_parallel_parts_when_the_stream_bound_leaves_no_room(s3_endpoint: str) -> None:
    url = f"s3://{BUCKET}/strategy-{uuid.uuid4().hex}"
    key = "models/mdl-a/runs/run-a/training.log"
    put(url, key, DATA)
    store = Store.from_url(url)
    store.parallel_min = 64 * 1024
    try:
        for buffer_chunks, parallel in ((4, True), (2, False)):
            async with store.reading(key, 0, len(DATA), buffer_chunks=buffer_chunks) as reader:
                assert isinstance(reader.source, ParallelReader) is parallel
                assert reader.ahead is not parallel  # one GET is read a chunk ahead
                assert await reader.read(100) == DATA[:100]
    finally:
        await store.aclose()


def test_a_url_scheme_without_a_backend_is_refused() -> None:
    with pytest.raises(StoreUnreachable, match="no backend for ftp://"):
        Store.from_url("ftp://example/logs")
