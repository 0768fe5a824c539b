"""The bytes a poll found appended are read once for all the followers it woke
(streamer.follow.watch, `Watch.read`): one read per snapshot and span, whatever the
number of followers asking at once."""

from __future__ import annotations

import anyio
import pytest

from streamer.follow.watch import SHARED_SPAN, Snapshot, Watch

pytestmark = pytest.mark.anyio

KEY = "models/m/runs/r/training.log"


class CountingReads:
    """Spans of an object's bytes, each read recorded."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.spans: list[tuple[int, int]] = []

    async def read(self, key: str, start: int, end: int) -> bytes:
        self.spans.append((start, end))
        await anyio.lowlevel.checkpoint()  # the others ask meanwhile
        return self.data[start:end]


async def followers_read(
    watch: Watch, snap: Snapshot, reads: CountingReads, spans: list[tuple[int, int]]
) -> list[bytes]:
    got: dict[int, bytes] = {}

    async def one(index: int, start: int, end: int) -> None:
        got[index] = await watch.read(snap, KEY, start, end, reads.read)

    async with anyio.create_task_group() as tasks:
        for index, (start, end) in enumerate(spans):
            tasks.start_soon(one, index, start, end)
    return [got[index] for index in range(len(spans))]


async def test_followers_woken_by_one_poll_read_the_new_bytes_once() -> None:
    reads = CountingReads(bytes(range(256)) * 8)
    watch, snap = Watch(1.0), Snapshot(1.0)
    got = await followers_read(watch, snap, reads, [(100, 900)] * 50)
    assert got == [reads.data[100:900]] * 50
    assert reads.spans == [(100, 900)]


async def test_a_part_of_the_kept_span_is_answered_from_it() -> None:
    reads = CountingReads(bytes(range(256)) * 8)
    watch, snap = Watch(1.0), Snapshot(1.0)
    await followers_read(watch, snap, reads, [(100, 900)])
    got = await followers_read(watch, snap, reads, [(200, 900), (100, 500)])
    assert got == [reads.data[200:900], reads.data[100:500]]
    assert reads.spans == [(100, 900)]


async def test_another_snapshot_or_a_span_outside_is_read_again() -> None:
    reads = CountingReads(bytes(range(256)) * 8)
    watch, first, later = Watch(1.0), Snapshot(1.0), Snapshot(2.0)
    await followers_read(watch, first, reads, [(100, 900)])
    assert await followers_read(watch, later, reads, [(100, 900)]) == [reads.data[100:900]]
    assert await followers_read(watch, later, reads, [(50, 900)]) == [reads.data[50:900]]
    assert reads.spans == [(100, 900), (100, 900), (50, 900)]


async def test_a_large_span_is_read_by_each_follower_and_not_kept() -> None:
    reads = CountingReads(b"x" * (2 * SHARED_SPAN))
    watch, snap = Watch(1.0), Snapshot(1.0)
    got = await followers_read(watch, snap, reads, [(0, SHARED_SPAN + 1)] * 3)
    assert got == [reads.data[: SHARED_SPAN + 1]] * 3
    assert reads.spans == [(0, SHARED_SPAN + 1)] * 3
