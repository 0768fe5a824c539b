"""The backend protocol: what the `Store` asks of one kind of object store.

The rules a backend keeps:
- Keys in, bytes out. Every method takes a key relative to the store's root (checked IDs
  only, `models/<m>/runs/<r>/training.log`); the backend alone knows its root, its client
  and its paths.
- A missing object is `None` from `info` and `FileNotFoundError` from `open` and
  `read_bytes`, nothing else: the `Store` then asks `ping` whether the root (bucket,
  container) is there, and only then is the object missing rather than the store.
- Errors are the library's own; `unavailable` tells which say that the store does not
  work (credentials, access, connection, timeout), for the `Store` to raise as
  `StoreUnreachable`.
- Readers are closed by the store that opened them; `aclose` may be called twice.
- A version (from `info`, `list_versions`) changes whenever the bytes may have changed.

One module per backend (`local`, `memory`, `s3`, `gcs`, `azure`), each picked once, by the URL's
scheme, in `Store.from_url`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from .readers import ObjectInfo, ObjectReader


class StoreUnreachable(Exception):
    """The store itself does not work: it does not answer, its root (bucket, container) is
    missing, or it refused our credentials or access. The message is one line for the
    operator, never a caller."""


class Backend(Protocol):
    """One kind of object store, rooted at one URL."""

    @property
    def url(self) -> str: ...

    @property
    def reads_inline(self) -> bool:
        """Reads run on the event loop without waiting (a local file, memory): no retries,
        no shared lookups, no read-ahead task in the pump."""
        ...

    @property
    def parallel(self) -> bool:
        """Large spans are read as parallel ranged GETs, pinned to one version (`open`'s
        `pin`), their parts aligned to `part_size`."""
        ...

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and version of an object; None when it does not exist."""
        ...

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        """A reader of bytes [start, end) (to the end when `end` is None). The first open
        records the object's version in `pin`; later opens with that `pin` read that
        version or raise `ObjectChanged`."""
        ...

    async def read_bytes(self, key: str) -> bytes:
        """A whole small object (model.json, run.json)."""
        ...

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Every object below `prefix` (a key ending in "/") with its version (None:
        unknown, read it again); {} when there is none."""
        ...

    async def part_size(self, key: str) -> int | None:
        """The object's own multipart part size, to align parallel parts on; None if
        unknown or not worth asking."""
        ...

    async def ping(self) -> None:
        """Raise (anything) unless the store answers and its root exists."""
        ...

    def unavailable(self, exc: Exception) -> bool:
        """Whether `exc`, raised by this backend's library, says the store itself does not
        work: refused credentials or access, no connection, a timeout. (The store already
        counts PermissionError, TimeoutError and ConnectionRefusedError.)"""
        ...

    async def aclose(self) -> None: ...


def version_of(raw: dict[str, Any]) -> str | None:
    """The version in an fsspec `info` dictionary."""
    for name in ("VersionId", "generation", "ETag", "etag", "md5Hash"):
        value = raw.get(name)
        if value:
            return str(value).strip('"')
    return None


def modified_of(raw: dict[str, Any]) -> datetime | None:
    """The modification time in an fsspec `info` dictionary."""
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


def first_line(exc: BaseException) -> str:
    """`exc` as one short line for the operator: its type and its message's first line."""
    text = str(exc).strip()
    detail = text.splitlines()[0][:200] if text else ""
    return type(exc).__name__ + (f": {detail}" if detail else "")


def async_filesystem(protocol: str, url: str, **options: Any) -> Any:
    """fsspec's async filesystem for `protocol`, made for the server's event loop.

    Endpoint, credentials and client options come from fsspec's configuration
    (FSSPEC_S3_*, FSSPEC_GS_*, ...) and the libraries' own variables. Listings are not
    cached by the filesystem: the catalog has its own TTL, and a cached listing would hide
    a purge from `info`.
    """
    import fsspec

    try:
        return fsspec.filesystem(
            protocol,
            asynchronous=True,
            skip_instance_cache=True,
            use_listings_cache=False,
            **options,
        )
    except (ValueError, ImportError) as exc:  # unknown protocol, or its library missing
        raise StoreUnreachable(f"store {url!r}: {first_line(exc)}") from None


def split_root(rest: str) -> tuple[str, str]:
    """The bucket (container) of a remote root and the prefix of its keys ("" or "a/b/")."""
    bucket, _, prefix = rest.strip("/").partition("/")
    return bucket, prefix + "/" if prefix else ""
