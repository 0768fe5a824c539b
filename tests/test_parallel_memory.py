"""A stream's memory under parallel reads: bytes held, counted, while a consumer drains
slowly (SPEC sections 4 and 7), in-process over a fake store, through the pump, and on
the S3 and GCS emulators. A slow consumer is one that comes back only once no part reads
(`ParallelReader.quiet`): deterministic steps, no clock."""

from __future__ import annotations

import anyio
import pytest

from streamer.pump import Message, Stream, pump
from streamer.storage import ParallelReader, ReadAhead
from testkit.faulty import Faulty
from testkit.parts import KiB, MiB, Source, pattern
from testkit.parts import reader as parallel_reader
from testkit.partstores import KEY, LOG, proxied, seeded, sha, small_parts
from testkit.pumping import Client, Counted, Transport, uvicorn_cycle

__all__ = ["proxied", "seeded"]  # the emulators' fixtures, shared with test_parallel_stores

pytestmark = pytest.mark.anyio
READ = 256 * 1024  # the emulators' reads


async def slowly(parts: ParallelReader, size: int) -> bytes:
    """A consumer slower than the store: back only once no part reads."""
    await parts.quiet()
    return await parts.read(size)


async def test_a_consumer_that_turns_slow_holds_its_allowance_then_one_read() -> None:
    """Accounting: bytes held never pass one read plus the allowance; once the consumer
    comes back only after the store has done all it may, the allowance drains away."""
    data = pattern(16 * MiB)
    source, ceiling = Source(data, turns=20), ReadAhead(64 * MiB)
    got = bytearray()
    with anyio.fail_after(30):
        async with parallel_reader(source, ceiling=ceiling) as parts:
            while len(got) < 2 * MiB:  # fast: the store is the slower side
                got += await parts.read(64 * KiB)
            grown = parts.allowance
            assert grown > 64 * KiB
            assert parts.in_flight > 1
            while chunk := await slowly(parts, 64 * KiB):  # slow
                got += chunk
                assert parts.held <= 64 * KiB + parts.allowance
                assert parts.allowance <= grown
                assert ceiling.used == parts.allowance
                if len(got) >= 2 * MiB + 4 * grown:
                    assert parts.allowance == 0
                    assert parts.held <= 64 * KiB
                    assert parts.in_flight <= 1
            assert parts.peak_held <= 64 * KiB + parts.peak_allowance
    assert got == data
    assert ceiling.used == 0


async def test_a_slow_consumer_never_holds_more_than_one_read() -> None:
    data = pattern(4 * MiB)
    source, ceiling = Source(data, turns=20), ReadAhead(64 * MiB)
    got = bytearray()
    with anyio.fail_after(30):
        async with parallel_reader(source, ceiling=ceiling) as parts:
            while chunk := await slowly(parts, 64 * KiB):
                got += chunk
                assert parts.held <= 64 * KiB
            assert parts.peak_held <= 64 * KiB
            assert parts.peak_in_flight == 1
            assert parts.peak_allowance == 0
    assert got == data


async def test_a_slow_consumer_that_waits_now_and_then_keeps_a_read_ahead_of_one_read() -> None:
    """A wait on the store now and then (a stall, a part's first byte) grows the allowance
    by one read, and the reads without a wait after it take it back: waits do not add up to
    parts held ahead of a slow client."""
    data = pattern(8 * MiB)
    source, ceiling = Source(data, turns=20), ReadAhead(64 * MiB)
    got = bytearray()
    with anyio.fail_after(30):
        async with parallel_reader(source, ceiling=ceiling) as parts:
            step = 0
            while chunk := await slowly(parts, 64 * KiB):
                got += chunk
                step += 1
                if step % 8 == 0:  # back at once: the head's next read is under way
                    got += await parts.read(64 * KiB)
                assert parts.held <= 64 * KiB + parts.allowance
            assert parts.peak_allowance == 64 * KiB
            assert parts.peak_held <= 2 * 64 * KiB
            assert parts.peak_in_flight <= 2
    assert got == data
    assert ceiling.used == 0


class CountedPart:
    """A part's body for a ParallelReader: reads of counted chunks."""

    def __init__(self, start: int, end: int, peaks: list[int]) -> None:
        self.left, self.peaks = end - start, peaks

    async def read(self, size: int) -> bytes:
        await anyio.lowlevel.checkpoint()
        size = min(size, self.left)
        self.left -= size
        chunk = Counted(b"x" * size)
        self.peaks.append(Counted.alive)
        return chunk

    async def aclose(self) -> None:
        pass


async def test_a_slow_client_of_parallel_reads_costs_at_most_its_bound() -> None:
    # SPEC 4 and 7 on S3 and GCS: the parallel reader's parts are read only as the client
    # drains, so a slow client's stream holds its bound, never a part it is not draining.
    chunk_size, chunks, buffer_chunks = 256 * 1024, 24, 4
    Counted.alive = 0
    peaks: list[int] = []
    ceiling = ReadAhead(64 * chunk_size)
    parts = ParallelReader(
        lambda start, end: CountedPart(start, end, peaks),
        0,
        chunk_size * chunks,
        ceiling,
        read_size=chunk_size,
        unit=2 * chunk_size,
        grow_after=chunk_size,
    )
    transport = Transport()
    cycle = uvicorn_cycle(transport)
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(chunk_size * chunks).encode())],
    }
    done = anyio.Event()

    async def download() -> None:
        async with parts:
            await pump(
                parts,
                start,
                cycle.send,  # type: ignore[arg-type]
                Client().receive,
                # ahead=False: as the download handler reads a ParallelReader.
                Stream(chunk_size=chunk_size, buffer_chunks=buffer_chunks, ahead=False),
            )
        done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(download)
            while not done.is_set():
                await anyio.wait_all_tasks_blocked()  # the client is slower than the store
                transport.take(40_000)
    assert transport.received > chunk_size * chunks
    assert max(peaks) <= buffer_chunks, peaks
    assert parts.peak_held <= chunk_size
    assert parts.peak_allowance == 0 and parts.peak_in_flight == 1
    assert ceiling.used == 0


async def test_a_slow_consumer_holds_one_read_and_no_part_ahead(proxied: Faulty) -> None:
    store = small_parts(proxied.store(streams=8))
    got = bytearray()
    try:
        async with store.reading(KEY, 0, len(LOG), read_size=READ) as reading:
            reader = reading.source
            assert isinstance(reader, ParallelReader)
            while chunk := await slowly(reader, READ):
                got += chunk
                assert reader.held <= READ
                assert store.read_ahead.used == 0
            assert reader.peak_held <= READ
            assert reader.peak_in_flight == 1
    finally:
        await store.aclose()
    assert sha(bytes(got)) == sha(LOG)


async def test_a_consumer_that_turns_slow_gives_its_read_ahead_back(proxied: Faulty) -> None:
    store = small_parts(proxied.store(streams=8))
    got = bytearray()
    try:
        async with store.reading(KEY, 0, len(LOG), read_size=READ) as reading:
            reader = reading.source
            assert isinstance(reader, ParallelReader)
            while len(got) < 2 * MiB or not reader.allowance:  # fast: it waits on the store
                chunk = await reader.read(READ)
                assert chunk, "the read-ahead never grew"
                got += chunk
            grown = reader.allowance
            while chunk := await slowly(reader, READ):
                got += chunk
                assert reader.held <= READ + reader.allowance <= READ + grown
                assert store.read_ahead.used == reader.allowance
            assert reader.peak_held <= READ + reader.peak_allowance
    finally:
        await store.aclose()
    assert sha(bytes(got)) == sha(LOG)
    assert store.read_ahead.used == 0
