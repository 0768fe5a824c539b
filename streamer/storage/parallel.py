"""Parallel ranged reads of one large remote object, handed out in order.

The rules this module keeps:
- In order, byte-identical. The span is cut into parts (aligned to the object's multipart
  part size when the store tells it); each part is one ranged GET read by its own task into
  its own buffer, and `read` hands out bytes of the first part not yet handed out only.
- Growth only for a fast consumer. One part is in flight at first, and a part that is the
  only one in flight reads at most one read (`read_size`) ahead of the consumer. When a
  `read` finds no byte in hand (the consumer waits on the store) once the stream has
  handed out `grow_after` bytes, the parts allowed in flight double, up to `MAX_PARTS`; a
  part handed out without such a wait, the next one already complete, takes one away. The
  first `grow_after` bytes tell nothing of the client: the socket buffers between it and
  the server take several MiB whatever its speed. A slow consumer finds its bytes ready
  at every read after that: it keeps one part in flight and one read buffered, within the
  per-stream bound.
- Read-ahead within a process-wide ceiling. A part started while another is in flight
  (ahead) reads its whole range; its size is taken from the shared `ReadAhead` before it
  starts and given back as its bytes are handed out or dropped. When the ceiling is
  reached no part starts ahead: the stream goes on with one part in flight, never waiting
  or failing for it.
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
    """The process-wide ceiling on bytes read ahead of the consumers (ahead parts)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

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
    ahead: bool  # started while another part was in flight: reads its whole range
    reserved: int = 0  # bytes taken from the ceiling and not yet handed out or given back
    chunks: deque[bytes] = field(default_factory=deque)
    buffered: int = 0
    received: int = 0
    done: bool = False
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
        self._next = 0  # index in _bounds of the next part to start
        self._parts: deque[_Part] = deque()  # started and not yet handed out, in order
        self.window = 1  # parts allowed in flight
        self.peak_in_flight = 0
        self.buffered = 0  # bytes in the parts' buffers
        self._held = 0  # of which in parts that are not ahead (one read at most)
        self._handed_out = 0
        self._waited = False  # the consumer waited on the current part
        self._arrived = anyio.Event()  # bytes came, or a part ended
        self._taken = anyio.Event()  # the consumer took bytes
        self._closed = False
        self._outer: TaskGroup | None = None
        self._group: TaskGroup | None = None
        self._stopped = anyio.Event()

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Every part's [start, end), in order."""
        return list(self._bounds)

    @property
    def in_flight(self) -> int:
        return sum(not part.done for part in self._parts)

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
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            for part in self._parts:
                if part.error is not None:
                    raise part.error
            if not self._parts:
                return b""
            head = self._parts[0]
            if head.chunks:
                return self._take(head, size)
            if head.done:
                self._parts.popleft()
                if not self._waited and (not self._parts or self._parts[0].done):
                    self.window = max(1, self.window - 1)
                self._waited = False
                self._fill()
                continue
            if self._handed_out >= self._grow_after:
                self._waited = True
                self.window = min(self._max_parts, self.window * 2)
                self._fill()
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
        self._handed_out += count
        if part.ahead:
            given = min(count, part.reserved)
            part.reserved -= given
            self._read_ahead.give(given)
        else:
            self._held -= count
            self._taken.set()
            self._taken = anyio.Event()
        return data

    def _fill(self) -> None:
        """Start parts while the window allows; an ahead part only within the ceiling."""
        while not self._closed and self._next < len(self._bounds):
            in_flight = self.in_flight
            if in_flight >= self.window:
                return
            start, end = self._bounds[self._next]
            ahead = in_flight > 0
            if ahead and not self._read_ahead.take(end - start):
                return
            part = _Part(start, end, ahead, reserved=end - start if ahead else 0)
            self._parts.append(part)
            self._next += 1
            self.peak_in_flight = max(self.peak_in_flight, in_flight + 1)
            if self._group is None:
                raise RuntimeError("use the reader in `async with`")
            self._group.start_soon(self._fetch, part)

    async def _fetch(self, part: _Part) -> None:
        reader = self._open_part(part.start, part.end)
        try:
            while (left := part.end - part.start - part.received) > 0:
                size = min(self._read_size, left)
                # A part that is not ahead holds one read at most, with the others.
                while not part.ahead and self._held + size > self._read_size:
                    taken = self._taken
                    await taken.wait()
                data = await reader.read(size)
                if not data:
                    raise OSError(f"the store's body ended {left} bytes early")
                part.chunks.append(data)
                part.buffered += len(data)
                part.received += len(data)
                self.buffered += len(data)
                if not part.ahead:
                    self._held += len(data)
                self._signal()
        except Exception as exc:
            part.error = exc
        finally:
            part.done = True
            with anyio.CancelScope(shield=True):
                await reader.aclose()
            self._signal()
            self._fill()

    def _signal(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    async def aclose(self) -> None:
        """Cancel every part, close their bodies, give back their read-ahead."""
        if self._closed:
            return
        self._closed = True
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._stopped.wait()
        for part in self._parts:
            self._read_ahead.give(part.reserved)
            part.reserved = 0
            part.chunks.clear()
        self._parts.clear()
        self.buffered = self._held = 0
        self._signal()
