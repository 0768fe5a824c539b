"""S3 through s3fs's aiobotocore client, on the server's event loop."""

from __future__ import annotations

from typing import Any

from .readers import BodyReader, Chunks, http_range
from .retry import ObjectChanged

CHECKED_READ = 256 * 1024


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
