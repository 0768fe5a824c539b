"""Local copies of logs that have no random access in the store, shared by pages.

The rules this module keeps:
- One copy per version of an object (key, ETag, size, modified), made once and shared:
  the pages of a gzip log do not inflate it again; pages that ask while it is being
  made wait for it. A store that tells none of these gets a copy per page.
- The copies live in one temporary folder of this process, removed on `close` (the
  service's shutdown) or when the object goes, and, with the copy being made,
  never exceed `disk_bytes` (by default a tenth of the temp folder's free space): the
  least recently used copies that no page is reading are removed first; when that is not
  enough, the page is refused (503 `overloaded`) and what it wrote is removed.
- Inflating runs in a worker thread, a slice of at most `SLICE` bytes of output per call:
  the event loop serves others between slices, and a cancelled page stops within one.
- A copy is read with `pread` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime

import anyio

from ..budget import CODING_STATE
from ..catalog import LogObject
from ..errors import Overloaded
from ..storage import Store

SLICE = 4 << 20
_READ = 1 << 20
_PIECE = 1 << 20
# What making a copy holds at once: a read of the store and its unconsumed tail, a piece
# of output, zlib's state.
INFLATE_BYTES = 2 * _READ + _PIECE + CODING_STATE

_Key = tuple[str, str | None, int | None, datetime | None]


@dataclass
class _Copy:
    path: str
    size: int = 0
    users: int = 0
    ready: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False


class CopyFile:
    """A finished copy, read at any offset (the `RangedLog` of a page)."""

    def __init__(self, fd: int, size: int, reads: int, bytes_read: int) -> None:
        self._fd, self.size = fd, size
        self.reads, self.bytes_read = reads, bytes_read

    async def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if end <= start:
            return b""
        return await anyio.to_thread.run_sync(os.pread, self._fd, end - start, start)

    def cached_end(self, start: int) -> int | None:
        return None


class _Inflater:
    """gzip (all members, as gzip(1) writes them) or plain bytes, appended to a file."""

    def __init__(self, fd: int, gzip: bool) -> None:
        self.fd, self.gzip = fd, gzip
        self.pending = b""
        self._inflate = zlib.decompressobj(wbits=31)
        self._between_members = False

    @property
    def complete(self) -> bool:
        """Whether what was fed ends where a gzip member does (plain bytes always do)."""
        return not self.gzip or self._between_members

    def slice(self) -> int:
        """Write up to `SLICE` bytes of output of `pending`; the bytes written."""
        written = 0
        while self.pending and written < SLICE:
            out = self.pending
            self.pending = b""
            if self.gzip:
                inflate = self._inflate
                out = inflate.decompress(out, _PIECE)
                self.pending = inflate.unconsumed_tail
                self._between_members = inflate.eof and not self.pending
                if self._between_members:
                    # A concatenated member starts in what is left over (gzip(1) does that).
                    self.pending = inflate.unused_data
                    self._inflate = zlib.decompressobj(wbits=31)
            view = memoryview(out)
            while view:
                view = view[os.write(self.fd, view) :]
            written += len(out)
        return written


def _inflate_slice(state: _Inflater) -> int:
    """`state.slice()`, in a worker thread."""
    return state.slice()


class InflatedLogs:
    """The shared local copies of one process, within a disk bound."""

    def __init__(self, disk_bytes: int | None = None) -> None:
        self.folder = tempfile.mkdtemp(prefix="streamer-logs-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        if disk_bytes is None:
            disk_bytes = shutil.disk_usage(self.folder).free // 10
        self.disk_bytes = disk_bytes
        self.used = 0
        self.inflations = 0
        self._copies: OrderedDict[_Key, _Copy] = OrderedDict()

    def close(self) -> None:
        """Remove the folder and every copy in it (a page still reading one keeps its
        descriptor until it ends)."""
        self._copies.clear()
        self.used = 0
        self._remove()

    @asynccontextmanager
    async def open(self, store: Store, log: LogObject) -> AsyncIterator[CopyFile]:
        """The copy of `log`, made if need be; kept from eviction while in use."""
        info = log.info
        key = (log.key, info.etag, info.size, info.modified)
        # A store that tells nothing of the version: the copy serves this page alone.
        shared = key[1:] != (None, None, None)
        reads = bytes_read = 0
        while True:
            copy = self._copies.get(key) if shared else None
            if copy is None:
                self._drop_versions(log.key)
                copy = _Copy(os.path.join(self.folder, f"{self.inflations}"))
                if shared:
                    self._copies[key] = copy
                self.inflations += 1
                copy.users += 1
                try:
                    reads, bytes_read = await self._make(store, log, copy)
                except BaseException:
                    copy.users -= 1
                    self._drop(key, copy)
                    raise
                break
            copy.users += 1
            self._copies.move_to_end(key)
            await copy.ready.wait()
            if copy.ok:
                break
            copy.users -= 1  # the page that made it failed: try again
        try:
            fd = os.open(copy.path, os.O_RDONLY)
            try:
                yield CopyFile(fd, copy.size, reads, bytes_read)
            finally:
                os.close(fd)
        finally:
            copy.users -= 1
            if not shared:
                self._drop(key, copy)

    async def _make(self, store: Store, log: LogObject, copy: _Copy) -> tuple[int, int]:
        fd = os.open(copy.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        state = _Inflater(fd, log.gzip)
        raw = 0
        try:
            reader = await store.open(log.key, 0, log.info.size)
            try:
                while data := await reader.read(_READ):
                    raw += len(data)
                    state.pending = data
                    while state.pending:
                        self._reserve(copy)
                        written = 0
                        try:
                            written = await anyio.to_thread.run_sync(_inflate_slice, state)
                        finally:
                            copy.size += written
                            self.used += written - SLICE
            finally:
                await reader.aclose()
        finally:
            os.close(fd)
        if not state.complete:
            raise zlib.error("truncated gzip stream")
        copy.ok = True
        copy.ready.set()
        return 1, raw

    def _reserve(self, making: _Copy) -> None:
        """Room for one more slice, made by removing copies no page reads; else 503."""
        for key, copy in list(self._copies.items()):
            if self.used + SLICE <= self.disk_bytes:
                break
            if copy is not making and copy.users == 0 and copy.ok:
                self._drop(key, copy)
        if self.used + SLICE > self.disk_bytes:
            error = Overloaded(5)
            error.detail = "The disk allowed for inflating logs is in use; retry shortly."
            raise error
        self.used += SLICE

    def _drop_versions(self, name: str) -> None:
        """Copies of other versions of the object `name` that no page reads: replaced."""
        for key, copy in list(self._copies.items()):
            if key[0] == name and copy.users == 0 and copy.ok:
                self._drop(key, copy)

    def _drop(self, key: _Key, copy: _Copy) -> None:
        if self._copies.get(key) is copy:
            del self._copies[key]
        self.used -= copy.size
        copy.ready.set()
        # A page still reading it holds its descriptor: the bytes go when it closes.
        with suppress(FileNotFoundError):
            os.unlink(copy.path)
