"""A fake source of parallel reads (`Source`, its `Body`), a reader over it, and data whose
every span shows where it came from: shared by the parallel-read tests."""

from __future__ import annotations

import anyio
from anyio.lowlevel import checkpoint

from streamer.storage import ParallelReader, ReadAhead

KiB, MiB = 1024, 1024 * 1024


def pattern(size: int) -> bytes:
    """Bytes whose every 4 KiB differs from its neighbours (a misplaced span shows)."""
    block = bytes(range(256)) * 16
    return b"".join(i.to_bytes(4, "big") + block[4:] for i in range(-(-size // len(block))))[:size]


class Source:
    """Opens bodies of `data`; counts opens, reads and closes; `delivered` is set (and
    replaced) whenever a body returns bytes."""

    def __init__(
        self, data: bytes, *, fail: Exception | None = None, fail_at: int = -1, turns: int = 1
    ) -> None:
        self.data, self.fail, self.fail_at, self.turns = data, fail, fail_at, turns
        self.opened: list[tuple[int, int]] = []
        self.reads = 0
        self.closed = 0
        self.delivered = anyio.Event()

    def open_part(self, start: int, end: int) -> Body:
        self.opened.append((start, end))
        return Body(self, start, end)


class Body:
    def __init__(self, source: Source, start: int, end: int) -> None:
        self.source, self.position, self.end = source, start, end

    async def read(self, size: int) -> bytes:
        source = self.source
        for _ in range(source.turns):  # a store slower than a consumer that never waits
            await checkpoint()
        if source.fail is not None and self.position <= source.fail_at < self.end:
            raise source.fail
        data = source.data[self.position : min(self.position + size, self.end)]
        self.position += len(data)
        source.reads += 1
        source.delivered.set()
        source.delivered = anyio.Event()
        return data

    async def aclose(self) -> None:
        self.source.closed += 1


def reader(
    source: Source,
    start: int = 0,
    end: int | None = None,
    *,
    ceiling: ReadAhead | None = None,
    read_size: int = 64 * KiB,
    unit: int = 256 * KiB,
    grow_after: int = 1,
) -> ParallelReader:
    return ParallelReader(
        source.open_part,
        start,
        len(source.data) if end is None else end,
        ceiling or ReadAhead(64 * MiB),
        read_size=read_size,
        unit=unit,
        grow_after=grow_after,
    )
