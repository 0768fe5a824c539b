"""Parallel ranged reads of one large remote object, handed out in order.

The rules this module keeps:
- In order, byte-identical. The span is cut into parts (aligned to the object's multipart
  part size when the store tells it); each part is one ranged GET read by its own task in
  reads of `read_size`, and `read` hands out bytes of the first part not yet handed out.
- Bytes held are bytes allowed. A stream holds (bytes read and not handed out, reads under
  way) at most one read plus its `allowance`, bytes taken from the shared `ReadAhead`.
  The first part not yet handed out (the head) reads when it holds nothing; the parts
  ahead of it read only within the allowance. A slow consumer's allowance is 0: it holds
  one read, never a part it is not draining.
- The allowance grows only for a fast consumer. A `read` that finds the head empty (the
  consumer waits on the store), once `grow_after` bytes went out, doubles it (one read at
  least) within what the ceiling has left and `max_parts - 1` parts; parts in flight are
  one plus one per part size of allowance. An allowance and a read handed out without such
  a wait (the consumer is the slower side) halve it, given back as the bytes held beyond
  it drain. The first `grow_after` bytes tell nothing: the socket buffers between client
  and server take several MiB whatever its speed.
- Read-ahead within a process-wide ceiling (`ReadAhead`, which a process sizes inside its
  memory budget). When the ceiling is reached the allowance does not grow: the stream
  goes on with one part in flight, never waiting or failing for it.
- Every part keeps the single GET's guarantees: its own `RetryingReader` (resumed at its
  byte after a transient fault), pinned with the others to one version of the object
  (one shared `pin`). A part's error that was not resumed is raised by the next `read`,
  so the whole download aborts.
- Cancellation. The parts run in a task group that the reader owns for the span of its
  `async with` block: `aclose` cancels every part at once and returns once their bodies
  are closed; no part outlives the block, whether or not `aclose` was called.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .readers import ObjectReader

MiB = 1024 * 1024
# Each part costs a request (on S3, a few ms of botocore's CPU): 16 MiB, the top of the
# 8 to 16 MB that the stores' guidance names, halves the requests of 8 MiB
# (docs/design.md#parts-their-growth-and-the-read-ahead-ceiling).
PART_SIZE = 16 * MiB
MAX_PART_SIZE = 16 * MiB  # larger multipart parts are read in equal pieces
# 8 parts carry about 580 MB/s (73 MB/s each at S3's 80 MB/s per connection), above what
# one event loop sends at the ~2 CPU s/GiB a shaped download costs; 8 x 16 MiB lets two
# downloads at full speed share the default read-ahead ceiling.
MAX_PARTS = 8
GROW_AFTER = 16 * MiB  # more than the kernel's socket buffers take of a slow client


class ReadAhead:
    """The process-wide ceiling on bytes read ahead of the consumers (the allowances)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take_up_to(self, size: int) -> int:
        """Take `size` bytes or what is left of them; the bytes taken."""
        taken = max(0, min(size, self.limit - self.used))
        self.used += taken
        return taken

    def give(self, size: int) -> None:
        self.used -= size


def part_unit(store_part: int | None, size: int = PART_SIZE) -> int:
    """The span of a part for an object stored in parts of `store_part` bytes (None: not
    told): as many whole store parts as `size` holds, at least one."""
    if not store_part:
        return size
    return store_part * max(1, size // store_part)


def part_bounds(start: int, end: int, unit: int = PART_SIZE) -> list[tuple[int, int]]:
    """[start, end) cut at every multiple of `unit` (whole parts of the object's, see
    `part_unit`), a unit larger than MAX_PART_SIZE cut again in equal pieces: every edge
    but the span's own falls on a stored part's edge or inside one stored part."""
    pieces = -(-unit // MAX_PART_SIZE)
    cuts = [
        cut
        for index in range(start // unit, -(-end // unit))
        for piece in range(pieces)
        if start < (cut := index * unit + piece * unit // pieces) < end
    ]
    edges = [start, *cuts, end]
    return list(pairwise(edges))


@dataclass(eq=False)
class _Part:
    start: int
    end: int
    chunks: deque[bytes] = field(default_factory=deque)
    buffered: int = 0
    pending: int = 0  # the read under way
    received: int = 0
    done: bool = False
    waiting: bool = False  # for allowance
    error: Exception | None = None


class ParallelReader:
    """Reads [start, end) as parts of `part_bounds`, each through `open_part(start, end)`.

    Use it as `async with ParallelReader(...) as reader:`; the parts run inside the block.
    """

    def __init__(
        self,
        open_part: Callable[[int, int], ObjectReader],
        start: int,
        end: int,
        read_ahead: ReadAhead,
        *,
        read_size: int,
        unit: int = PART_SIZE,
        max_parts: int = MAX_PARTS,
        grow_after: int = GROW_AFTER,
    ) -> None:
        self._open_part, self._read_ahead = open_part, read_ahead
        self._read_size, self._max_parts = read_size, max_parts
        self._grow_after = max(1, grow_after)
        self._bounds = part_bounds(start, end, unit) if end > start else []
        self._unit = max(1, max((stop - first for first, stop in self._bounds), default=1))
        self._next = 0  # index in _bounds of the next part to start
        self._parts: deque[_Part] = deque()  # started and not yet handed out, in order
        self.allowance = 0  # bytes taken from the ceiling: what may be held beyond one read
        self.held = 0  # bytes read and not handed out, plus reads under way
        self.buffered = 0  # of which read
        self.peak_held = self.peak_allowance = self.peak_in_flight = 0
        # Bytes handed out, of which since the consumer last waited; the allowance's aim.
        self._handed_out = self._unwaited = self._target = 0
        self._arrived = anyio.Event()  # bytes came, or a part ended
        self._changed = anyio.Event()  # bytes handed out, the head or the allowance changed
        self._closed = False
        self._outer: TaskGroup | None = None
        self._group: TaskGroup | None = None
        self._stopped = anyio.Event()

    @property
    def bounds(self) -> list[tuple[int, int]]:  # every part's [start, end), in order
        return list(self._bounds)

    @property
    def in_flight(self) -> int:
        return sum(not part.done for part in self._parts)

    @property
    def window(self) -> int:
        """Parts allowed in flight: one, and one per part size (or less) of allowance."""
        return min(self._max_parts, 1 + -(-self.allowance // self._unit))

    async def __aenter__(self) -> ParallelReader:
        self._outer = anyio.create_task_group()
        await self._outer.__aenter__()
        await self._outer.start(self._run)
        self._fill()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._outer is None:
            raise RuntimeError("the reader was not entered")
        with anyio.CancelScope(shield=True):
            await self.aclose()
        # The parts have ended; the block's own exception, if any, goes on as it is (a task
        # group would wrap it in an exception group).
        await self._outer.__aexit__(None, None, None)

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        """Holds the parts' own task group open until `aclose` cancels it."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._stopped.set()

    async def read(self, size: int) -> bytes:
        grown = False
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if failed := [part.error for part in self._parts if part.error is not None]:
                raise failed[0]
            self._pop_done()
            if not self._parts:
                return b""
            head = self._parts[0]
            if head.chunks:
                return self._take(head, size)
            if not grown and self._handed_out >= self._grow_after:
                grown = True
                self._grow()
            arrived = self._arrived
            await arrived.wait()

    def _take(self, part: _Part, size: int) -> bytes:
        data = part.chunks.popleft()
        if len(data) > size:
            data, rest = data[:size], data[size:]
            part.chunks.appendleft(rest)
        count = len(data)
        part.buffered -= count
        self.buffered -= count
        self.held -= count
        self._handed_out += count
        self._unwaited += count
        if self._unwaited > self.allowance + self._read_size:
            # An allowance and a read went out without a wait: the consumer is the slower
            # side. The allowance halves, as fast as the bytes held beyond it drain.
            self._unwaited = 0
            self._target = self.allowance // 2 // self._read_size * self._read_size
        self._pop_done()
        self._shrink()
        self._notify()
        return data

    def _shrink(self) -> None:
        """Give back allowance above the target that no held byte needs: the parts ahead
        hold within it, and all of them within it and one read."""
        head = self._parts[0] if self._parts else None
        ahead = self.held - (head.buffered + head.pending if head else 0)
        needed = max(self._target, ahead, self.held - self._read_size)
        if self.allowance > needed:
            self._read_ahead.give(self.allowance - needed)
            self.allowance = needed

    def _grow(self) -> None:
        """Double the allowance (one read at least) within the ceiling and the parts."""
        most = (self._max_parts - 1) * self._unit
        self._target = min(most, max(self._read_size, 2 * self.allowance))
        self._unwaited = 0
        self.allowance += self._read_ahead.take_up_to(self._target - self.allowance)
        self.peak_allowance = max(self.peak_allowance, self.allowance)
        self._fill()
        self._notify()

    def _pop_done(self) -> None:
        """Drop the parts at the head that were read and handed out whole."""
        popped = False
        while self._parts and self._parts[0].done and not self._parts[0].chunks:
            if self._parts[0].error is not None:
                return
            self._parts.popleft()
            popped = True
        if popped:
            if not self._parts and self._next >= len(self._bounds):
                self._read_ahead.give(self.allowance)  # the span is handed out
                self.allowance = 0
            self._fill()

    def _fill(self) -> None:
        """Start parts while the window allows."""
        while not self._closed and self._next < len(self._bounds):
            in_flight = self.in_flight
            if in_flight >= self.window:
                return
            start, end = self._bounds[self._next]
            part = _Part(start, end)
            self._parts.append(part)
            self._next += 1
            self.peak_in_flight = max(self.peak_in_flight, in_flight + 1)
            if self._group is None:
                raise RuntimeError("use the reader in `async with`")
            self._group.start_soon(self._fetch, part)

    def _may_read(self, part: _Part, size: int) -> bool:
        """The head reads when it holds nothing; any part within one read (the head's
        share) plus the allowance."""
        head = self._parts[0] is part
        if head and not part.buffered:
            return True
        limit = self.allowance + (self._read_size if head else 0)
        return self.held + size <= limit

    async def _fetch(self, part: _Part) -> None:
        reader = self._open_part(part.start, part.end)
        try:
            while (left := part.end - part.start - part.received) > 0:
                size = min(self._read_size, left)
                while not self._may_read(part, size):
                    part.waiting = True
                    self._signal()  # for `quiet`
                    changed = self._changed
                    await changed.wait()
                part.waiting = False
                self.held += size  # the read under way counts as held
                part.pending = size
                self.peak_held = max(self.peak_held, self.held)
                try:
                    data = await reader.read(size)
                finally:
                    self.held -= size
                    part.pending = 0
                if not data:
                    raise OSError(f"the store's body ended {left} bytes early")
                part.chunks.append(data)
                part.buffered += len(data)
                part.received += len(data)
                self.buffered += len(data)
                self.held += len(data)
                self._signal()
        except Exception as exc:
            part.error = exc
        finally:
            part.done = True
            with anyio.CancelScope(shield=True):
                await reader.aclose()
            self._signal()
            self._fill()

    async def quiet(self) -> None:
        """Return once no part reads: each waits for the consumer or has ended (a consumer
        slower than the store comes back only then)."""
        while not self._closed and not all(part.done or part.waiting for part in self._parts):
            arrived = self._arrived
            await arrived.wait()

    def _signal(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    def _notify(self) -> None:
        for part in self._parts:
            part.waiting = False  # until it has looked again
        self._changed.set()
        self._changed = anyio.Event()

    async def aclose(self) -> None:
        """Cancel every part, close their bodies, give back their read-ahead."""
        if self._closed:
            return
        self._closed = True
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._stopped.wait()
        self._read_ahead.give(self.allowance)
        self.allowance = 0
        self._parts.clear()
        self.buffered = self.held = 0
        self._signal()
        self._notify()
