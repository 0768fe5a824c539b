"""GCS on gcsfs's aiohttp session, on the server's event loop.

Every object call is one request of our own (gcsfs's `_info` lists the prefix beside the
object, to tell a folder; its reads fetch whole ranges); listings run off the loop
(`listing.RemoteLister`). Reads are pinned to the first generation they saw.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .backend import async_filesystem, modified_of, split_root, version_of
from .listing import RemoteLister, close_session, list_gcs_on_twin
from .readers import BodyReader, Empty, ObjectInfo, ObjectReader, http_range
from .retry import ObjectChanged

CONNECT_TIMEOUT_S = 10


class GcsBackend:
    """Objects below `bucket/prefix` of GCS (or fake-gcs-server)."""

    reads_inline, parallel = False, True

    def __init__(self, fs: Any, rest: str, url: str) -> None:
        self.fs, self.url = fs, url
        self.bucket, self.prefix = split_root(rest)
        self._lister = RemoteLister(fs, list_gcs_on_twin)

    @classmethod
    def from_url(cls, url: str, rest: str, connections: int | None) -> GcsBackend:
        fs = async_filesystem("gs", url)
        if connections is not None:
            _pool(fs, connections)
        return cls(fs, rest, url)

    def path(self, key: str) -> str:
        return f"{self.bucket}/{self.prefix}{key}"

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            raw = await info_gcs(self.fs, self.path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(size=raw.get("size"), etag=version_of(raw), modified=modified_of(raw))

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        return await open_gcs(self.fs, self.path(key), start, end, pin)

    async def read_bytes(self, key: str) -> bytes:
        data: bytes = await self.fs._cat_file(self.path(key))
        return data

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        listed = await self._lister.list(self.bucket, self.prefix + prefix)
        return {key.removeprefix(self.prefix): version for key, version in listed.items()}

    async def part_size(self, key: str) -> int | None:
        return None  # GCS objects have no parts to align on

    async def ping(self) -> None:
        await ping_gcs(self.fs, self.bucket, self.prefix)

    def unavailable(self, exc: Exception) -> bool:
        import aiohttp
        from gcsfs.retry import HttpError
        from google.auth.exceptions import GoogleAuthError

        if isinstance(exc, HttpError):
            return exc.code in (401, 403)
        if isinstance(exc, aiohttp.ClientConnectorError | GoogleAuthError):
            return True
        # gcsfs raises a 403 as a bare OSError (`validate_response`).
        return type(exc) is OSError and str(exc).startswith("Forbidden")

    async def aclose(self) -> None:
        await self._lister.aclose()
        await close_session(self.fs)


def _pool(fs: Any, connections: int) -> None:
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


async def open_gcs(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> ObjectReader:
    """One streamed, ranged GET (gcsfs itself reads whole ranges); pinned to a generation."""
    import aiohttp
    from gcsfs.retry import validate_response

    await fs._set_session()
    response = await fs.session.get(
        fs.url(path, generation=pin.get("generation")),
        params=fs._get_params({}),
        headers=fs._get_headers({"Range": http_range(start, end)}),
        # No total limit: a download may take hours. A socket that stalls longer than gcsfs's
        # requests_timeout (60 s if unset) is a transient fault.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=fs.requests_timeout or 60
        ),
    )
    if response.status >= 300:
        try:
            content = await response.read()
        finally:
            response.release()
        if response.status == 416:  # the range starts at the end of the object
            return Empty()
        if response.status == 404 and pin:
            raise ObjectChanged(path)
        validate_response(response.status, content, path)
        raise OSError(f"the store answered HTTP {response.status}")
    if generation := response.headers.get("x-goog-generation"):
        pin.setdefault("generation", generation)
    return BodyReader(response.content, response.close)


async def ping_gcs(fs: Any, bucket: str, prefix: str) -> None:
    """List at most one object below `prefix`."""
    await fs._set_session()
    url = f"{fs._location}/storage/v1/b/{bucket}/o"
    async with fs.session.get(
        url, params={"prefix": prefix, "maxResults": "1"}, headers=fs._get_headers(None)
    ) as response:
        if response.status == 404:
            raise FileNotFoundError(f"no bucket {bucket!r}")
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


async def info_gcs(fs: Any, path: str) -> dict[str, Any]:
    """The object's metadata in one request (gcsfs's `_info` lists the prefix beside it, to
    tell a folder); FileNotFoundError when it does not exist."""
    info: dict[str, Any] = await fs._get_object(path)
    return info
