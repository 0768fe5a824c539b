"""The walk of one page over a ranged log: where it starts, its edges, its lines.

The rules this module keeps:
- Every read is ranged, [start, end) of a `RangedLog` log; a page never reads a plain log
  from its start unless that is where the page is.
- From the end, line starts are found backward in blocks of 64 KiB, doubled while one
  line is longer than what was read.
- A time window's edges are found by bisection on the timestamps of shaped lines: one
  probe of a block per halving, so O(log size) reads.
- Filters scan (`scan`); a page of them stops after `SCAN_BUDGET` bytes of log.
- A run that is not terminal may still be writing: its log ends after its last "\\n".
- Probes parse a few KiB at a time; a page's lines are parsed off the loop when they are
  many (`scan.parse_lines`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidCursor
from ..lines import Line, TimeKey, parse_block
from ..storage import RangedLog
from ..times import time_key
from .plan import PagePlan
from .scan import (
    BLOCK,
    MAX_BLOCK,
    SCAN_BUDGET,
    parse_lines,
    scan_backward,
    scan_forward,
    whole_lines,
)

PROBE_BUDGET = 8 << 20
_PIECE = 4 << 10


@dataclass(frozen=True)
class Page:
    """What a walk read: lines in file order, and the positions the cursors start from.

    The page covers [near, far) forward or [far, near) backward; the window it walks is
    [start, stop). `*_final`: that edge holds for good (a terminal run, or an edge found
    at a line that exists); otherwise the log may still grow past it.
    """

    lines: list[Line]
    near: int
    far: int
    start: int
    stop: int
    start_final: bool
    stop_final: bool


def _key(text: str | None) -> TimeKey | None:
    return None if text is None else time_key(text)


async def read_page(file: RangedLog, plan: PagePlan, terminal: bool) -> Page:
    """The page `plan` asks for. InvalidCursor when the log is now shorter than the cursor."""
    walk, cursor = plan.walk, plan.cursor
    if cursor is not None and cursor.position > file.size:
        raise InvalidCursor()
    end = file.size if terminal else await _complete_end(file)
    start, start_final = 0, True
    if cursor is not None and cursor.start is not None:
        start = min(cursor.start, end)
    elif walk.bounded:
        start = await lower_bound(file, _key(walk.since), 0, end, end)
        start_final = terminal or start < end
    stop, stop_final = end, terminal
    if cursor is not None and cursor.stop is not None:
        stop, stop_final = max(start, min(cursor.stop, end)), True
    elif walk.until is not None:
        stop = await lower_bound(file, _key(walk.until), start, end, end)
        stop_final = terminal or stop < end
    default = stop if walk.direction == "backward" else start
    position = max(start, min(stop, default if cursor is None else cursor.position))
    if walk.direction == "backward":
        if walk.filtered:
            lines, far = await scan_backward(file, position, start, walk, plan.limit)
        else:
            lines = await lines_before(file, position, start, plan.limit)
            far = lines[0].offset if lines else position
    elif walk.filtered:
        lines, far = await scan_forward(file, position, start, stop, walk, plan.limit)
    else:
        lines = await lines_from(file, position, stop, plan.limit)
        far = lines[-1].end if lines else position
    near = position if lines else far
    return Page(lines, near, far, start, stop, start_final, stop_final)


async def _complete_end(file: RangedLog) -> int:
    """Where the last line that has its "\\n" ends: the log of a run still writing it."""
    hi, block = file.size, BLOCK
    while hi > 0:
        lo = max(0, hi - block)
        data = await file.read(lo, hi)
        at = data.rfind(b"\n")
        if at >= 0:
            return lo + at + 1
        hi, block = lo, min(2 * block, MAX_BLOCK)
    return 0


async def lines_before(file: RangedLog, position: int, start: int, count: int) -> list[Line]:
    """The last `count` lines that start in [start, position), a line start or the end."""
    if position <= start:
        return []
    data, low, block = b"", position, BLOCK
    while True:
        low, data = max(start, low - block), await file.read(max(start, low - block), low) + data
        # A "\n" in the last byte ends the last line; one before each earlier line start.
        if low == start or data.count(b"\n", 0, len(data) - 1) >= count:
            break
        block = min(2 * block, MAX_BLOCK)
    at = len(data) - 1
    for _ in range(count):
        at = data.rfind(b"\n", 0, at)
        if at < 0:
            break
    return await parse_lines(data[at + 1 :], low + at + 1)


async def lines_from(file: RangedLog, position: int, stop: int, count: int) -> list[Line]:
    """The first `count` lines that start in [position, stop), a line start."""
    data, high, block = b"", position, BLOCK
    while high < stop and data.count(b"\n") < count:
        more = await file.read(high, min(stop, high + block))
        data, high = data + more, high + len(more)
        if not more:
            break
        block = min(2 * block, MAX_BLOCK)
    at = -1
    for _ in range(count):
        at = data.find(b"\n", at + 1)
        if at < 0:
            return await parse_lines(data, position)
    return await parse_lines(data[: at + 1], position)


async def _first(
    file: RangedLog, position: int, high: int, end: int, wanted: Callable[[Line], bool], budget: int
) -> Line | None:
    """The first line that starts in [position, high) and is `wanted`, within `budget`."""
    scanned = 0
    while position < high and scanned < budget:
        data = await whole_lines(file, position, min(end, position + BLOCK), end)
        if not data:
            return None
        # Parsed a few KiB at a time: a probe wants one line, not the thousand of a block.
        at = 0
        while at < len(data):
            cut = data.find(b"\n", at + _PIECE) + 1 or len(data)
            for line in parse_block(data[at:cut], position + at):
                if line.offset >= high:
                    return None
                if wanted(line):
                    return line
            at = cut
        position += len(data)
        scanned += len(data)
    return None


async def _line_start(file: RangedLog, at: int, end: int) -> int:
    """The first line start at or after `at` (`end` if none)."""
    if at == 0:
        return 0
    position = at - 1
    while position < end:
        data = await file.read(position, min(end, position + BLOCK))
        found = data.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(data)
    return end


def _shaped(line: Line) -> bool:
    return line.shaped


async def lower_bound(file: RangedLog, key: TimeKey | None, low: int, high: int, end: int) -> int:
    """The start of the first shaped line in [low, high) (a line start) whose timestamp is
    at or after `key` (None: any), else `high`; timestamps are taken not to decrease."""

    def reached(line: Line) -> bool:
        return line.timestamp is not None and (key is None or time_key(line.timestamp) >= key)

    answer = high
    while low < high:
        if key is None or high - low <= BLOCK:
            line = await _first(file, low, high, end, reached, SCAN_BUDGET)
            return line.offset if line is not None else answer
        middle = (low + high) // 2
        start = await _line_start(file, middle, end)
        line = await _first(file, start, high, end, _shaped, PROBE_BUDGET)
        if line is None:
            high = middle  # no shaped line starts in [middle, high)
        elif reached(line):
            answer = high = line.offset
        else:
            low = line.end
    return answer
