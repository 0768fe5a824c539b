"""fsspec's in-memory store, read inline: for demos and tests.

Each write makes a new object, so a version is its creation time and size. Readers slice
the object: fsspec's memory filesystem hands every opener the same file object, so
readers that shared it would move each other's position.
"""

from __future__ import annotations

from typing import Any

import fsspec

from .readers import ObjectInfo, ObjectReader, Ranged


class MemoryBackend:
    """Objects below a folder of fsspec's process-wide memory filesystem."""

    reads_inline, parallel = True, False

    def __init__(self, root: str, url: str) -> None:
        self.fs: Any = fsspec.filesystem("memory")
        self.root, self.url = "/" + root.strip("/"), url

    @classmethod
    def from_url(cls, url: str, rest: str, connections: int | None) -> MemoryBackend:
        return cls(rest, url)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            raw = self.fs.info(self.path(key))
        except FileNotFoundError:
            return None
        if raw.get("type") == "directory":
            return None
        version = f"{raw.get('created')}:{raw.get('size')}"
        return ObjectInfo(size=raw.get("size"), etag=version, modified=None)

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        path = self.path(key)
        self.fs.info(path)  # FileNotFoundError now, not at the first read

        async def cat(first: int, stop: int) -> bytes:
            data: bytes = self.fs.cat_file(path, first, stop)
            return data

        return Ranged(cat, start, end)

    async def read_bytes(self, key: str) -> bytes:
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        base = f"{self.root}/"
        found = self.fs.find(self.path(prefix), detail=True)
        return {
            path.removeprefix(base): f"{info.get('created')}:{info.get('size')}"
            for path, info in found.items()
        }

    async def part_size(self, key: str) -> int | None:
        return None

    async def ping(self) -> None:
        pass  # the process's own memory: always there, if empty

    def unavailable(self, exc: Exception) -> bool:
        return False

    async def aclose(self) -> None:
        pass
