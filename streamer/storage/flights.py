"""Concurrent lookups of one key shared as one call: single-flight, in one place.

The rules this module keeps:
- Shared. At most one lookup per key is in flight; callers that arrive meanwhile wait for
  it instead of starting their own: a herd of N concurrent callers of one key costs one
  or two calls, not N.
- Fresh, when asked (`run`, the store's lookups of objects). A caller is answered only by
  a lookup that started after it arrived: one already in flight may have been answered by
  the store before a change the caller must see (a purge), so the caller waits for that
  one to end and takes the next. `join` (the catalog's cache, whose values have a TTL
  anyway) takes the one in flight.
- A caller's cancellation is its own. A lookup runs in the task of the caller that
  started it (or in a task group: `start`); if that caller is cancelled, those that joined
  it start the next one (the first to wake leads). A lookup's result goes to every caller
  that joined it; so does its exception with `run`, while with `join` each caller tries
  again (one of them leading), so that a failure is never older than its caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    """One lookup in progress; `outcome` stays empty if it failed or was cancelled."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: list[V] = []
        self.error: BaseException | None = None


class Flights(Generic[K, V]):
    """At most one lookup per key in flight; `started` counts the lookups made."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self.started = 0

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    async def run(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """`lookup()`'s result, from a call of it that started after this one arrived."""
        before = self._flights.get(key)
        if before is not None:
            await before.done.wait()  # answered, maybe, before this caller arrived
        return await self._await(key, lookup, share_errors=True)

    async def join(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """`lookup()`'s result, from the call in flight if there is one."""
        return await self._await(key, lookup, share_errors=False)

    def start(
        self,
        key: K,
        lookup: Callable[[], Awaitable[V]],
        group: TaskGroup,
        on_error: Callable[[Exception], None],
    ) -> None:
        """Call `lookup()` in `group`, unless a lookup of `key` is in flight; its failure
        goes to `on_error` (and to no caller)."""
        if key in self._flights:
            return
        flight = self._begin(key)

        async def background() -> None:
            try:
                await self._lead(key, flight, lookup)
            except Exception as exc:
                on_error(exc)

        group.start_soon(background)

    async def _await(self, key: K, lookup: Callable[[], Awaitable[V]], *, share_errors: bool) -> V:
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, self._begin(key), lookup)
            await flight.done.wait()
            if flight.error is not None and share_errors:
                raise flight.error
            if flight.outcome:
                return flight.outcome[0]

    def _begin(self, key: K) -> _Flight[V]:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        self.started += 1
        return flight

    async def _lead(self, key: K, flight: _Flight[V], lookup: Callable[[], Awaitable[V]]) -> V:
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
