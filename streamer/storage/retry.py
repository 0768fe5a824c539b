"""Resuming reads of remote objects after transient upstream failures.

A `RetryingReader` reads an object through readers that `open_at(offset)` makes. When a
read or an open fails with a transient error (connection reset, 5xx, read timeout, a body
cut short), it closes the broken reader, waits a little (exponential backoff) and reopens
at the byte it had reached, so the caller sees the same bytes as without the fault. It
gives up after `retries` reopens per object and re-raises the last error: a fault that
persists must abort the download, never end it early.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from .. import metrics
from .readers import ObjectReader

logger = logging.getLogger("streamer.storage")


class ObjectChanged(Exception):
    """The object was replaced or deleted while it was being read: resuming would splice."""


# Errors that say the object or the access is wrong: retrying cannot help.
PERMANENT: tuple[type[BaseException], ...] = (
    ObjectChanged,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    AttributeError,
    LookupError,
)


class Counters(Protocol):
    """Where upstream faults are counted (the `Store`)."""

    retries: int


class RetryingReader:
    """Reads [start, end) through `open_at`, reopening at the current offset on faults."""

    def __init__(
        self,
        open_at: Callable[[int], Awaitable[ObjectReader]],
        start: int,
        counters: Counters,
        *,
        retries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
    ) -> None:
        self._open_at, self._position, self._counters = open_at, start, counters
        self._retries, self._backoff_s, self._max_backoff_s = retries, backoff_s, max_backoff_s
        self._reader: ObjectReader | None = None
        self._failures = 0

    @property
    def position(self) -> int:
        return self._position

    async def read(self, size: int) -> bytes:
        while True:
            try:
                if self._reader is None:
                    self._reader = await self._open_at(self._position)
                data = await self._reader.read(size)
            except PERMANENT:
                raise
            except Exception as exc:
                await self._discard()
                if self._failures >= self._retries:
                    raise
                self._failures += 1
                self._counters.retries += 1
                metrics.UPSTREAM_RETRIES.inc()
                delay = min(self._backoff_s * 2 ** (self._failures - 1), self._max_backoff_s)
                logger.warning(
                    "store read failed at byte %d (%s); retry %d of %d in %.2f s",
                    self._position,
                    type(exc).__name__,
                    self._failures,
                    self._retries,
                    delay,
                )
                await anyio.sleep(delay)
                continue
            self._position += len(data)
            return data

    async def _discard(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await reader.aclose()
                except Exception:
                    logger.debug("closing a broken reader failed", exc_info=True)

    async def aclose(self) -> None:
        await self._discard()
