"""A page's log, ready for ranged reads, and what a page may cost the process.

The rules this module keeps:
- A plain log with a size is read from the store by ranges (`storage.CachedReader`).
- A gzip log (no random access), or a log whose store gives no size, is read from its
  one shared local copy (`inflated.InflatedLogs`): made once, not once per page.
- Expensive pages (filtered scans, pages of a local copy) take one of `scan_slots`
  slots for their whole read; beyond them the page is refused with 503 `overloaded`
  and `Retry-After` before any byte of the log is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from ..catalog import LogObject
from ..errors import Overloaded
from ..storage import CachedReader, Ranged, Store
from .inflated import InflatedLogs
from .plan import PagePlan


class ScanSlots:
    """At most `limit` expensive pages at once in this process; beyond it, 503."""

    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit, self.retry_after_s = limit, retry_after_s
        self.active = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        if self.active >= self.limit:
            error = Overloaded(self.retry_after_s)
            error.detail = "Too many Get Logs pages are scanning; retry shortly."
            raise error
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class LogSources:
    """The logs pages read, within the process's scan slots and disk for copies."""

    def __init__(self, scan_slots: int, disk_bytes: int | None) -> None:
        self.slots = ScanSlots(scan_slots)
        self.copies = InflatedLogs(disk_bytes)

    def close(self) -> None:
        """Remove the local copies (the service's shutdown)."""
        self.copies.close()

    @asynccontextmanager
    async def open(self, store: Store, log: LogObject, plan: PagePlan) -> AsyncIterator[Ranged]:
        """The log of `log` for the page `plan`. Overloaded beyond the slots;
        FileNotFoundError when the log is gone."""
        size = log.info.size
        if not log.gzip and size is not None and not plan.walk.filtered:
            yield CachedReader(store, log.key, size)
            return
        with self.slots.take():
            if not log.gzip and size is not None:
                yield CachedReader(store, log.key, size)
            else:
                async with self.copies.open(store, log) as copy:
                    yield copy
