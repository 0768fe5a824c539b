"""The store: an fsspec filesystem and a root, addressed by keys of validated IDs only.

This package is the only one that imports fsspec. A key is made of checked IDs
(`models/<model_id>/runs/<run_id>/training.log`). Local and memory stores are read inline
(`local`); S3 (`s3`) and GCS (`gcs`) through fsspec's async API on the server's own event
loop, each read of a log resumed after transient faults (`retry`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import fsspec
import fsspec.config
from fsspec.asyn import AsyncFileSystem

from .flights import Flights
from .gcs import info_gcs, open_gcs, ping_gcs
from .listing import RemoteLister, close_session, list_local, list_memory
from .local import local_info, open_local, open_memory
from .parallel import GROW_AFTER, PART_SIZE, ParallelReader, ReadAhead, part_unit
from .readers import ClosesOnce, Empty, ObjectInfo, ObjectReader, Ranged
from .retry import RetryingReader
from .s3 import info_s3, open_s3, ping_s3, read_s3, s3_part_size

_PING_TIMEOUT_S = 15
MiB = 1024 * 1024
READ_AHEAD = 256 * MiB  # the process-wide ceiling when none is given (STREAMER_READAHEAD_BYTES)
PARALLEL_MIN = 16 * MiB  # smaller spans are one GET
METADATA_CONNECTIONS = 32  # beside the downloads: the catalog's reads of run.json files
MAX_CONNECTIONS = 1024
PART_SIZES_KEPT = 4096


class StoreUnreachable(Exception):
    """The store root cannot be listed; the message is one line for the operator."""


async def open_ranged(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> ObjectReader:
    """Sequential ranged reads through any async filesystem's `_cat_file`."""

    async def cat(first: int, stop: int) -> bytes:
        data: bytes = await fs._cat_file(path, start=first, end=stop)
        return data

    return Ranged(cat, start, end)


class Store:
    """An fsspec filesystem and a root path inside it."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs, self.root, self.url = fs, root.rstrip("/"), url
        # Bytes read ahead of the consumers by parallel reads, for the whole process; the
        # parts' size (whole multipart parts of the object's where the store tells them,
        # `part_unit`), the smallest span read in parts,
        # and the bytes a download sends before its parts may grow (storage.parallel).
        self.read_ahead = ReadAhead(READ_AHEAD)
        self.part_size, self.parallel_min = PART_SIZE, PARALLEL_MIN
        self.grow_after = GROW_AFTER
        self._part_sizes: dict[str, int] = {}  # S3 path -> its multipart part size
        # Concurrent lookups of one remote object are one request, sent after each arrived.
        self.lookups: Flights[str, dict[str, Any] | None] = Flights()
        self.is_async = isinstance(fs, AsyncFileSystem)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        self.kind = next((kind for kind in ("s3", "gs", "memory") if kind in protocols), "other")
        self._protocols = protocols
        self._lister = RemoteLister(fs, self.kind) if self.kind in ("s3", "gs") else None
        # Upstream faults during object reads, for metrics: every failed read or open of a
        # remote object counts as an error; every reopen after one counts as a retry.
        self.retries = 0
        self.upstream_errors = 0

    @classmethod
    def from_url(
        cls, url: str, *, streams: int | None = None, read_ahead_bytes: int = READ_AHEAD
    ) -> Store:
        """Open the store at `url`; call it inside the event loop that will use it.

        `streams` (concurrent downloads) sizes the S3 and GCS connection pools, unless the
        operator configured them: see `pool_size`.
        """
        protocol, _, rest = url.partition("://")
        if not rest:
            protocol, rest = "file", url
        if protocol in ("file", "local"):
            store = cls(fsspec.filesystem("file"), os.path.abspath(rest), url)
        elif protocol == "memory":
            store = cls(fsspec.filesystem("memory"), "/" + rest.strip("/"), url)
        else:
            connections = None if streams is None else pool_size(streams, read_ahead_bytes)
            store = cls(_remote_fs(url, protocol, connections), rest, url)
        store.read_ahead = ReadAhead(read_ahead_bytes)
        return store

    @property
    def reads_inline(self) -> bool:
        """Reads of this store run on the event loop without waiting (a local file, memory)."""
        return not self.is_async

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    async def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        path = self.path(key)
        if self.kind == "s3":
            return await read_s3(self.fs, path)
        if self.is_async:
            data: bytes = await self.fs._cat_file(path)
        else:
            data = self.fs.cat_file(path)
        return data

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Every object below `prefix` (a key ending in "/"), keyed relative to the root, with
        a version that changes with its content (None: unknown). One paginated listing; on
        S3 and GCS it runs off the event loop (`RemoteLister`)."""
        if self._lister is not None:
            bucket, _, base = self.root.partition("/")
            base = base + "/" if base else ""
            listed = await self._lister.list(bucket, base + prefix)
            return {key.removeprefix(base): version for key, version in listed.items()}
        if self.kind == "memory":
            return list_memory(self.fs, self.root, prefix)
        if not self.is_async and "file" in self._protocols:
            return list_local(self.root, prefix)
        path = self.path(prefix)
        try:
            if self.is_async:
                found = await self.fs._find(path, detail=True)
            else:
                found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        base = self.path("")
        return {name.removeprefix(base): _etag(raw) for name, raw in found.items()}

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and version of an object; None when it does not exist.

        On a remote store, concurrent calls for one object share one request (one HeadObject
        on S3, one object GET on GCS), and each is answered by a request sent after it was
        called (`flights`): a change made before a call is always seen by it.
        """
        path = self.path(key)
        if self.is_async:
            raw = await self.lookups.run(path, lambda: self._info_remote(path))
        elif "file" in self._protocols:
            return local_info(path)
        else:
            try:
                raw = self.fs.info(path)
            except FileNotFoundError:
                return None
        if raw is None or raw.get("type") == "directory":
            return None
        return ObjectInfo(size=raw.get("size"), etag=_etag(raw), modified=_modified(raw))

    async def _info_remote(self, path: str) -> dict[str, Any] | None:
        """One request on S3 and GCS: a log is an object, never a folder."""
        lookup = {"s3": info_s3, "gs": info_gcs}.get(self.kind)
        try:
            if lookup is not None:
                return await lookup(self.fs, path)
            raw: dict[str, Any] = await self.fs._info(path)
        except FileNotFoundError:
            return None
        return raw

    async def open(self, key: str, start: int = 0, end: int | None = None) -> ObjectReader:
        """A reader of bytes [start, end) (to the object's end when `end` is None).

        FileNotFoundError when the object is gone. Callers that know the size pass it as
        `end`, so that no store reads ahead of what will be sent.
        """
        path = self.path(key)
        if self.kind == "memory":
            return open_memory(self.fs, path, start, end)
        if not self.is_async:
            return open_local(self.fs, path, start, end)
        opener = {"s3": open_s3, "gs": open_gcs}.get(self.kind, open_ranged)
        pin: dict[str, str] = {}

        async def open_at(offset: int) -> ObjectReader:
            if end is not None and offset >= end:
                return Empty()
            return await opener(self.fs, path, offset, end, pin)

        return RetryingReader(open_at, start, self)

    @asynccontextmanager
    async def reading(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        read_size: int = MiB,
        parallel: bool = True,
    ) -> AsyncIterator[ObjectReader]:
        """`open` for a download, closed at the end of the block.

        A span of `parallel_min` bytes or more of an S3 or GCS object (`end` given) is read
        as parallel ranged GETs (`parallel`), whose parts live inside the block; on S3
        their edges fall on the object's multipart part edges (one HeadObject first), each
        part as many of the store's parts as `part_size` holds.
        `read_size` is the size of the consumer's reads.
        """
        remote = self.kind in ("s3", "gs")
        if not (parallel and remote and end is not None and end - start >= self.parallel_min):
            reader = ClosesOnce(await self.open(key, start, end))  # the pump closes it too
            try:
                yield reader
            finally:
                with anyio.CancelScope(shield=True):
                    await reader.aclose()
            return
        path = self.path(key)
        pin: dict[str, str] = {}
        unit = self.part_size
        if self.kind == "s3":
            unit = part_unit(await self._s3_part_size(path), self.part_size)
        opener = open_s3 if self.kind == "s3" else open_gcs

        def open_part(first: int, stop: int) -> ObjectReader:
            async def open_at(offset: int) -> ObjectReader:
                if offset >= stop:
                    return Empty()
                return await opener(self.fs, path, offset, stop, pin)

            return RetryingReader(open_at, first, self)

        parts = ParallelReader(
            open_part,
            start,
            end,
            self.read_ahead,
            read_size=read_size,
            unit=unit,
            grow_after=self.grow_after,
        )
        async with parts:
            yield parts

    async def _s3_part_size(self, path: str) -> int | None:
        """The object's part size, asked once per path: a HeadObject per download would
        cost every download a request. A replaced object's other part size only costs
        alignment, never bytes."""
        if path not in self._part_sizes:
            if len(self._part_sizes) >= PART_SIZES_KEPT:
                self._part_sizes.clear()
            self._part_sizes[path] = await s3_part_size(self.fs, path) or 0
        return self._part_sizes[path] or None

    async def ping(self) -> None:
        """Raise StoreUnreachable unless the store answers and its bucket (or root) exists."""
        try:
            if not self.is_async:
                if not self.fs.isdir(self.root) and not self.url.startswith("memory"):
                    raise StoreUnreachable(f"store root {self.url!r} is not a directory")
                return
            with anyio.fail_after(_PING_TIMEOUT_S):
                await self._ping_remote()
        except StoreUnreachable:
            raise
        except TimeoutError:
            raise StoreUnreachable(
                f"store {self.url!r} did not answer within {_PING_TIMEOUT_S} s"
            ) from None
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise StoreUnreachable(
                f"store {self.url!r} cannot be listed: {type(exc).__name__}"
                + (f": {detail}" if detail else "")
            ) from None

    async def _ping_remote(self) -> None:
        """List at most one key below the root, once, without the libraries' long retries."""
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        if self.kind == "s3":
            await ping_s3(self.fs, bucket, prefix)
        elif self.kind == "gs":
            await ping_gcs(self.fs, bucket, prefix)
        else:
            await self.fs._ls(self.root or "/", detail=False)

    async def aclose(self) -> None:
        if self._lister is not None:
            await self._lister.aclose()
        if self.is_async:
            await close_session(self.fs)


def _remote_fs(url: str, protocol: str, connections: int | None) -> Any:
    """An async filesystem for `protocol`, its pool of `connections` if given."""
    # Endpoint, credentials and client options come from fsspec's configuration
    # (FSSPEC_S3_*, FSSPEC_GS_* or FSSPEC_GCS_*) and the libraries' own variables.
    # Listings are not cached by the filesystem: the catalog has its own TTL, and a
    # cached listing would hide a purge from `info`.
    options = _s3_pool(connections) if protocol in ("s3", "s3a") else {}
    try:
        fs = fsspec.filesystem(
            protocol,
            asynchronous=True,
            skip_instance_cache=True,
            use_listings_cache=False,
            **options,
        )
    except (ValueError, ImportError) as exc:  # unknown protocol, or its library missing
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise StoreUnreachable(f"store {url!r}: {reason or type(exc).__name__}") from None
    if connections is not None and protocol in ("gs", "gcs"):
        _gcs_pool(fs, connections)
    return fs


def pool_size(streams: int, read_ahead_bytes: int) -> int:
    """Connections to the store: one per download, one per part the read-ahead ceiling lets
    run ahead, and some for metadata, so that no download waits for a connection."""
    # A part holds at least half of PART_SIZE (`part_unit`, `part_bounds`), bar the last
    # one of a span.
    ahead = read_ahead_bytes // (PART_SIZE // 2)
    return min(MAX_CONNECTIONS, streams + ahead + METADATA_CONNECTIONS)


def _s3_pool(connections: int | None) -> dict[str, Any]:
    """s3fs's options for a pool of `connections`, unless fsspec's configuration
    (FSSPEC_S3, FSSPEC_S3_CONFIG_KWARGS) sets `max_pool_connections` already."""
    configured = dict(fsspec.config.conf.get("s3", {}).get("config_kwargs") or {})
    if connections is None or "max_pool_connections" in configured:
        return {}
    return {"config_kwargs": {**configured, "max_pool_connections": connections}}


def _gcs_pool(fs: Any, connections: int) -> None:
    """gcsfs's aiohttp session with a pool of `connections` (aiohttp's default is 100),
    unless `session_kwargs` gives a connector or a client certificate needs its own."""
    if "connector" in fs.session_kwargs or getattr(fs, "_use_client_cert", False):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # aiohttp's connector belongs to a loop; gcsfs makes its own later
        return
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections)
    fs.session_kwargs = {**fs.session_kwargs, "connector": connector}


def _etag(raw: dict[str, Any]) -> str | None:
    for name in ("VersionId", "generation", "ETag", "etag", "md5Hash"):
        value = raw.get(name)
        if value:
            return str(value).strip('"')
    mtime = raw.get("mtime") or raw.get("created")
    return f"{mtime}" if mtime is not None else None


def _modified(raw: dict[str, Any]) -> datetime | None:
    value = raw.get("LastModified") or raw.get("updated") or raw.get("mtime")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
