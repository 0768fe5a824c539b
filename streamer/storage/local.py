"""Local and memory stores: called inline, their reads come from the page cache or RAM.

A thread hop per chunk would cost more than the read (NOTES.md). A local file is opened
with the built-in `open`: fsspec's file object adds a Python layer to every call, paid
per request, for nothing a plain file lacks.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from typing import Any

from .readers import ObjectInfo, ObjectReader, Ranged


def file_version(st: os.stat_result) -> str:
    """A local file's version: inode, ctime, mtime and size. mtime and size alone miss a file
    replaced by other bytes of the same size whose mtime was restored (`os.utime`, rsync -t);
    the replacement has another inode or, rewritten in place, a later ctime, which no
    caller can set."""
    return f"{st.st_ino}:{st.st_ctime_ns}:{st.st_mtime_ns}:{st.st_size}"


def local_info(path: str) -> ObjectInfo | None:
    """Size and version of a local file; None when it does not exist or is a folder."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
    return ObjectInfo(size=st.st_size, etag=file_version(st), modified=modified)


class FileReader:
    """A blocking local file object read inline, up to `end`."""

    def __init__(self, file: Any, start: int, end: int | None) -> None:
        self._file = file
        self._left = None if end is None else max(0, end - start)
        if start:
            file.seek(start)

    async def read(self, size: int) -> bytes:
        if self._left is None:
            data: bytes = self._file.read(size)
            return data
        data = self._file.read(min(size, self._left))
        self._left -= len(data)
        return data

    async def aclose(self) -> None:
        self._file.close()


def open_local(fs: Any, path: str, start: int, end: int | None) -> ObjectReader:
    return FileReader(open(path, "rb"), start, end)


def open_memory(fs: Any, path: str, start: int, end: int | None) -> ObjectReader:
    fs.info(path)  # FileNotFoundError now, not at the first read

    async def cat(first: int, stop: int) -> bytes:
        data: bytes = fs.cat_file(path, first, stop)
        return data

    return Ranged(cat, start, end)
