"""Azure Blob Storage through adlfs's async `BlobServiceClient`, on the server's event loop.

A read is one streamed, ranged GET, as on S3 and GCS: the SDK's `download_blob` buffers
each GET whole (32 MiB at first by default) and resumes cut bodies itself, so reads go
through the client's generated `download` operation with its pipeline's own retries off,
and the body is read as the socket brings it (`BodyReader`). Resuming after a fault is
`retry.RetryingReader`'s job, as for every remote store, and a read is pinned with
`If-Match` to the ETag of the object's first read (`pin`), so a parallel part or a resumed
read never splices two versions. The SDK's private `_client` and transport are used there:
azure-storage-blob is bounded in pyproject.toml.
"""

from __future__ import annotations

import weakref
from typing import Any

from .backend import async_filesystem, split_root
from .readers import BodyReader, Empty, ObjectInfo, ObjectReader, http_range
from .retry import ObjectChanged

SCHEMES = ("az", "abfs", "abfss")


class AzureBackend:
    """Blobs below `container/prefix` of an Azure storage account (or Azurite)."""

    reads_inline, parallel = False, True

    def __init__(self, fs: Any, rest: str, url: str) -> None:
        self.fs, self.url = fs, url
        self.container, self.prefix = split_root(rest)

    @classmethod
    def from_url(cls, url: str, rest: str, connections: int | None) -> AzureBackend:
        fs = async_filesystem("az", url)
        if connections is not None:
            size_pool(fs, connections)
        return cls(fs, rest, url)

    def path(self, key: str) -> str:
        return f"{self.container}/{self.prefix}{key}"

    async def info(self, key: str) -> ObjectInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = await _blob(self.fs, self.path(key)).get_blob_properties()
        except ResourceNotFoundError:
            return None  # the store confirms the container is there
        return ObjectInfo(size=props.size, etag=props.etag.strip('"'), modified=props.last_modified)

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        return await open_azure(self.fs, self.path(key), start, end, pin)

    async def read_bytes(self, key: str) -> bytes:
        reader = await open_azure(self.fs, self.path(key), 0, None, {})
        pieces = []
        try:
            while data := await reader.read(1 << 20):
                pieces.append(data)
        finally:
            await reader.aclose()
        return b"".join(pieces)

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        client = self.fs.service_client.get_container_client(self.container)
        found: dict[str, str | None] = {}
        try:
            async for blob in client.list_blobs(name_starts_with=self.prefix + prefix):
                found[blob.name.removeprefix(self.prefix)] = blob.etag.strip('"')
        except ResourceNotFoundError as exc:
            raise FileNotFoundError(self.container) from exc
        return found

    async def part_size(self, key: str) -> int | None:
        return None  # block sizes are not worth a request to align on

    async def ping(self) -> None:
        await ping_azure(self.fs, self.container, self.prefix)

    def unavailable(self, exc: Exception) -> bool:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
        )

        if isinstance(exc, ClientAuthenticationError | ServiceRequestError):
            return True
        return isinstance(exc, HttpResponseError) and exc.status_code in (401, 403)

    async def aclose(self) -> None:
        await close_azure(self.fs)


def _blob(fs: Any, path: str) -> Any:
    container, blob, _ = fs.split_path(path)
    return fs.service_client.get_blob_client(container=container, blob=blob)


def _raw(pipeline_response: Any, deserialized: Any, headers: dict[str, Any]) -> Any:
    return pipeline_response.http_response, headers


async def open_azure(
    fs: Any, path: str, start: int, end: int | None, pin: dict[str, str]
) -> ObjectReader:
    """One streamed GET of [start, end), pinned to the ETag `pin` holds, if any."""
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )
    from azure.storage.blob._generated.models import ModifiedAccessConditions

    if end is not None and end <= start:
        return Empty()
    conditions = ModifiedAccessConditions(if_match=pin["etag"]) if "etag" in pin else None
    try:
        response, headers = await _blob(fs, path)._client.blob.download(
            range=http_range(start, end),
            modified_access_conditions=conditions,
            cls=_raw,
            retry_total=0,
        )
    except ResourceModifiedError as exc:
        raise ObjectChanged(path) from exc
    except ResourceNotFoundError as exc:
        if pin:
            raise ObjectChanged(path) from exc
        raise FileNotFoundError(path) from exc  # the store confirms the container is there
    except HttpResponseError as exc:
        if exc.status_code == 416:  # the range starts at the end of the object
            return Empty()
        if exc.status_code == 412:  # If-Match failed: another version
            raise ObjectChanged(path) from exc
        raise _os_error(exc) from exc
    pin.setdefault("etag", headers["ETag"])
    body = response.internal_response  # aiohttp's response
    return BodyReader(body.content, body.close)


async def ping_azure(fs: Any, container: str, prefix: str) -> None:
    """List at most one blob below `prefix`, once, without the pipeline's long retries."""
    from azure.core.exceptions import ResourceNotFoundError

    client = fs.service_client.get_container_client(container)
    blobs = client.list_blobs(name_starts_with=prefix or None, results_per_page=1, retry_total=0)
    try:
        async for _ in blobs:
            break
    except ResourceNotFoundError as exc:
        raise FileNotFoundError(f"no container {container!r}") from exc


def _os_error(exc: Any) -> OSError:
    """A failure of the store itself (not of one missing blob): refused, forbidden, gone."""
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return PermissionError(f"the store refused access (HTTP {status})")
    return OSError(f"the store answered HTTP {status}: {getattr(exc, 'error_code', '')}")


async def close_azure(fs: Any) -> None:
    """Close the filesystem's client and credential here, on the loop that made them.

    adlfs closes both in `weakref.finalize` callbacks that run them on the loop the
    filesystem was made on; at interpreter exit that loop is closed and each prints a
    traceback. Ours are closed on time, so theirs are detached.
    """
    from adlfs.utils import close_credential

    await fs.service_client.close()
    await close_credential(fs)
    # `_registry` is CPython's table of live finalizers (stable since 3.4).
    for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        info = finalizer.peek()
        if info is not None and info[0] is fs:
            finalizer.detach()


def size_pool(fs: Any, connections: int) -> None:
    """The client's aiohttp session with a pool of `connections` (aiohttp's default is 100),
    made before the client's first request (azure-core makes its own otherwise)."""
    import asyncio

    import aiohttp

    transport = fs.service_client._pipeline._transport
    if transport.session is not None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # aiohttp's connector belongs to a loop
        return
    # azure-core's own session options, with our connector.
    transport.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), trust_env=True, auto_decompress=False
    )
