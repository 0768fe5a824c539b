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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import fsspec
from fsspec.asyn import AsyncFileSystem


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
    """A blocking file object read inline (local disk, memory)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def read(self, size: int) -> bytes:
        data: bytes = self._file.read(size)
        return data

    async def aclose(self) -> None:
        self._file.close()


class _S3Reader:
    """One streamed GET of [start, end) (s3fs's own streamed read, made ranged)."""

    def __init__(self, fs: Any, path: str, start: int, end: int | None) -> None:
        self._fs, self._path, self._start, self._end = fs, path, start, end
        self._body: Any = None

    async def read(self, size: int) -> bytes:
        if self._body is None:
            bucket, key, version = self._fs.split_path(self._path)
            extra: dict[str, str] = {}
            if self._end is not None:
                extra["Range"] = f"bytes={self._start}-{self._end - 1}"
            elif self._start:
                extra["Range"] = f"bytes={self._start}-"
            if version:
                extra["VersionId"] = version
            response = await self._fs._call_s3("get_object", Bucket=bucket, Key=key, **extra)
            self._body = response["Body"]
        data: bytes = await self._body.read(size)
        return data

    async def aclose(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class _RangedReader:
    """Sequential ranged reads through any async fsspec filesystem (GCS and others)."""

    def __init__(self, fs: AsyncFileSystem, path: str, start: int, end: int | None) -> None:
        self._fs, self._path, self._position, self._size = fs, path, start, end

    async def read(self, size: int) -> bytes:
        if self._size is not None and self._position >= self._size:
            return b""
        end = self._position + size
        if self._size is not None:
            end = min(end, self._size)
        data: bytes = await self._fs._cat_file(self._path, start=self._position, end=end)
        self._position += len(data)
        return data

    async def aclose(self) -> None:
        pass


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
        fs = fsspec.filesystem(protocol, asynchronous=True, skip_instance_cache=True)
        return cls(fs, rest, url)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    async def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        path = self.path(key)
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
        if not self.is_async:
            file = self.fs.open(path, "rb")
            if start:
                file.seek(start)
            return _FileReader(file)
        if "s3" in self.fs.protocol:
            return _S3Reader(self.fs, path, start, end)
        return _RangedReader(self.fs, path, start, end)

    async def ping(self) -> None:
        """Raise StoreUnreachable unless the root can be listed."""
        try:
            if self.is_async:
                await self.fs._ls(self.root or "/", detail=False)
            elif not self.fs.isdir(self.root) and not self.url.startswith("memory"):
                raise StoreUnreachable(f"store root {self.url!r} is not a directory")
        except StoreUnreachable:
            raise
        except Exception as exc:
            raise StoreUnreachable(
                f"store {self.url!r} cannot be listed: {type(exc).__name__}"
            ) from None

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
