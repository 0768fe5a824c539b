"""The store: one backend, picked once by the URL's scheme, and the read strategy.

The rules this module keeps:
- The caller never asks which kind of store it holds. `Store.from_url` picks the backend
  (`BACKENDS`); every decision that depends on it (retries, shared lookups, parallel
  ranged reads, whether the pump reads ahead) is made here, from the backend's
  `reads_inline` and `parallel`.
- The store owns every reader it opens for a download (`reading`): it closes it at the end
  of the block, whoever else closed it before.
- Remote reads (not inline) resume after transient faults (`retry`), and concurrent
  lookups of one object are one request, never a stale one (`flights`).
- An error tells the truth. A missing object (`FileNotFoundError`) is one only while the
  root answers: the store checks it (`confirm_root`) before letting the error through,
  and raises `StoreUnreachable` if it does not. So are refused credentials or access, no
  connection and timeouts (`explain`), from any call and from every read of a reader the
  store opened. `info` answering None is left to its caller to confirm: a gzip log is
  found by a first miss.

A key is made of checked IDs (`models/<model_id>/runs/<run_id>/training.log`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from .azure import SCHEMES as AZURE_SCHEMES
from .azure import AzureBackend
from .backend import Backend, StoreUnreachable, first_line
from .flights import Flights
from .gcs import GcsBackend
from .local import LocalBackend
from .memory import MemoryBackend
from .parallel import GROW_AFTER, PART_SIZE, ParallelReader, ReadAhead, part_unit
from .readers import Empty, ObjectInfo, ObjectReader
from .retry import RetryingReader
from .s3 import S3Backend

_PING_TIMEOUT_S = 15
MiB = 1024 * 1024
READ_AHEAD = 256 * MiB  # the process-wide ceiling when none is given (STREAMER_READAHEAD_BYTES)
PARALLEL_MIN = 16 * MiB  # smaller spans are one GET
METADATA_CONNECTIONS = 32  # beside the downloads: the catalog's reads of run.json files
MAX_CONNECTIONS = 1024
# Errors that say the store does not work, whatever the backend (`Backend.unavailable`
# names its library's own).
_DOWN = (PermissionError, TimeoutError, ConnectionRefusedError)
T = TypeVar("T")

# The backend of each URL scheme, made by `(url, rest, connections)`: `rest` is the URL
# after "scheme://", `connections` the size of the client's pool, if it is to be set.
BackendFactory = Callable[[str, str, int | None], Backend]
BACKENDS: dict[str, BackendFactory] = {
    "file": LocalBackend.from_url,
    "local": LocalBackend.from_url,
    "memory": MemoryBackend.from_url,
    "s3": S3Backend.from_url,
    "s3a": S3Backend.from_url,
    "gs": GcsBackend.from_url,
    "gcs": GcsBackend.from_url,
    **dict.fromkeys(AZURE_SCHEMES, AzureBackend.from_url),
}


class Reading:
    """A reader the store opened, its errors explained (`Store.explain`), and whether the
    pump should read it one chunk ahead (a reader whose reads wait on the network and keep
    nothing ready of their own)."""

    def __init__(self, reader: ObjectReader, store: Store, *, ahead: bool) -> None:
        self._reader, self._store, self.ahead = reader, store, ahead

    @property
    def source(self) -> ObjectReader:
        """The reader read: a `ParallelReader` when the span is read in parts."""
        return self._reader

    async def read(self, size: int) -> bytes:
        try:
            return await self._reader.read(size)
        except Exception as exc:
            explained = await self._store.explain(exc)
            if explained is exc:
                raise
            raise explained from exc

    async def aclose(self) -> None:
        await self._reader.aclose()


class Store:
    """One backend, and how its objects are read."""

    def __init__(self, backend: Backend, *, read_ahead_bytes: int = READ_AHEAD) -> None:
        self.backend = backend
        # Bytes read ahead of the consumers by parallel reads, for the whole process; the
        # parts' size (whole multipart parts of the object's where the store tells them,
        # `part_unit`), the smallest span read in parts,
        # and the bytes a download sends before its parts may grow (storage.parallel).
        self.read_ahead = ReadAhead(read_ahead_bytes)
        self.part_size, self.parallel_min = PART_SIZE, PARALLEL_MIN
        self.grow_after = GROW_AFTER
        # Concurrent lookups of one remote object are one request, sent after each arrived;
        # so are concurrent checks of the root.
        self.lookups: Flights[str, ObjectInfo | None] = Flights()
        self._root_checks: Flights[None, None] = Flights()
        # Reopens after upstream faults during object reads, for metrics.
        self.retries = 0

    @classmethod
    def from_url(
        cls, url: str, *, streams: int | None = None, read_ahead_bytes: int = READ_AHEAD
    ) -> Store:
        """Open the store at `url` (a path, or `scheme://...`); call it inside the event
        loop that will use it.

        `streams` (concurrent downloads) sizes the S3 and GCS connection pools, unless the
        operator configured them: see `pool_size`.
        """
        scheme, _, rest = url.partition("://")
        if not rest:
            scheme, rest = "file", url
        make = BACKENDS.get(scheme)
        if make is None:
            raise StoreUnreachable(f"store {url!r}: no backend for {scheme}://")
        connections = None if streams is None else pool_size(streams, read_ahead_bytes)
        return cls(make(url, rest, connections), read_ahead_bytes=read_ahead_bytes)

    @property
    def url(self) -> str:
        return self.backend.url

    async def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        return await self._call(lambda: self.backend.read_bytes(key))

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Every object below `prefix` (a key ending in "/"), keyed relative to the root, with
        a version that changes with its content (None: unknown). Nothing found is an
        answer only while the root answers."""
        found = await self._call(lambda: self.backend.list_versions(prefix))
        if not found:
            await self.confirm_root()
        return found

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and version of an object; None when it does not exist (`confirm_root`
        before calling it purged).

        On a remote store, concurrent calls for one object share one request, and each is
        answered by a request sent after it was called (`flights`): a change made before a
        call is always seen by it.
        """
        if self.backend.reads_inline:
            return await self._call(lambda: self.backend.info(key))
        return await self._call(lambda: self.lookups.run(key, lambda: self.backend.info(key)))

    async def open(
        self, key: str, start: int = 0, end: int | None = None, pin: dict[str, str] | None = None
    ) -> Reading:
        """A reader of bytes [start, end) (to the object's end when `end` is None); the
        caller closes it.

        FileNotFoundError when the object is gone. Callers that know the size pass it as
        `end`, so that no store reads ahead of what will be sent. Readers opened with one
        `pin` read one version of a remote object, or raise `ObjectChanged`.
        """
        pinned: dict[str, str] = {} if pin is None else pin
        if self.backend.reads_inline:
            reader = await self._call(lambda: self.backend.open(key, start, end, pinned))
            return Reading(reader, self, ahead=False)
        return Reading(self._resuming(key, start, end, pinned), self, ahead=True)

    def _resuming(self, key: str, start: int, end: int | None, pin: dict[str, str]) -> ObjectReader:
        async def open_at(offset: int) -> ObjectReader:
            if end is not None and offset >= end:
                return Empty()
            return await self.backend.open(key, offset, end, pin)

        return RetryingReader(open_at, start, self)

    async def confirm_root(self) -> None:
        """Raise StoreUnreachable unless the root (bucket, container) is there and answers:
        only then is a missing object missing. Concurrent checks share one request."""
        await self._root_checks.run(None, self.ping)

    async def explain(self, exc: Exception) -> Exception:
        """`exc` as a caller should see it: StoreUnreachable when it says that the store
        itself does not work (a missing object whose root is missing too, refused
        credentials or access, no connection, a timeout); else `exc` itself."""
        if isinstance(exc, StoreUnreachable):
            return exc
        if isinstance(exc, FileNotFoundError):
            try:
                await self.confirm_root()
            except StoreUnreachable as gone:
                return gone
            return exc
        if isinstance(exc, _DOWN) or self.backend.unavailable(exc):
            return StoreUnreachable(f"store {self.url!r}: {first_line(exc)}")
        return exc

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except Exception as exc:
            explained = await self.explain(exc)
            if explained is exc:
                raise
            raise explained from exc

    @asynccontextmanager
    async def reading(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        read_size: int = MiB,
        buffer_chunks: int = 4,
    ) -> AsyncIterator[Reading]:
        """A download's reader of [start, end), closed at the end of the block.

        A span of `parallel_min` bytes or more of a backend that reads in parallel (`end`
        given) is read as parallel ranged GETs, whose parts live inside the block, aligned
        to the object's own parts where the backend tells them; they keep one read of
        `read_size` ready, so the pump reads them in turn with its sends. Below three
        chunks per stream (`buffer_chunks`) the stream's bound leaves no room for a part,
        and the span is one GET, which the pump reads one chunk ahead unless it is inline.
        """
        spans = end is not None and end - start >= self.parallel_min
        if not (self.backend.parallel and spans and buffer_chunks >= 3):
            reader = await self.open(key, start, end)
            try:
                yield reader
            finally:
                with anyio.CancelScope(shield=True):
                    await reader.aclose()
            return
        assert end is not None  # nosec B101: for mypy, `spans` holds
        pin: dict[str, str] = {}
        unit = part_unit(await self._call(lambda: self.backend.part_size(key)), self.part_size)
        parts = ParallelReader(
            lambda first, stop: self._resuming(key, first, stop, pin),
            start,
            end,
            self.read_ahead,
            read_size=read_size,
            unit=unit,
            grow_after=self.grow_after,
        )
        async with parts:
            yield Reading(parts, self, ahead=False)

    async def ping(self) -> None:
        """Raise StoreUnreachable unless the store answers and its root exists, within
        a timeout."""
        try:
            with anyio.fail_after(_PING_TIMEOUT_S):
                await self.backend.ping()
        except StoreUnreachable:
            raise
        except TimeoutError:
            raise StoreUnreachable(
                f"store {self.url!r} did not answer within {_PING_TIMEOUT_S} s"
            ) from None
        except Exception as exc:
            reason = first_line(exc)
            raise StoreUnreachable(f"store {self.url!r} cannot be listed: {reason}") from None

    async def aclose(self) -> None:
        await self.backend.aclose()


def pool_size(streams: int, read_ahead_bytes: int) -> int:
    """Connections to the store: one per download, one per part the read-ahead ceiling lets
    run ahead, and some for metadata, so that no download waits for a connection."""
    # A part holds at least half of PART_SIZE (`part_unit`, `part_bounds`), bar the last
    # one of a span.
    ahead = read_ahead_bytes // (PART_SIZE // 2)
    return min(MAX_CONNECTIONS, streams + ahead + METADATA_CONNECTIONS)
