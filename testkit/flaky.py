"""Shared by the tests: moved from tests/test_retry.py."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.storage import RetryingReader

DATA = bytes(range(256)) * 64


@dataclass
class Counts:
    retries: int = 0


class Flaky:
    """Opens readers of DATA at an offset; each breaks after `break_after` bytes, `breaks` times."""

    def __init__(self, break_after: int, breaks: int, error: Exception | None = None) -> None:
        self.break_after, self.breaks = break_after, breaks
        self.error = error or ConnectionResetError("reset by peer")
        self.offsets: list[int] = []
        self.closed = 0

    async def open_at(self, offset: int) -> Reader:
        self.offsets.append(offset)
        return Reader(self, offset)


class Reader:
    def __init__(self, source: Flaky, offset: int) -> None:
        self.source, self.position, self.sent = source, offset, 0

    async def read(self, size: int) -> bytes:
        source = self.source
        if source.breaks and self.sent >= source.break_after:
            source.breaks -= 1
            raise source.error
        data = DATA[self.position : self.position + min(size, 1000)]
        self.position += len(data)
        self.sent += len(data)
        return data

    async def aclose(self) -> None:
        self.source.closed += 1


async def read_all(reader: RetryingReader, size: int = 4096) -> bytes:
    parts = []
    while chunk := await reader.read(size):
        parts.append(chunk)
    await reader.aclose()
    return b"".join(parts)
