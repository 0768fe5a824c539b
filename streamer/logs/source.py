"""A log made ready for ranged reads: the store's object, or a local copy of it.

A gzip log has no random access: it is inflated from its start into a spooled temporary
file first. A store that gives no size is copied the same way, without the inflating.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

from ..catalog import LogObject
from ..storage import CachedReader, Ranged, Store

SCAN_BLOCK = 1 << 20
_SPOOL = 8 << 20


class SpooledLog:
    """A gzip log, inflated once from its start; then read at any offset."""

    def __init__(self, store: Store, key: str, file: IO[bytes], size: int, raw: int) -> None:
        self.size = size
        self._file = file
        self.reads, self.bytes_read = 1, raw

    async def read(self, start: int, end: int) -> bytes:
        self._file.seek(start)
        return self._file.read(end - start)

    def cached_end(self, start: int) -> int | None:
        return None

    def close(self) -> None:
        self._file.close()


@asynccontextmanager
async def open_log(store: Store, log: LogObject) -> AsyncIterator[Ranged]:
    """The log of `log`, ready for ranged reads. FileNotFoundError when it is gone."""
    if not log.gzip and log.info.size is not None:
        yield CachedReader(store, log.key, log.info.size)
        return
    spooled = await _spool(store, log)
    try:
        yield spooled
    finally:
        spooled.close()


async def _spool(store: Store, log: LogObject) -> SpooledLog:
    if not log.gzip:
        # A store that gives no size: spooled like a gzip log, without the inflating.
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
        reader = await store.open(log.key)
        try:
            while data := await reader.read(SCAN_BLOCK):
                spool.write(data)
        finally:
            await reader.aclose()
        size = spool.tell()
        return SpooledLog(store, log.key, spool, size, size)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
    reader = await store.open(log.key, 0, log.info.size)
    inflate = zlib.decompressobj(wbits=31)
    raw = size = 0
    try:
        while data := await reader.read(SCAN_BLOCK):
            raw += len(data)
            while data:
                out = inflate.decompress(data, SCAN_BLOCK)
                size += spool.write(out)
                data = inflate.unconsumed_tail
                if inflate.eof and not data:
                    # A concatenated member starts in what is left over (gzip(1) does that).
                    data = inflate.unused_data
                    inflate = zlib.decompressobj(wbits=31)
    except BaseException:
        spool.close()
        raise
    finally:
        await reader.aclose()
    return SpooledLog(store, log.key, spool, size, raw)
