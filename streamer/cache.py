"""A TTL cache that serves an expired value while one refresh runs: the catalog's metadata.

The rules it keeps:
- One load per key at a time (`storage.flights`): concurrent requests of a key that is not
  cached share one load; a load that fails is not shared, its joiners load again.
- Stale while revalidate, within a bound. A value is fresh for `ttl_s` from when its load
  began; then it is served as it is while one refresh runs in the background (given a
  task group), for at most `max_stale_s` after its load ended. A failed refresh keeps the
  value and is tried again at the next expiry; past the bound, requests wait for a load.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from anyio.abc import TaskGroup

from streamer import metrics
from streamer.storage import Flights

CACHE_ENTRIES = 10_000

# The catalog's logger: its refreshes are what fails here.
logger = logging.getLogger("streamer.catalog")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    loaded_at: float  # the clock when the load that produced `value` ended
    expires_at: float  # a TTL after that load began: a request from then on refreshes


class Cache(Generic[K, V]):
    """A TTL cache that serves an expired value while one refresh runs in the background.

    Concurrent loads of one key are one load. A value is fresh for `ttl_s` from when its
    load began; after that, if a task group is given, it is served as it is while a refresh
    runs there, for at most `max_stale_s` after its load ended; past that, or without a task
    group, requests wait for a load. A failed refresh keeps the value and tries again at the
    next expiry. `load` is given the previous value (or None), so that it may re-read only
    what changed.
    """

    def __init__(
        self, name: str, ttl_s: float, max_stale_s: float, clock: Callable[[], float]
    ) -> None:
        self._name, self._ttl_s, self._max_stale_s, self._clock = name, ttl_s, max_stale_s, clock
        self._entries: dict[K, _Entry[V]] = {}
        self._flights: Flights[K, V] = Flights()
        self.failures = 0  # refreshes that failed in the background

    def cached(
        self, key: K, load: Callable[[V | None], Awaitable[V]], group: TaskGroup | None
    ) -> tuple[V] | None:
        """The value if one may be served now, without waiting; may start a refresh."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.loaded_at + self._max_stale_s:
            return None  # too old to serve, even after a refresh failed (which delays expiry)
        if now < entry.expires_at:
            return (entry.value,)
        if group is None:
            return None
        self._flights.start(
            key,
            lambda: self._load(key, load, entry),
            group,
            lambda exc: self._refresh_failed(key, entry, exc),
        )
        return (entry.value,)

    async def get(
        self, key: K, load: Callable[[V | None], Awaitable[V]], group: TaskGroup | None
    ) -> V:
        hit = self.cached(key, load, group)
        if hit is not None:
            return hit[0]
        # A load that fails is not shared: its joiners load again, one of them leading.
        return await self._flights.join(key, lambda: self._load(key, load, self._entries.get(key)))

    async def _load(
        self, key: K, load: Callable[[V | None], Awaitable[V]], entry: _Entry[V] | None
    ) -> V:
        # A value is as old as the moment its load began: what changed on the store after
        # that may be missing from it. Its TTL counts from then, so that a slow load (a
        # listing of thousands of keys) does not add its length to how late a change shows.
        started = self._clock()
        value = await load(None if entry is None else entry.value)
        if self._ttl_s > 0:
            self._entries.pop(key, None)
            if len(self._entries) >= CACHE_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = _Entry(value, self._clock(), started + self._ttl_s)
        return value

    def _refresh_failed(self, key: K, entry: _Entry[V], exc: Exception) -> None:
        self.failures += 1
        metrics.CATALOG_REFRESH_FAILURES.inc()
        now = self._clock()
        entry.expires_at = now + self._ttl_s
        reason = f"{type(exc).__name__}: {exc}"[:200]
        logger.warning(
            "%s %s: refresh failed, serving what was loaded %.0f s ago: %s",
            self._name,
            key,
            now - entry.loaded_at,
            reason,
        )
