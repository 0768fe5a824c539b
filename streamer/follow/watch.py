"""One poller per followed log: what the store and the catalog say of a run's log, shared.

A `Watch` holds the latest `Snapshot` of one run's log for every follower of it in this
process. There is no background task: a follower that needs a newer snapshot than the
watch holds either waits for the poll in progress (an `anyio.Event`, no CPU) or, when none
is, polls itself, no sooner than one interval after the previous poll began. So a log's
metadata is read at most once per interval whatever the number of followers, and a
follower that leaves mid-poll (cancelled) wakes the others, one of which polls instead.

The bytes a poll found appended are read once too: followers at the live end ask the watch
for the same small span (`SHARED_SPAN` at most) of the same snapshot, and the first to ask
reads it while the others wait for it (`Watch.read`). The watch keeps only the last two
spans (the first bytes a follow checks, the live end), so a followed log holds at most
2 x `SHARED_SPAN` bytes here whatever the number of followers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

from .. import metrics
from ..catalog import Catalog, LogObject
from ..errors import LogsNotReady
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
Read = Callable[[str, int, int], Awaitable[bytes]]
SHARED_SPAN = 64 * 1024  # a poll interval of a training log's lines, with room to spare


@dataclass(frozen=True)
class _Span:
    snapshot: Snapshot
    key: str
    start: int
    data: bytes


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
    except LogsNotReady:  # the catalog says purged only of a run that has ended
        return Snapshot(taken_at)
    return Snapshot(taken_at, log, log.run.status in TERMINAL)


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
        self._reading = anyio.Lock()
        self._spans: list[_Span] = []  # the last two: the first bytes sent, the live end
        self._pin: tuple[Snapshot | None, dict[str, str]] = (None, {})

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

    async def read(self, snap: Snapshot, key: str, start: int, end: int, read: Read) -> bytes:
        """[start, end) of `key` as `snap` found it, read by one follower for all of them:
        a span of the same snapshot that holds it answers, else `read` does (and its
        answer is kept when the span is small)."""
        if end - start > SHARED_SPAN:
            return await read(key, start, end)
        if (found := self._kept(snap, key, start, end)) is not None:
            return found  # the many followers woken by one poll take no lock
        async with self._reading:
            if (found := self._kept(snap, key, start, end)) is not None:
                return found
            data = await read(key, start, end)
            self._spans = [*self._spans[-1:], _Span(snap, key, start, data)]
            return data

    def _kept(self, snap: Snapshot, key: str, start: int, end: int) -> bytes | None:
        for span in self._spans:
            if span.snapshot is not snap or span.key != key:
                continue
            if span.start <= start and end <= span.start + len(span.data):
                return span.data[start - span.start : end - span.start]
        return None

    def pin(self, snap: Snapshot) -> dict[str, str]:
        """The version every read of `snap`'s log is pinned to (the first read records it),
        so that the spans the followers check and send come from one version."""
        if self._pin[0] is not snap:
            self._pin = (snap, {})
        return self._pin[1]


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
