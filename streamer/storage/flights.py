"""Concurrent lookups of one object shared as one request to the store, never a stale one.

The rules this module keeps:
- Fresh. A caller is answered only by a lookup that started after it arrived. A lookup
  already in flight when it arrives may have been answered by the store before a change
  the caller must see (a purge), so the caller waits for that one to end and takes the
  next.
- Shared. Every caller that arrives while a lookup is in flight takes the one lookup that
  starts after it: a herd of N concurrent callers of one key costs two requests, not N.
- A caller's cancellation is its own. A lookup runs in the task of the caller that
  started it; if that caller is cancelled, those that joined it start the next one (the
  first to wake leads). A lookup's result, or its exception, goes to every caller that
  joined it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    """One lookup in progress; `outcome` stays empty if its caller was cancelled."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: list[V] = []
        self.error: BaseException | None = None


class Flights(Generic[K, V]):
    """At most one lookup per key in flight; `started` counts the lookups made."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self.started = 0

    async def run(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """`lookup()`'s result, from a call of it that started after this one arrived."""
        before = self._flights.get(key)
        if before is not None:
            await before.done.wait()  # answered, maybe, before this caller arrived
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, lookup)
            await flight.done.wait()  # started after this caller arrived: join it
            if flight.error is not None:
                raise flight.error
            if flight.outcome:
                return flight.outcome[0]

    async def _lead(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        self.started += 1
        try:
            value = await lookup()
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.outcome.append(value)
            return value
        finally:
            del self._flights[key]
            flight.done.set()
