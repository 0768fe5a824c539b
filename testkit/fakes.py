"""A backend for tests, as httpx's `MockTransport` is a transport: it passes every call to a
real backend (by default an in-memory one) and records it, and can be told to fail or to
hold. Tests hand `SpyBackend.store` to the code under test instead of subclassing `Store`.
"""

from __future__ import annotations

import os
import time
import uuid

import anyio
import anyio.lowlevel
import fsspec

from streamer.storage import Backend, ObjectInfo, ObjectReader, Store
from streamer.storage.local import LocalBackend


class SpyReader:
    """A reader that counts its reads, bytes and closes (the first `aclose`) on its backend."""

    def __init__(self, reader: ObjectReader, spy: SpyBackend) -> None:
        self._reader, self._spy = reader, spy
        self._closed = False
        self._reads = 0

    async def read(self, size: int) -> bytes:
        if self._spy.break_after is not None and self._reads >= self._spy.break_after:
            raise ConnectionResetError("store went away")
        data = await self._reader.read(size)
        self._reads += 1
        self._spy.reads += 1
        self._spy.bytes_read += len(data)
        return data

    async def aclose(self) -> None:
        if not self._closed:  # a second call (its other owner's) closes nothing
            self._closed = True
            self._spy.closed += 1
        await self._reader.aclose()


class SpyBackend:
    """The backend of `url` (default: a fresh memory store), its calls recorded.

    `calls` lists (operation, key) of every info, read_bytes, open, list_versions and ping;
    `opens` the spans opened. `fail[key]` fails the next call naming that key;
    `fail_listing` fails every listing while set; `listing_gate`, while set, holds every
    listing until the event is set; `versions_known = False` hides the listed versions;
    `short_by` ends every open with a known end that many bytes early (an object shorter
    than its size said); `break_after` makes every reader fail with ConnectionResetError
    after that many reads (the store went away mid-stream).
    """

    def __init__(self, url: str | None = None) -> None:
        url = url or f"memory://spy-{uuid.uuid4().hex}"
        self.inner: Backend = Store.from_url(url).backend
        self.calls: list[tuple[str, str]] = []
        self.opens: list[tuple[str, int, int | None]] = []
        self.reads = self.bytes_read = self.closed = 0
        self.in_flight = self.max_in_flight = 0
        self.fail: dict[str, BaseException] = {}
        self.fail_listing: BaseException | None = None
        self.listing_gate: anyio.Event | None = None
        self.versions_known = True
        self.short_by = 0
        self.break_after: int | None = None
        scheme, _, rest = url.partition("://") if "://" in url else ("file", "", url)
        # Remote stores are written through a blocking filesystem of their own.
        self._writer = fsspec.filesystem(scheme, skip_instance_cache=True)
        self._local = isinstance(self.inner, LocalBackend)
        self._root = {"file": os.path.abspath(rest), "memory": "/" + rest.strip("/")}.get(
            scheme, rest.strip("/")
        )
        self.store = Store(self)

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def reads_inline(self) -> bool:
        return self.inner.reads_inline

    @property
    def parallel(self) -> bool:
        return self.inner.parallel

    async def _enter(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        # Yield so that concurrent calls, if the caller makes them, overlap here.
        await anyio.lowlevel.checkpoint()
        if key in self.fail:
            raise self.fail.pop(key)

    async def info(self, key: str) -> ObjectInfo | None:
        await self._enter("info", key)
        return await self.inner.info(key)

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        self.opens.append((key, start, end))
        await self._enter("open", key)
        if end is not None:
            end -= self.short_by
        return SpyReader(await self.inner.open(key, start, end, pin), self)

    async def read_bytes(self, key: str) -> bytes:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._enter("read_bytes", key)
            return await self.inner.read_bytes(key)
        finally:
            self.in_flight -= 1

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        self.calls.append(("list_versions", prefix))
        if self.listing_gate is not None:
            await self.listing_gate.wait()
        if self.fail_listing is not None:
            raise self.fail_listing
        found = await self.inner.list_versions(prefix)
        return found if self.versions_known else dict.fromkeys(found)

    async def part_size(self, key: str) -> int | None:
        return await self.inner.part_size(key)

    async def ping(self) -> None:
        self.calls.append(("ping", ""))
        await self.inner.ping()

    def unavailable(self, exc: Exception) -> bool:
        return self.inner.unavailable(exc)

    async def aclose(self) -> None:
        await self.inner.aclose()

    # --- what a test asks of it -----------------------------------------------------------

    def ops(self, operation: str, suffix: str = "") -> list[str]:
        return [key for op, key in self.calls if op == operation and key.endswith(suffix)]

    def reads_of(self, suffix: str) -> list[str]:
        """The keys read whole (read_bytes) that end with `suffix`."""
        return self.ops("read_bytes", suffix)

    def listings(self) -> list[str]:
        return self.ops("list_versions")

    def path(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{key}"

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if self._local:
            self._writer.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._writer.pipe_file(path, data)

    def remove(self, key: str) -> None:
        self._writer.rm(self.path(key))

    def exists(self, key: str) -> bool:
        return bool(self._writer.exists(self.path(key)))

    def remove_all(self) -> None:
        if self._writer.exists(self._root):
            self._writer.rm(self._root, recursive=True)

    def settle(self) -> None:
        """Date the local files written in the last minute an hour back, as if written long
        ago (a file written in the last seconds has no trusted version: it is read at every
        refresh)."""
        if self._local:
            now = time.time_ns()
            for path in self._writer.find(self._root):
                if os.stat(path).st_mtime_ns > now - 60 * 10**9:
                    os.utime(path, ns=(now - 3600 * 10**9,) * 2)
