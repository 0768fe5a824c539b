"""The object store: the only module that imports fsspec.

A `Store` is rooted at `STREAMER_STORAGE_URL` and addressed by keys made of validated
IDs only (`models/<model_id>/runs/<run_id>/training.log`). Local and memory stores are
called inline: their reads come from the page cache or RAM, and a thread hop per chunk
costs more than the read (NOTES.md). S3 and GCS go through fsspec's async API on the
server's own event loop.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import fsspec
from fsspec.asyn import AsyncFileSystem

from .retry import ObjectChanged, RetryingReader

_CONNECT_TIMEOUT_S = 10
_PING_TIMEOUT_S = 15


class StoreUnreachable(Exception):
    """The store root cannot be listed; the message is one line for the operator."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int | None
    etag: str | None
    modified: datetime | None


class ObjectReader(Protocol):
    async def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        ...

    async def aclose(self) -> None: ...


class _FileReader:
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


class _Empty:
    async def read(self, size: int) -> bytes:
        return b""

    async def aclose(self) -> None:
        pass


class _BodyReader:
    """One streamed HTTP response body, read in place.

    The HTTP clients return whatever the socket had (often 64 KiB); each read here is
    filled up to `size`, since every chunk costs the pump a send (NOTES.md).
    """

    def __init__(
        self, read_some: Callable[[int], Awaitable[bytes]], close: Callable[[], Any]
    ) -> None:
        self._read_some, self._close = read_some, close

    async def read(self, size: int) -> bytes:
        data = await self._read_some(size)
        if not data or len(data) >= size:
            return data
        parts, got = [data], len(data)
        while got < size and (more := await self._read_some(size - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    async def read_all(self) -> bytes:
        return await self._read_some(-1)

    async def aclose(self) -> None:
        self._close()


class _Ranged:
    """Sequential ranged reads, [start, end), through `cat(start, stop)`.

    For the memory store too: fsspec's memory filesystem hands every opener the same file
    object, so readers that shared it would move each other's position; slices do not.
    """

    def __init__(
        self, cat: Callable[[int, int], Awaitable[bytes]], start: int, end: int | None
    ) -> None:
        self._cat, self._position, self._end = cat, start, end

    async def read(self, size: int) -> bytes:
        end = self._position + size if self._end is None else min(self._position + size, self._end)
        if end <= self._position:
            return b""
        data = await self._cat(self._position, end)
        self._position += len(data)
        return data

    async def aclose(self) -> None:
        pass


# Each opener reads [start, end) of `path`. `pin` holds the object's version as the first
# open saw it; a reopen asks for that version, so a resumed read never splices two objects.


async def _open_ranged(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> ObjectReader:
    async def cat(first: int, stop: int) -> bytes:
        data: bytes = await fs._cat_file(path, start=first, end=stop)
        return data

    return _Ranged(cat, start, end)


def _range(start: int, end: int | None) -> str:
    return f"bytes={start}-{'' if end is None else end - 1}"


async def _open_s3(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> _BodyReader:
    """One streamed, ranged GET through s3fs's aiobotocore client."""
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    if "etag" in pin:
        extra["IfMatch"] = pin["etag"]
    if start or end is not None:
        extra["Range"] = _range(start, end)
    try:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, **extra)
    except OSError as exc:
        code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
        if code == "PreconditionFailed":
            raise ObjectChanged(path) from exc
        raise
    pin.setdefault("etag", response["ETag"])
    body = response["Body"]
    return _BodyReader(body.read, body.close)


async def _open_gcs(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> ObjectReader:
    """One streamed, ranged GET on gcsfs's aiohttp session (gcsfs itself reads whole ranges)."""
    import aiohttp
    from gcsfs.retry import validate_response

    await fs._set_session()
    response = await fs.session.get(
        fs.url(path, generation=pin.get("generation")),
        params=fs._get_params({}),
        headers=fs._get_headers({"Range": _range(start, end)}),
        # No total limit: a download may take hours. A socket that stalls longer than gcsfs's
        # requests_timeout (60 s if unset) is a transient fault.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=fs.requests_timeout or 60
        ),
    )
    if response.status >= 300:
        try:
            content = await response.read()
        finally:
            response.release()
        if response.status == 416:  # the range starts at the end of the object
            return _Empty()
        if response.status == 404 and pin:
            raise ObjectChanged(path)
        validate_response(response.status, content, path)
        raise OSError(f"the store answered HTTP {response.status}")
    if generation := response.headers.get("x-goog-generation"):
        pin.setdefault("generation", generation)
    return _BodyReader(response.content.read, response.close)


class GzipReader:
    """Decompresses a gzip reader on the fly; never holds more than `size` bytes of output."""

    def __init__(self, raw: ObjectReader, chunk_size: int) -> None:
        self._raw, self._chunk_size = raw, chunk_size
        self._inflate = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._eof = False

    async def read(self, size: int) -> bytes:
        while True:
            if self._pending:
                data = self._inflate.decompress(self._pending, size)
                self._pending = self._inflate.unconsumed_tail
            else:
                data = b""
            if data:
                return data
            if self._inflate.eof:
                # A concatenated gzip member starts in what is left over (gzip(1) does that).
                rest = self._inflate.unused_data
                if not rest:
                    rest = await self._raw.read(self._chunk_size)
                    if not rest:
                        return b""
                self._inflate = zlib.decompressobj(wbits=31)
                self._pending = rest
                continue
            if self._eof:
                raise zlib.error("truncated gzip stream")
            self._pending = await self._raw.read(self._chunk_size)
            self._eof = not self._pending

    async def aclose(self) -> None:
        await self._raw.aclose()


class Store:
    """An fsspec filesystem and a root path inside it."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs, self.root, self.url = fs, root.rstrip("/"), url
        self.is_async = isinstance(fs, AsyncFileSystem)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        self.kind = next((kind for kind in ("s3", "gs", "memory") if kind in protocols), "other")
        # Upstream faults during object reads, for metrics: every failed read or open of a
        # remote object counts as an error; every reopen after one counts as a retry.
        self.retries = 0
        self.upstream_errors = 0

    @classmethod
    def from_url(cls, url: str) -> Store:
        """Open the store at `url`; call it inside the event loop that will use it."""
        protocol, _, rest = url.partition("://")
        if not rest:
            protocol, rest = "file", url
        if protocol in ("file", "local"):
            fs = fsspec.filesystem("file")
            return cls(fs, os.path.abspath(rest), url)
        if protocol == "memory":
            return cls(fsspec.filesystem("memory"), "/" + rest.strip("/"), url)
        # Endpoint, credentials and client options come from fsspec's configuration
        # (FSSPEC_S3_*, FSSPEC_GS_* or FSSPEC_GCS_*) and the libraries' own variables.
        # Listings are not cached by the filesystem: the catalog has its own TTL, and a
        # cached listing would hide a purge from `info`.
        try:
            fs = fsspec.filesystem(
                protocol, asynchronous=True, skip_instance_cache=True, use_listings_cache=False
            )
        except (ValueError, ImportError) as exc:  # unknown protocol, or its library missing
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise StoreUnreachable(f"store {url!r}: {reason or type(exc).__name__}") from None
        return cls(fs, rest, url)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    async def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        path = self.path(key)
        if self.kind == "s3":
            # s3fs's _cat_file sends a HEAD before each GET (to split big objects): one GET.
            reader = await _open_s3(self.fs, path, 0, None, {})
            try:
                return await reader.read_all()
            finally:
                await reader.aclose()
        if self.is_async:
            data: bytes = await self.fs._cat_file(path)
        else:
            data = self.fs.cat_file(path)
        return data

    async def list_dir(self, key: str) -> list[str]:
        """Names of the entries directly below `key`; [] when there are none."""
        path = self.path(key)
        try:
            if self.is_async:
                entries = await self.fs._ls(path, detail=False)
            else:
                entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries})

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and version of an object; None when it does not exist."""
        path = self.path(key)
        try:
            if self.is_async:
                raw = await self.fs._info(path)
            else:
                raw = self.fs.info(path)
        except FileNotFoundError:
            return None
        if raw.get("type") == "directory":
            return None
        return ObjectInfo(size=raw.get("size"), etag=_etag(raw), modified=_modified(raw))

    async def open(self, key: str, start: int = 0, end: int | None = None) -> ObjectReader:
        """A reader of bytes [start, end) (to the object's end when `end` is None).

        FileNotFoundError when the object is gone. Callers that know the size pass it as
        `end`, so that no store reads ahead of what will be sent.
        """
        path = self.path(key)
        if self.kind == "memory":
            fs = self.fs
            fs.info(path)  # FileNotFoundError now, not at the first read

            async def cat(first: int, stop: int) -> bytes:
                data: bytes = fs.cat_file(path, first, stop)
                return data

            return _Ranged(cat, start, end)
        if not self.is_async:
            return _FileReader(self.fs.open(path, "rb"), start, end)
        opener = {"s3": _open_s3, "gs": _open_gcs}.get(self.kind, _open_ranged)
        pin: dict[str, str] = {}

        async def open_at(offset: int) -> ObjectReader:
            if end is not None and offset >= end:
                return _Empty()
            return await opener(self.fs, path, offset, end, pin)

        return RetryingReader(open_at, start, self)

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
            await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        elif self.kind == "gs":
            await self.fs._set_session()
            url = f"{self.fs._location}/storage/v1/b/{bucket}/o"
            async with self.fs.session.get(
                url,
                params={"prefix": prefix, "maxResults": "1"},
                headers=self.fs._get_headers(None),
            ) as response:
                if response.status == 404:
                    raise FileNotFoundError(f"no bucket {bucket!r}")
                if response.status >= 300:
                    raise OSError(f"HTTP {response.status}")
        else:
            await self.fs._ls(self.root or "/", detail=False)

    async def aclose(self) -> None:
        if self.is_async:
            session = getattr(self.fs, "_s3", None) or getattr(self.fs, "_session", None)
            close = getattr(session, "close", None)
            if close is not None:
                await close()


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
