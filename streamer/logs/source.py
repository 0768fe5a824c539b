"""A page's log, ready for ranged reads, and what a page may cost the process.

The rules this module keeps:
- A plain log with a size is read from the store by ranges (`storage.CachedReader`).
- A gzip log (no random access), or a log whose store gives no size, is read from its
  one shared local copy (`inflated.InflatedLogs`): made once, not once per page.
- Every page reserves what it may hold at once (`page_bytes`) against the process's
  memory budget (`streamer.budget`) for its whole read: a plain page its block reads, a
  filtered scan its blocks, a page of a copy the inflation's buffers besides. Expensive
  pages (filtered scans, pages of a local copy) also take one of `scan_slots` slots.
  Beyond either, the page is refused with 503 `overloaded` and `Retry-After` before any
  byte of the log is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from ..budget import Budget
from ..catalog import LogObject
from ..errors import Overloaded
from ..storage import CachedReader, RangedLog, Store
from ..storage.cached import CACHED_BLOCKS
from .inflated import INFLATE_BYTES, InflatedLogs
from .plan import PagePlan
from .scan import BLOCK, MAX_BLOCK, SCAN_BLOCK

PAGE_LINE = 1 << 10  # the bytes one line of a page is taken to need
# Copies of a page's bytes held at once: read, joined, parsed into lines, written as JSON.
HELD = 4


def page_bytes(plan: PagePlan, log: LogObject) -> int:
    """What the page `plan` of `log` may hold at once: `limit` lines' worth of block
    reads (at least a seek's block, at most the largest one, never more than a plain log
    holds), the blocks a filtered scan holds beside them, and inflation's buffers for a
    page of a local copy."""
    copied = log.gzip or log.info.size is None
    known = None if copied else log.info.size
    lines = min(MAX_BLOCK, max(BLOCK, plan.limit * PAGE_LINE))
    # The blocks kept for reuse, and the one being parsed with what its parse makes (a
    # 1000-line scan of 64 MiB peaked at 14 MiB of Python objects with its lines).
    blocks = CACHED_BLOCKS + 2 * HELD
    scan = SCAN_BLOCK * blocks
    if known is not None:
        lines, scan = min(lines, known), min(scan, known * blocks)
    size = HELD * lines
    if plan.walk.filtered:
        size += scan
    if copied:
        size += INFLATE_BYTES
    return size


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
    """The logs pages read, within the process's scan slots, memory budget and disk for
    copies."""

    def __init__(
        self, scan_slots: int, disk_bytes: int | None, budget: Budget | None = None
    ) -> None:
        self.slots = ScanSlots(scan_slots)
        self.copies = InflatedLogs(disk_bytes)
        self.budget = budget if budget is not None else Budget()

    def close(self) -> None:
        """Remove the local copies (the service's shutdown)."""
        self.copies.close()

    @asynccontextmanager
    async def open(self, store: Store, log: LogObject, plan: PagePlan) -> AsyncIterator[RangedLog]:
        """The log of `log` for the page `plan`. Overloaded beyond the slots or the
        budget; FileNotFoundError when the log is gone."""
        size = log.info.size
        if not log.gzip and size is not None and not plan.walk.filtered:
            with self.budget.reserve(page_bytes(plan, log)):
                yield CachedReader(store, log.key, size)
            return
        with self.slots.take(), self.budget.reserve(page_bytes(plan, log)):
            if not log.gzip and size is not None:
                yield CachedReader(store, log.key, size)
            else:
                async with self.copies.open(store, log) as copy:
                    yield copy
