"""Object readers: the one protocol every backend's reads keep, and the readers they share."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    size: int | None
    etag: str | None
    modified: datetime | None


class ObjectReader(Protocol):
    async def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        ...

    async def aclose(self) -> None:
        """Release what the reader holds; a second call does nothing."""
        ...


class Empty:
    """A reader of nothing: a span that starts at or past the end."""

    async def read(self, size: int) -> bytes:
        return b""

    async def aclose(self) -> None:
        pass


class Chunks(Protocol):
    """A response body as the socket brought it: aiohttp's `StreamReader`."""

    async def readchunk(self) -> tuple[bytes, bool]:
        """The next piece as received, not copied, and whether an HTTP chunk ends there;
        (b"", False) at the end of the body."""
        ...


class BodyReader:
    """One streamed HTTP response body, read in place.

    The socket brings pieces of whatever size the network gave (often 64 to 256 KiB);
    each read here is filled up to `size`, since every chunk costs the pump a send
    (docs/design.md#reading-s3-and-gcs). The pieces are taken as received and joined
    once: the HTTP client's own `read(n)` joins what it holds first, a second copy of
    every byte (py-spy: a tenth of a shaped S3 download's samples;
    bench/README.md#what-limits-what).
    """

    def __init__(self, body: Chunks, close: Callable[[], Any]) -> None:
        self._body, self._close = body, close
        self._rest: bytes | memoryview = b""  # received beyond the last read
        self._eof = False

    async def read(self, size: int) -> bytes:
        pieces: list[bytes | memoryview] = []
        got = 0
        data = self._rest
        while True:
            if got + len(data) > size:
                view = memoryview(data)
                pieces.append(view[: size - got])
                self._rest = view[size - got :]
                break
            if data:
                pieces.append(data)
                got += len(data)
            if got == size or self._eof:
                self._rest = b""
                break
            data, chunk_end = await self._body.readchunk()
            self._eof = not data and not chunk_end  # an HTTP chunk's end is no end
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)

    async def read_all(self) -> bytes:
        """The rest of the body, in one piece."""
        pieces = []
        while data := await self.read(1 << 20):
            pieces.append(data)
        return b"".join(pieces)

    async def aclose(self) -> None:
        self._close()


class Ranged:
    """Sequential ranged reads, [start, end), through `cat(start, stop)`.

    For the memory store too: fsspec's memory filesystem hands every opener the same file
    object, so readers that shared it would move each other's position; slices do not.
    """

    def __init__(
        self, cat: Callable[[int, int], Awaitable[bytes]], start: int, end: int | None
    ) -> None:
        self._cat, self._position, self._end = cat, start, end

    async def read(self, size: int) -> bytes:
        end = self._position + size if self._end is None else min(self._position + size, self._end)
        if end <= self._position:
            return b""
        data = await self._cat(self._position, end)
        self._position += len(data)
        return data

    async def aclose(self) -> None:
        pass


class GzipReader:
    """Decompresses a gzip reader on the fly; never holds more than `size` bytes of output."""

    def __init__(self, raw: ObjectReader, chunk_size: int) -> None:
        self._raw, self._chunk_size = raw, chunk_size
        self._inflate = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._eof = False

    async def read(self, size: int) -> bytes:
        while True:
            if self._pending:
                data = self._inflate.decompress(self._pending, size)
                self._pending = self._inflate.unconsumed_tail
            else:
                data = b""
            if data:
                return data
            if self._inflate.eof:
                # A concatenated gzip member starts in what is left over (gzip(1) does that).
                rest = self._inflate.unused_data
                if not rest:
                    rest = await self._raw.read(self._chunk_size)
                    if not rest:
                        return b""
                self._inflate = zlib.decompressobj(wbits=31)
                self._pending = rest
                continue
            if self._eof:
                raise zlib.error("truncated gzip stream")
            self._pending = await self._raw.read(self._chunk_size)
            self._eof = not self._pending

    async def aclose(self) -> None:
        await self._raw.aclose()


def http_range(start: int, end: int | None) -> str:
    """The `Range` header of bytes [start, end)."""
    return f"bytes={start}-{'' if end is None else end - 1}"
