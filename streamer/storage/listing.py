"""Listing every object below an S3 or GCS prefix with its version, in few requests.

A version is an opaque string that changes when the object's content may have changed: the
ETag on S3, the generation on GCS. One listing has no delimiter, so it sees every key of
the tree below the prefix: S3 and GCS answer 1,000 keys per page.

S3 and GCS listings run off the server's event loop (`RemoteLister`): botocore parses a
page of 1,000 keys in Python, turning every key's LastModified into a datetime, about
0.2 s of CPU per page on a busy 2-core machine (bench.catalog_s3); on the server's loop,
every request in flight would wait that out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
Lister = Callable[[Any, str, str], Coroutine[Any, Any, dict[str, str | None]]]


async def list_s3(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
    """Keys below `prefix` (relative to the bucket) with their ETags; paginated."""
    found: dict[str, str | None] = {}
    token: dict[str, str] = {}
    while True:
        page = await fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
        for item in page.get("Contents", ()):
            etag = item.get("ETag")
            found[item["Key"]] = etag.strip('"') if etag else None
        if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
            return found
        token = {"ContinuationToken": page["NextContinuationToken"]}


async def list_gcs(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
    """Object names below `prefix` with their generations; paginated."""
    found: dict[str, str | None] = {}
    page_token: str | None = None
    while True:
        page = await fs._call(
            "GET",
            "b/{}/o",
            bucket,
            json_out=True,
            prefix=prefix,
            pageToken=page_token,
            fields="items(name,generation),nextPageToken",
        )
        for item in page.get("items", ()):
            generation = item.get("generation")
            found[item["name"]] = str(generation) if generation else None
        page_token = page.get("nextPageToken")
        if not page_token:
            return found


class RemoteLister:
    """Lists an S3 or GCS prefix with versions, off the server's event loop.

    It holds a blocking twin of the store's async filesystem, made from the same options,
    whose calls run on fsspec's own I/O thread; the server's loop only waits for the
    result. On S3 the twin leaves timestamps unparsed (a listing uses keys and ETags
    only), unless the operator gave the filesystem a botocore session of their own.
    Cancelling `list` cancels the listing on the I/O thread.
    """

    def __init__(self, fs: Any, lister: Lister) -> None:
        self._fs, self._lister = fs, lister
        self._twin: Any = None

    async def list(self, bucket: str, prefix: str) -> dict[str, str | None]:
        """Keys below `prefix` (relative to the bucket) with their versions."""
        twin = self._twin or self._make_twin()
        return await _on_loop(twin.loop, self._lister(twin, bucket, prefix))

    def _make_twin(self) -> Any:
        options = {**self._fs.storage_options, "asynchronous": False, "skip_instance_cache": True}
        options.pop("loop", None)
        self._twin = type(self._fs)(*self._fs.storage_args, **options)
        return self._twin

    async def aclose(self) -> None:
        twin, self._twin = self._twin, None
        if twin is not None:
            await _on_loop(twin.loop, close_session(twin))


async def close_session(fs: Any) -> None:
    """Close the HTTP session of an s3fs or gcsfs filesystem, if it opened one."""
    session = getattr(fs, "_s3", None) or getattr(fs, "_session", None)
    close = getattr(session, "close", None)
    if close is not None:
        await close()


async def list_s3_on_twin(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
    """`list_s3`, its timestamps left unparsed."""
    await fs.set_session()
    if getattr(fs, "_session_is_owned", False):  # its own session: no one else parses with it
        parsers = fs.session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=str)
    return await list_s3(fs, bucket, prefix)


async def list_gcs_on_twin(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
    return await list_gcs(fs, bucket, prefix)


async def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on `loop` (another thread's) and wait for it here; cancelling the
    waiter cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
