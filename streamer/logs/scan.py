"""Filtered scans (`level`, `contains`) over a ranged log, forward or backward.

The rules this module keeps:
- A scan reads blocks of 1 MiB, at most `SCAN_BUDGET` bytes of log per page; a page that
  runs out returns what it found and stops where it is.
- A block whose bytes cannot hold a match (`contains` without `level`) is not parsed.
- Blocks are parsed in a worker thread, one block per call and one call at a time in the
  process (`parsing`: it holds the GIL), and the scan gives the loop
  a turn between blocks: the event loop goes on serving (`/healthz` first) while a
  filtered page works through megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
from anyio.lowlevel import RunVar

from ..cursors import Walk
from ..lines import Line, parse_block
from ..storage import RangedLog

BLOCK = 64 << 10
MAX_BLOCK = 8 << 20
SCAN_BLOCK = 1 << 20
SCAN_BUDGET = 64 << 20
_THREAD_BLOCK = 64 << 10

# One block parsed at a time per event loop (a process): parsing holds the GIL, so more
# threads at it would only take turns with the event loop's thread (and each would grow
# its own malloc arena); scans wait their turn here instead.
_PARSING: RunVar[anyio.CapacityLimiter] = RunVar("parsing")


def parsing() -> anyio.CapacityLimiter:
    """The limiter that admits parsing into worker threads, one of this event loop's."""
    try:
        return _PARSING.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(1)
        _PARSING.set(limiter)
        return limiter


T = TypeVar("T")
Args = TypeVarTuple("Args")
Match = Callable[[Line, str | None], bool]


async def whole_lines(
    file: RangedLog, position: int, high: int, end: int, *, grow: bool = True
) -> bytes:
    """Whole lines from `position` (a line start) to the last "\\n" before `high`, or the
    first line whole when it is longer (unless not `grow`: then nothing); at `end` the
    last line may lack its "\\n"."""
    kept = file.cached_end(position)
    if grow and kept is not None and position < kept < high:
        high = kept  # what is at hand first: a request saved, and lines grow it if need be
    data = await file.read(position, high)
    if high >= end:
        return data
    cut = data.rfind(b"\n") + 1
    if cut or not grow:
        return data[:cut]
    parts, block = [data], max(len(data), BLOCK)
    while high < end:
        block = min(2 * block, MAX_BLOCK)
        more = await file.read(high, min(end, high + block))
        if not more:
            break
        high += len(more)
        at = more.find(b"\n")
        if at >= 0:
            parts.append(more[: at + 1])
            break
        parts.append(more)
    return b"".join(parts)


async def parse_lines(data: bytes, base: int) -> list[Line]:
    """`parse_block`, in a worker thread unless the block is small: the event loop keeps
    serving other requests (and probes) while a page parses megabytes."""
    return await _off_loop(parse_block, len(data), data, base)


async def _off_loop(function: Callable[[*Args], T], size: int, *args: *Args) -> T:
    """`function(*args)` on `size` bytes of log: in a worker thread unless they are few."""
    if size < _THREAD_BLOCK:
        return function(*args)
    return await anyio.to_thread.run_sync(function, *args, limiter=parsing())


def _needle(walk: Walk) -> bytes | None:
    """Bytes that every line of a block that can match holds, to skip parsing the others.

    Without a level filter, lines are independent; a substring with no U+FFFD is in a
    decoded message only where its UTF-8 bytes are in the raw line.
    """
    if walk.levels is not None or walk.contains is None or "\ufffd" in walk.contains:
        return None
    return walk.contains.encode()


def _matcher(walk: Walk) -> Match:
    """Whether a line matches the filters, given its effective level."""
    levels = frozenset(walk.levels) if walk.levels is not None else None
    contains = walk.contains

    def match(line: Line, level: str | None) -> bool:
        if levels is not None and (level is None or level.upper() not in levels):
            return False
        return contains is None or contains in line.message

    return match


async def _block_before(
    file: RangedLog, high: int, start: int, size: int, *, grow: bool = True
) -> tuple[bytes, int]:
    """Whole lines that end at `high` (a line start), about `size` bytes read backward:
    (the bytes, where they start). Longer when one line is, unless not `grow`: then
    nothing."""
    data, low = b"", high
    while low > start:
        new_low = max(start, low - size)
        more = await file.read(new_low, low)
        data, low = more + data, new_low
        if low == start:
            break
        at = data.find(b"\n", 0, min(len(more), len(data) - 1))
        if at >= 0:
            return data[at + 1 :], low + at + 1
        if not grow:
            return b"", high
        size = min(2 * size, MAX_BLOCK)
    return data, low


async def _level_before(file: RangedLog, position: int, start: int) -> tuple[str | None, int]:
    """The level of the last shaped line that starts in [start, position), and bytes read
    (an eighth of the budget at most: beyond, the lines at `position` count as having none)."""
    high, scanned = position, 0
    # An eighth of the page's budget at most: the scan after it must have room to move on.
    while high > start and scanned < SCAN_BUDGET // 8:
        data, low = await _block_before(file, high, start, min(BLOCK, SCAN_BLOCK))
        scanned += len(data)
        for line in reversed(parse_block(data, low)):
            if line.shaped:
                return line.level, scanned
        high = low
    return None, scanned


def _forward_block(
    data: bytes, base: int, level: str | None, match: Match, room: int
) -> tuple[list[Line], str | None, int | None]:
    """Up to `room` matches in a block read forward, the effective level after it, and
    where the page ends if it filled."""
    found: list[Line] = []
    for line in parse_block(data, base):
        if line.shaped:
            level = line.level
        if match(line, level):
            found.append(line)
            if len(found) == room:
                return found, level, line.end
    return found, level, None


def _backward_block(
    data: bytes, low: int, pending: list[Line], walk: Walk, match: Match, room: int
) -> tuple[list[Line], list[Line], int | None]:
    """Up to `room` matches in a block read backward (the latest first), the lines still
    waiting for a level, and where the page ends if it filled."""
    level: str | None = None
    seen = False
    unknown: list[Line] = []
    known: list[tuple[Line, str | None]] = []
    for line in parse_block(data, low):
        if line.shaped:
            level, seen = line.level, True
        if seen or walk.levels is None:
            known.append((line, level))
        else:
            unknown.append(line)
    if seen:
        settled = [(line, level) for line in pending]
        pending = unknown
    else:
        settled, pending = [], unknown + pending
    found: list[Line] = []
    for line, effective in reversed(known + settled):
        if match(line, effective):
            found.append(line)
            if len(found) == room:
                return found, pending, line.offset
    if walk.contains is not None:
        pending = [line for line in pending if walk.contains in line.message]
    return found, pending[len(pending) - (room - len(found)) :], None


async def scan_forward(
    file: RangedLog, position: int, start: int, stop: int, walk: Walk, limit: int
) -> tuple[list[Line], int]:
    """Up to `limit` matching lines from `position`; (them, where the scan stopped)."""
    match = _matcher(walk)
    level, scanned = None, 0
    if walk.levels is not None:
        level, scanned = await _level_before(file, position, start)
    found: list[Line] = []
    first = position
    needle = _needle(walk)
    # The first block is read whatever the search above cost: every page moves on.
    while position < stop and (scanned < SCAN_BUDGET or position == first):
        size = min(SCAN_BLOCK, max(1, SCAN_BUDGET - scanned))
        high = min(stop, position + size)
        # Past the budget only to read one line whole, when the page has no other way on.
        data = await whole_lines(file, position, high, stop, grow=position == first)
        if not data:
            break
        if needle is None or needle in data:
            more, level, end = await _off_loop(
                _forward_block, len(data), data, position, level, match, limit - len(found)
            )
            found += more
            if end is not None:
                return found, end
        position += len(data)
        scanned += len(data)
        # A block skipped unparsed costs the loop a search: let others in between.
        await anyio.lowlevel.checkpoint()
    return found, position


async def scan_backward(
    file: RangedLog, position: int, start: int, walk: Walk, limit: int
) -> tuple[list[Line], int]:
    """Up to `limit` matching lines before `position`; (them in file order, where the
    scan stopped).

    A line's effective level comes from above it, which a backward scan reads later: the
    lines at the top of what was read, above its first shaped line, wait in `pending`
    until a block further up settles them. Lines still pending when the budget runs out
    count as having no level.
    """
    match = _matcher(walk)
    found: list[Line] = []  # the latest first
    pending: list[Line] = []  # file order
    high, scanned = position, 0
    needle = _needle(walk)
    while high > start and scanned < SCAN_BUDGET:
        size = min(SCAN_BLOCK, SCAN_BUDGET - scanned)
        data, low = await _block_before(file, high, start, size, grow=high == position)
        if not data:
            break
        scanned += len(data)
        if needle is not None and needle not in data:
            data = b""  # no line here can match; the pending ones wait on
        more, pending, end = await _off_loop(
            _backward_block, len(data), data, low, pending, walk, match, limit - len(found)
        )
        found += more
        if end is not None:
            return found[::-1], end
        high = low
        await anyio.lowlevel.checkpoint()
    return found[::-1], high
