"""One poller per followed log: what the store and the catalog say of a run's log, shared.

A `Watch` holds the latest `Snapshot` of one run's log for every follower of it in this
process. There is no background task: a follower that needs a newer snapshot than the
watch holds either waits for the poll in progress (an `anyio.Event`, no CPU) or, when none
is, polls itself, no sooner than one interval after the previous poll began. So a log's
metadata is read at most once per interval whatever the number of followers, and a
follower that leaves mid-poll (cancelled) wakes the others, one of which polls instead.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

from .. import metrics
from ..catalog import Catalog, LogObject
from ..errors import LogsNotReady, LogsPurged, UpstreamError
from ..handlers.common import resolve
from ..logs.plan import TERMINAL


@dataclass(frozen=True)
class Snapshot:
    """A run's log as one poll found it: `taken_at` is when the poll began (anyio's clock).

    `log` None: the run has not written its log yet. `error`: the poll failed (a store
    failure, or a log that has gone for good); every follower of it ends.
    """

    taken_at: float
    log: LogObject | None = None
    terminal: bool = False
    error: Exception | None = None


Poll = Callable[[], Awaitable[Snapshot]]


def poller(catalog: Catalog, model_id: str, organization: str, run_id: str) -> Poll:
    """The poll of one run's log through the catalog (run.json within its TTL, then one
    metadata request for the log); failures come back in the snapshot."""

    async def poll() -> Snapshot:
        taken_at = anyio.current_time()
        try:
            return await snapshot(catalog, model_id, organization, run_id, taken_at)
        except Exception as exc:
            return Snapshot(taken_at, error=exc)

    return poll


async def snapshot(
    catalog: Catalog, model_id: str, organization: str, run_id: str | None, taken_at: float
) -> Snapshot:
    """The run's log now; the catalog's 404s are raised, bar a log not written yet."""
    try:
        log = await resolve(catalog, model_id, organization, run_id)
    except LogsNotReady:
        return Snapshot(taken_at)
    except LogsPurged:
        if run_id is None or await _terminal(catalog, model_id, run_id):
            raise
        return Snapshot(taken_at)
    return Snapshot(taken_at, log, log.run.status in TERMINAL)


async def _terminal(catalog: Catalog, model_id: str, run_id: str) -> bool:
    """Whether a run whose log is missing has ended (purged) rather than not started it.

    A catalog that raises LogsNotReady for a run still to write its log answers this
    itself; one that says purged for both is asked for the run (known to exist: resolve
    found it before the log)."""
    try:
        run = await catalog._explicit_run(model_id, run_id)
    except Exception:
        raise UpstreamError() from None
    return run is None or run.status in TERMINAL


class Watch:
    """The shared polling of one run's log."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.snapshot = Snapshot(-math.inf)
        self.followers = 0
        self.closed = False  # the process is shutting down: every follow ends
        self._polling = False
        self._polled = anyio.Event()
        self._next_poll = anyio.current_time() + interval_s

    def close(self) -> None:
        self.closed = True
        self._polled.set()

    async def after(self, seen: float, poll: Poll) -> Snapshot:
        """A snapshot whose poll began after `seen` (a `taken_at`); the latest one as soon
        as the watch is closed."""
        while self.snapshot.taken_at <= seen and not self.closed:
            if self._polling:
                await self._polled.wait()
                continue
            self._polling = True
            try:
                await anyio.sleep_until(self._next_poll)
                self._next_poll = anyio.current_time() + self.interval_s
                metrics.FOLLOW_POLLS.inc()
                found = await poll()
                if found.taken_at > self.snapshot.taken_at:
                    self.snapshot = found
            finally:
                self._polling = False
                self._polled.set()
                self._polled = anyio.Event()
        return self.snapshot


class Watches:
    """The watches of this process, one per followed run, kept while it has followers."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.closed = False
        self._watches: dict[str, Watch] = {}

    def close(self) -> None:
        """End every follow (at shutdown): each wakes now, or at its next poll."""
        self.closed = True
        for watch in self._watches.values():
            watch.close()

    @contextmanager
    def watch(self, model_id: str, run_id: str) -> Iterator[Watch]:
        key = f"models/{model_id}/runs/{run_id}"
        found = self._watches.get(key)
        if found is None:
            found = self._watches[key] = Watch(self.interval_s)
            found.closed = self.closed
        found.followers += 1
        try:
            yield found
        finally:
            found.followers -= 1
            if not found.followers:
                del self._watches[key]

    def __len__(self) -> int:
        return len(self._watches)
