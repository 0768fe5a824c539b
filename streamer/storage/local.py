"""Local and memory stores: called inline, their reads come from the page cache or RAM.

A thread hop per chunk would cost more than the read (docs/design.md#reading-a-local-store).
A local file is opened with the built-in `open`: fsspec's file object adds a Python layer
to every call, paid per request, for nothing a plain file lacks.
"""

from __future__ import annotations

from typing import Any

from .readers import ObjectReader, Ranged


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
