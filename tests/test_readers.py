"""BodyReader over pieces as a socket brings them: the same bytes whatever the cuts."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.storage.readers import BodyReader


class Pieces:
    """A body of `pieces`, handed out one per `readchunk` like aiohttp's StreamReader;
    `chunk_ends` marks, after a piece, the end of an HTTP chunk (an empty piece)."""

    def __init__(
        self, pieces: list[bytes], chunk_ends: frozenset[int] | set[int] = frozenset()
    ) -> None:
        self._queue: list[tuple[bytes, bool]] = []
        for index, piece in enumerate(pieces):
            self._queue.append((piece, False))
            if index in chunk_ends:
                self._queue.append((b"", True))
        self.closed = False

    async def readchunk(self) -> tuple[bytes, bool]:
        await anyio.lowlevel.checkpoint()
        return self._queue.pop(0) if self._queue else (b"", False)

    def close(self) -> None:
        self.closed = True


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        pieces.append(data[at : at + size])
        at += size
    if at < len(data):
        pieces.append(data[at:])
    return pieces


@given(
    data=st.binary(min_size=0, max_size=3000),
    sizes=st.lists(st.integers(1, 700), max_size=20),
    ends=st.sets(st.integers(0, 25)),
    read_size=st.integers(1, 1200),
)
def test_reads_are_full_and_the_bytes_identical_whatever_the_pieces(
    data: bytes, sizes: list[int], ends: set[int], read_size: int
) -> None:
    async def main() -> list[bytes]:
        body = Pieces(cut(data, sizes), ends)
        reader = BodyReader(body, body.close)
        reads = []
        while chunk := await reader.read(read_size):
            reads.append(chunk)
        assert await reader.read(read_size) == b""
        await reader.aclose()
        assert body.closed
        return reads

    reads = anyio.run(main)
    assert b"".join(reads) == data
    assert all(len(chunk) == read_size for chunk in reads[:-1])  # every read but the last full
    assert all(isinstance(chunk, bytes) for chunk in reads)


@pytest.mark.parametrize("sizes", [[1] * 50, [7, 1, 30], [100]])
def test_read_all_after_reads_gives_the_rest(sizes: list[int]) -> None:
    data = bytes(range(100))

    async def main() -> tuple[bytes, bytes]:
        body = Pieces(cut(data, sizes), {0, 2})
        reader = BodyReader(body, body.close)
        return await reader.read(13), await reader.read_all()

    first, rest = anyio.run(main)
    assert first + rest == data and len(first) == 13


def test_a_piece_that_fills_a_read_is_handed_on_as_it_came() -> None:
    piece = b"x" * 64

    async def main() -> bytes:
        body = Pieces([piece, b"y"])
        return await BodyReader(body, body.close).read(64)

    assert anyio.run(main) is piece  # not copied
