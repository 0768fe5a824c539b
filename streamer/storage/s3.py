"""S3 through s3fs's aiobotocore client, on the server's event loop.

Every object call is one request of our own (s3fs's `_info` lists the prefix beside a
missing key, its `_cat_file` sends a HEAD before each GET); listings run off the loop
(`listing.RemoteLister`). Reads are pinned to the first ETag they saw.
"""

from __future__ import annotations

from typing import Any

import fsspec.config

from .backend import async_filesystem, split_root
from .listing import RemoteLister, close_session, list_s3_on_twin
from .readers import BodyReader, Chunks, ObjectInfo, ObjectReader, http_range
from .retry import ObjectChanged

CHECKED_READ = 256 * 1024
PART_SIZES_KEPT = 4096


class S3Backend:
    """Objects below `bucket/prefix` of an S3 (or S3-compatible) endpoint."""

    reads_inline, parallel = False, True

    def __init__(self, fs: Any, rest: str, url: str) -> None:
        self.fs, self.url = fs, url
        self.bucket, self.prefix = split_root(rest)
        self._lister = RemoteLister(fs, list_s3_on_twin)
        self._part_sizes: dict[str, int] = {}  # path -> its multipart part size (0: none)

    @classmethod
    def from_url(cls, url: str, rest: str, connections: int | None) -> S3Backend:
        return cls(async_filesystem("s3", url, **_pool(connections)), rest, url)

    def path(self, key: str) -> str:
        return f"{self.bucket}/{self.prefix}{key}"

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            head = await info_s3(self.fs, self.path(key))
        except FileNotFoundError:
            return None
        etag = head["VersionId"] or head["ETag"].strip('"') or None
        return ObjectInfo(size=head["size"], etag=etag, modified=head["LastModified"] or None)

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        return await open_s3(self.fs, self.path(key), start, end, pin)

    async def read_bytes(self, key: str) -> bytes:
        return await read_s3(self.fs, self.path(key))

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        listed = await self._lister.list(self.bucket, self.prefix + prefix)
        return {key.removeprefix(self.prefix): version for key, version in listed.items()}

    async def part_size(self, key: str) -> int | None:
        """Asked once per object: a HeadObject per download would cost every download a
        request. A replaced object's other part size only costs alignment, never bytes."""
        path = self.path(key)
        if path not in self._part_sizes:
            if len(self._part_sizes) >= PART_SIZES_KEPT:
                self._part_sizes.clear()
            self._part_sizes[path] = await s3_part_size(self.fs, path) or 0
        return self._part_sizes[path] or None

    async def ping(self) -> None:
        await ping_s3(self.fs, self.bucket, self.prefix)

    def unavailable(self, exc: Exception) -> bool:
        # botocore's own errors are not OSErrors: s3fs passes them through as they are
        # (AccessDenied, InvalidAccessKeyId and SignatureDoesNotMatch it turns into
        # PermissionError).
        from botocore import exceptions as boto

        down = (
            boto.NoCredentialsError,
            boto.PartialCredentialsError,
            boto.CredentialRetrievalError,
            boto.EndpointConnectionError,
            boto.ConnectTimeoutError,
            boto.ReadTimeoutError,
        )
        return isinstance(exc, down)

    async def aclose(self) -> None:
        await self._lister.aclose()
        await close_session(self.fs)


def _pool(connections: int | None) -> dict[str, Any]:
    """s3fs's options for a pool of `connections`, unless fsspec's configuration
    (FSSPEC_S3, FSSPEC_S3_CONFIG_KWARGS) sets `max_pool_connections` already."""
    configured = dict(fsspec.config.conf.get("s3", {}).get("config_kwargs") or {})
    if connections is None or "max_pool_connections" in configured:
        return {}
    return {"config_kwargs": {**configured, "max_pool_connections": connections}}


async def open_s3(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> BodyReader:
    """One streamed, ranged GET of [start, end); pinned to the ETag `pin` holds, if any."""
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    if "etag" in pin:
        extra["IfMatch"] = pin["etag"]
    if start or end is not None:
        extra["Range"] = http_range(start, end)
    try:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, **extra)
    except OSError as exc:
        code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
        if code == "PreconditionFailed":
            raise ObjectChanged(path) from exc
        raise
    pin.setdefault("etag", response["ETag"])
    body = response["Body"]
    return BodyReader(_chunks(body), body.close)


class _Checked:
    """A body whose checksum botocore validates, read through botocore, which checks it at
    the end."""

    def __init__(self, body: Any) -> None:
        self._body = body

    async def readchunk(self) -> tuple[bytes, bool]:
        data: bytes = await self._body.read(CHECKED_READ)
        return data, False


def _chunks(body: Any) -> Chunks:
    """The body's pieces as the socket brought them (aiohttp's reader under botocore's),
    unless botocore validates a checksum that came with them. With `when_supported`
    (botocore's default) it does so for a GetObject whose response carries a full-object
    checksum; S3 sends none with a ranged GET, so the parts of a parallel read are guarded
    by the ETag they are pinned to and by their lengths (a part that ends early is an
    error), as they were through botocore."""
    from aiobotocore.httpchecksum import AioStreamingChecksumBody

    if isinstance(body, AioStreamingChecksumBody):
        return _Checked(body)
    content: Chunks = body.raw_stream.content
    return content


async def s3_part_size(fs: Any, path: str) -> int | None:
    """The object's multipart part size (HeadObject of part 1), None for a single-part
    object. One request: only worth it for large reads. (The reads pin the version: some
    S3-compatible stores answer a part's HeadObject with the part's own ETag.)"""
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    head = await fs._call_s3("head_object", Bucket=bucket, Key=key, PartNumber=1, **extra)
    if head.get("PartsCount", 1) > 1:
        size: int = head["ContentLength"]
        return size
    return None


async def read_s3(fs: Any, path: str) -> bytes:
    """The whole object in one GET (s3fs's _cat_file sends a HEAD before each GET)."""
    reader = await open_s3(fs, path, 0, None, {})
    try:
        return await reader.read_all()
    finally:
        await reader.aclose()


async def ping_s3(fs: Any, bucket: str, prefix: str) -> None:
    """List at most one key below `prefix`."""
    await fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)


async def info_s3(fs: Any, path: str) -> dict[str, Any]:
    """The object's metadata in one HeadObject (s3fs's `_info` lists the prefix too when the
    key is missing, to tell a folder); FileNotFoundError when it does not exist."""
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    head = await fs._call_s3("head_object", Bucket=bucket, Key=key, **extra)
    return {
        "size": head["ContentLength"],
        "ETag": head.get("ETag", ""),
        "LastModified": head.get("LastModified", ""),
        "VersionId": head.get("VersionId"),
    }
