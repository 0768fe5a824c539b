"""A real store that records its calls, for the catalog's and the auth layer's tests.

Rules: every call reaches the real store underneath (memory, local, S3 or GCS) unless a
failure is armed; writes go through a blocking twin of a remote filesystem.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import anyio.lowlevel
import fsspec

from streamer.storage import ObjectInfo, ObjectReader, Store


class SpyStore(Store):
    """A real store that records every call and how many reads overlap.

    `fail` fails the next read of a key; `fail_listing` fails every listing while set;
    `listing_gate`, while set, holds every listing until the event is set.
    """

    def __init__(self, fs: Any, root: str, url: str) -> None:
        super().__init__(fs, root, url)
        self.calls: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail: dict[str, BaseException] = {}
        self.fail_listing: BaseException | None = None
        self.listing_gate: anyio.Event | None = None
        # Remote stores are written through a blocking twin of their filesystem.
        self.writer = (
            fsspec.filesystem(self.kind, skip_instance_cache=True) if self.is_async else fs
        )

    def reads(self, suffix: str) -> list[str]:
        return [key for op, key in self.calls if op == "read_bytes" and key.endswith(suffix)]

    async def read_bytes(self, key: str) -> bytes:
        self.calls.append(("read_bytes", key))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # Yield so that concurrent reads, if the catalog issues them, overlap here.
            await anyio.lowlevel.checkpoint()
            if key in self.fail:
                raise self.fail.pop(key)
            return await super().read_bytes(key)
        finally:
            self.in_flight -= 1

    def opened(self, suffix: str) -> list[str]:
        return [key for op, key in self.calls if op == "open" and key.endswith(suffix)]

    async def open(self, key: str, start: int = 0, end: int | None = None) -> ObjectReader:
        self.calls.append(("open", key))
        return await super().open(key, start, end)

    def listings(self) -> list[str]:
        return [key for op, key in self.calls if op == "list_versions"]

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        self.calls.append(("list_versions", prefix))
        if self.listing_gate is not None:
            await self.listing_gate.wait()
        if self.fail_listing is not None:
            raise self.fail_listing
        return await super().list_versions(prefix)

    async def info(self, key: str) -> ObjectInfo | None:
        self.calls.append(("info", key))
        return await super().info(key)

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if not self.is_async:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.writer.pipe_file(path, data)

    def remove(self, key: str) -> None:
        self.writer.rm(self.path(key))

    def settle(self) -> None:
        """Date the local files written in the last minute an hour back, as if written long
        ago (a file written in the last seconds has no trusted version: it is read at every
        refresh)."""
        if self.kind == "other":
            now = time.time_ns()
            for path in self.fs.find(self.root):
                if os.stat(path).st_mtime_ns > now - 60 * 10**9:
                    os.utime(path, ns=(now - 3600 * 10**9,) * 2)
