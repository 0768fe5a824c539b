"""GCS on gcsfs's aiohttp session, on the server's event loop."""

from __future__ import annotations

from typing import Any

from .readers import BodyReader, Empty, ObjectReader, http_range
from .retry import ObjectChanged

CONNECT_TIMEOUT_S = 10


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
