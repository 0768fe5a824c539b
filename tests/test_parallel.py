"""ParallelReader in-process, over a fake store: order, growth, the bounds, cancellation."""

from __future__ import annotations

import asyncio
import hashlib

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from streamer.storage import ParallelReader, ReadAhead, RetryingReader
from streamer.storage.parallel import MAX_PART_SIZE, MAX_PARTS, PART_SIZE, part_bounds, part_unit
from testkit.parts import Body, Source, pattern, reader

pytestmark = pytest.mark.anyio

KiB, MiB = 1024, 1024 * 1024


async def drain(parts: ParallelReader, size: int) -> bytes:
    """A fast consumer: reads again as soon as a read returns."""
    got = bytearray()
    while chunk := await parts.read(size):
        got += chunk
    return bytes(got)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_part_bounds_follow_the_unit() -> None:
    assert part_bounds(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert part_bounds(5, 9, 4) == [(5, 8), (8, 9)]  # a 1-byte last part
    assert part_bounds(4, 8, 4) == [(4, 8)]
    assert part_bounds(3, 4, 4) == [(3, 4)]
    # A unit larger than MAX_PART_SIZE is cut in equal pieces, never across its edges.
    unit = 3 * MAX_PART_SIZE - 3
    bounds = part_bounds(0, 2 * unit, unit)
    assert len(bounds) == 6
    assert all(end - start <= MAX_PART_SIZE for start, end in bounds)
    assert unit in {start for start, _ in bounds}


def test_a_part_holds_whole_store_parts() -> None:
    assert part_unit(None) == PART_SIZE
    assert part_unit(5 * MiB, 16 * MiB) == 15 * MiB
    assert part_unit(8 * MiB, 16 * MiB) == 16 * MiB
    assert part_unit(8 * MiB, 8 * MiB) == 8 * MiB
    assert part_unit(64 * MiB, 16 * MiB) == 64 * MiB  # cut again by part_bounds
    assert part_unit(16 * MiB + 1, 16 * MiB) == 16 * MiB + 1


@pytest.mark.parametrize(
    ("size", "start", "end", "unit", "read_size"),
    [
        (1 * MiB, 0, None, 256 * KiB, 64 * KiB),  # part edges on chunk edges
        (1 * MiB + 1, 0, None, 256 * KiB, 64 * KiB),  # a 1-byte last part
        (3 * MiB - 7, 0, None, 256 * KiB, 100_000),  # chunks across part edges
        (2 * MiB, 100_000, 1_900_001, 256 * KiB, 64 * KiB),  # a range across parts
        (2 * MiB, 262_143, 262_145, 256 * KiB, 64 * KiB),  # 2 bytes, 2 parts
        (512 * KiB, 0, None, 1 * MiB, 64 * KiB),  # one part
        (700 * KiB, 0, None, 64 * KiB, 1 * MiB),  # reads larger than parts
        (5, 0, None, 1, 2),  # 1-byte parts
    ],
)
@pytest.mark.parametrize("consumer", ["fast", "slow"])
async def test_bytes_come_in_order_and_identical(
    size: int, start: int, end: int | None, unit: int, read_size: int, consumer: str
) -> None:
    data = pattern(size)
    source = Source(data)
    stop = size if end is None else end
    got = bytearray()
    with anyio.fail_after(30):
        async with reader(source, start, stop, read_size=read_size, unit=unit) as parts:
            if consumer == "fast":
                got += await drain(parts, read_size)
            else:
                while len(got) < stop - start:
                    await wait_all_tasks_blocked()
                    got += await parts.read(read_size)
                assert await parts.read(read_size) == b""
    assert sha(bytes(got)) == sha(data[start:stop])
    assert source.opened == part_bounds(start, stop, unit)
    assert source.closed == len(source.opened)


async def test_a_slow_consumer_keeps_one_part_in_flight_and_one_read() -> None:
    data = pattern(4 * MiB)
    source, ceiling = Source(data), ReadAhead(64 * MiB)
    got = bytearray()
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            while len(got) < len(data):
                if got:  # "slowly": back only once the store has sent the next bytes
                    delivered = source.delivered
                    await delivered.wait()
                got += await parts.read(64 * KiB)
                assert parts.buffered <= 64 * KiB
                assert parts.in_flight <= 1
                assert ceiling.used == 0
            assert parts.peak_in_flight == 1
            assert parts.window == 1
    assert got == data


async def test_a_fast_consumer_grows_the_parts_in_flight() -> None:
    data = pattern(8 * MiB)
    source, ceiling = Source(data, turns=20), ReadAhead(64 * MiB)
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            assert await drain(parts, 64 * KiB) == data
            assert parts.peak_in_flight == MAX_PARTS
    assert ceiling.used == 0


async def test_a_consumer_that_stops_holds_one_read() -> None:
    data = pattern(4 * MiB)
    source, ceiling = Source(data), ReadAhead(64 * MiB)
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            assert await parts.read(64 * KiB) == data[: 64 * KiB]
            await wait_all_tasks_blocked()
            reads = source.reads
            await wait_all_tasks_blocked()
            assert source.reads == reads  # nothing more is read while nobody reads
            assert parts.buffered <= 64 * KiB
            assert ceiling.used == 0


async def test_read_ahead_stays_within_the_ceiling() -> None:
    data = pattern(8 * MiB)
    source, ceiling = Source(data), ReadAhead(3 * 256 * KiB)
    got = bytearray()
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            while chunk := await parts.read(64 * KiB):
                got += chunk
                assert ceiling.used <= ceiling.limit
                assert parts.buffered <= ceiling.limit + 64 * KiB
            assert parts.peak_in_flight == 4
    assert got == data
    assert ceiling.used == 0


async def test_no_growth_before_grow_after_bytes() -> None:
    data = pattern(4 * MiB)
    source, ceiling = Source(data), ReadAhead(64 * MiB)
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling, grow_after=MiB) as parts:
            got = bytearray()
            while len(got) < MiB:  # a client whose socket buffers still take everything
                got += await parts.read(64 * KiB)
                assert parts.peak_in_flight == 1
            got += await drain(parts, 64 * KiB)
            assert parts.peak_in_flight > 1
    assert got == data


async def test_a_full_ceiling_means_one_part_in_flight_never_a_wait() -> None:
    data = pattern(2 * MiB)
    source, ceiling = Source(data), ReadAhead(0)
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            assert await drain(parts, 64 * KiB) == data
            assert parts.peak_in_flight == 1


async def test_the_ceiling_is_shared_and_given_back_on_close() -> None:
    data = pattern(8 * MiB)
    ceiling = ReadAhead(4 * MiB)
    with anyio.fail_after(30):
        async with reader(Source(data), ceiling=ceiling) as one:
            await one.read(64 * KiB)
            await one.read(64 * KiB)  # waits: grows
            used = ceiling.used
            assert 0 < used <= ceiling.limit
            async with reader(Source(data), ceiling=ceiling) as two:
                assert await drain(two, 64 * KiB) == data
                assert two.peak_in_flight <= 1 + (ceiling.limit - used) // (256 * KiB)
    assert ceiling.used == 0


async def test_aclose_cancels_every_part_and_closes_its_body() -> None:
    data = pattern(8 * MiB)
    source, ceiling = Source(data), ReadAhead(64 * MiB)
    tasks = len(asyncio.all_tasks())
    with anyio.fail_after(30):
        async with reader(source, ceiling=ceiling) as parts:
            for _ in range(20):
                await parts.read(64 * KiB)
            assert parts.in_flight > 1
            await parts.aclose()
            assert source.closed == len(source.opened)
            reads = source.reads
            await wait_all_tasks_blocked()
            assert source.reads == reads
            with pytest.raises(anyio.ClosedResourceError):
                await parts.read(64 * KiB)
    assert ceiling.used == 0
    assert len(asyncio.all_tasks()) == tasks


async def test_leaving_the_block_without_aclose_leaves_no_task() -> None:
    source = Source(pattern(8 * MiB))
    tasks = len(asyncio.all_tasks())
    with anyio.fail_after(30):
        async with reader(source) as parts:
            for _ in range(20):
                await parts.read(64 * KiB)
    assert len(asyncio.all_tasks()) == tasks
    assert source.closed == len(source.opened)


async def test_an_error_of_any_part_is_raised() -> None:
    data = pattern(4 * MiB)
    source = Source(data, fail=PermissionError("denied"), fail_at=3 * MiB)
    got = bytearray()
    with anyio.fail_after(30), pytest.raises(PermissionError):  # as it is, not in a group
        async with reader(source) as parts:
            while chunk := await parts.read(64 * KiB):
                got += chunk
    assert 0 < len(got) < len(data)
    assert got == data[: len(got)]
    assert source.closed == len(source.opened)


async def test_a_body_that_ends_early_is_an_error() -> None:
    data = pattern(1 * MiB)
    source = Source(data)

    def short(start: int, end: int) -> Body:
        return source.open_part(start, end - 1)

    parts = ParallelReader(short, 0, len(data), ReadAhead(0), read_size=64 * KiB, unit=256 * KiB)
    with anyio.fail_after(30):
        async with parts:
            with pytest.raises(OSError, match="ended 1 bytes early"):
                await drain(parts, 64 * KiB)


class Counts:
    retries = 0
    upstream_errors = 0


async def test_a_part_cut_once_is_resumed_at_its_byte() -> None:
    data = pattern(2 * MiB)
    cuts = {512 * KiB + 100}  # inside the third part
    opened: list[int] = []

    class Cut(Body):
        async def read(self, size: int) -> bytes:
            for cut in list(cuts):
                if self.position <= cut < min(self.position + size, self.end):
                    if self.position < cut:
                        data = self.source.data[self.position : cut]
                        self.position = cut
                        return data
                    cuts.discard(cut)
                    raise ConnectionResetError("cut")
            return await super().read(size)

    source = Source(data)

    def open_part(start: int, end: int) -> RetryingReader:
        async def open_at(offset: int) -> Body:
            opened.append(offset)
            return Cut(source, offset, end)

        return RetryingReader(open_at, start, Counts(), backoff_s=0)

    parts = ParallelReader(
        open_part, 0, len(data), ReadAhead(64 * MiB), read_size=64 * KiB, unit=256 * KiB
    )
    with anyio.fail_after(30):
        async with parts:
            got = await drain(parts, 64 * KiB)
    assert sha(got) == sha(data)
    assert 512 * KiB + 100 in opened
