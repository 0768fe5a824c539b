"""A store on the local disk, read inline: its reads come from the page cache.

A thread hop per chunk would cost more than the read (docs/design.md#reading-a-local-store).
A file is opened with the built-in `open` and looked at with `os.stat`: fsspec's layer adds
a Python call to every read, paid per request, for nothing a plain file lacks.

A file's version is its inode, ctime, mtime and size (`file_version`). mtime and size
alone miss a file replaced by other bytes of the same size whose mtime was restored
(`os.utime`, `rsync -t`): the replacement has another inode or, rewritten in place, a
later ctime, which no caller can set.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime
from typing import IO

from .backend import StoreUnreachable
from .readers import ObjectInfo, ObjectReader

# A file modified this recently may be rewritten within the same timestamp tick
# (filesystems stamp with a coarse clock) and keep its mtime and size: its listed version
# is unknown until it is older ("racy git"). 2 s covers the coarsest common filesystems.
_RACY_NS = 2_000_000_000


class FileReader:
    """A blocking local file object read inline, up to `end`."""

    def __init__(self, file: IO[bytes], start: int, end: int | None) -> None:
        self._file = file
        self._left = None if end is None else max(0, end - start)
        if start:
            file.seek(start)

    async def read(self, size: int) -> bytes:
        if self._left is None:
            return self._file.read(size)
        data = self._file.read(min(size, self._left))
        self._left -= len(data)
        return data

    async def aclose(self) -> None:
        self._file.close()


def file_version(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_ctime_ns}:{st.st_mtime_ns}:{st.st_size}"


class LocalBackend:
    """Files below a folder."""

    reads_inline, parallel = True, False

    def __init__(self, root: str, url: str) -> None:
        self.root, self.url = os.path.abspath(root), url

    @classmethod
    def from_url(cls, url: str, rest: str, connections: int | None) -> LocalBackend:
        return cls(rest, url)

    def path(self, key: str) -> str:
        return os.path.join(self.root, key)

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        return ObjectInfo(size=st.st_size, etag=file_version(st), modified=modified)

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        return FileReader(_open(self.path(key)), start, end)

    async def read_bytes(self, key: str) -> bytes:
        with _open(self.path(key)) as file:
            return file.read()

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Files below `prefix`, walked with `os.scandir`."""
        found: dict[str, str | None] = {}
        racy_after = time.time_ns() - _RACY_NS
        pending = [prefix.rstrip("/")]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(os.path.join(self.root, folder)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = f"{folder}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    pending.append(key)
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                except OSError:  # a symlink loop, say: unknown, and the read will tell
                    found[key] = None
                    continue
                found[key] = None if st.st_mtime_ns > racy_after else file_version(st)
        return found

    async def part_size(self, key: str) -> int | None:
        return None

    async def ping(self) -> None:
        if not _is_dir(self.root):
            raise StoreUnreachable(f"store root {self.url!r} is not a directory")

    def unavailable(self, exc: Exception) -> bool:
        return False

    async def aclose(self) -> None:
        pass


# Inline by design (above): plain calls, so that the linter's rule against blocking calls
# in coroutines keeps guarding the rest of the code.
def _open(path: str) -> IO[bytes]:
    return open(path, "rb")


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)
