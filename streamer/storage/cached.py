"""Ranged reads of one object, counted, with the last few blocks kept for reuse.

A Get Logs page reads the same region more than once (a probe, then the lines around
it): `CachedReader` answers those from the blocks it already holds, so that a page costs
about the ranged requests its bytes need. `RangedLog` is what a page walks over: this
reader, or a local copy of a log that has no random access in the store (gzip).
"""

from __future__ import annotations

from typing import Protocol

from .store import Store

CACHED_BLOCKS = 4


class RangedLog(Protocol):
    """Bytes of one log at any offset, and what reading them cost."""

    size: int
    reads: int
    bytes_read: int

    async def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the log (fewer only at its end)."""
        ...

    def cached_end(self, start: int) -> int | None:
        """Where bytes at hand that hold offset `start` end, if any are."""
        ...


class CachedReader:
    """RangedLog reads of `key` through `Store.open`, the last few blocks kept for reuse."""

    def __init__(self, store: Store, key: str, size: int) -> None:
        self.store, self.key, self.size = store, key, size
        self.reads = 0
        self.bytes_read = 0
        self._cache: list[tuple[int, bytes]] = []

    async def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object (fewer only at its end)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        for first, data in self._cache:
            last = first + len(data)
            if first <= start and end <= last:
                return data[start - first : end - first]
            if first <= start < last:
                return data[start - first :] + await self._fetch(last, end)
            if first < end <= last:
                return await self._fetch(start, first) + data[: end - first]
        return await self._fetch(start, end)

    def cached_end(self, start: int) -> int | None:
        """Where the kept block that holds offset `start` ends, if one does."""
        for first, data in self._cache:
            if first <= start < first + len(data):
                return first + len(data)
        return None

    async def _fetch(self, start: int, end: int) -> bytes:
        reader = await self.store.open(self.key, start, end)
        parts: list[bytes] = []
        got = 0
        try:
            while got < end - start and (data := await reader.read(end - start - got)):
                parts.append(data)
                got += len(data)
        finally:
            await reader.aclose()
        data = b"".join(parts)
        self.reads += 1
        self.bytes_read += len(data)
        self._cache = [(start, data), *self._cache[: CACHED_BLOCKS - 1]]
        return data
