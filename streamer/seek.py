"""Reading one page of a log from the store, and little more than the page returns.

The rules this module keeps:
- Every read is ranged, [start, end) of the object through `Store.open`; a page never
  reads a plain log from its start unless that is where the page is. A gzip log has no
  random access: it is inflated from its start into a spooled temporary file first.
- From the end, line starts are found backward in blocks of 64 KiB, doubled while one
  line is longer than what was read.
- A time window's edges are found by bisection on the timestamps of shaped lines: one
  probe of a block per halving, so O(log size) reads.
- Filters scan, forward or backward, in blocks of 1 MiB, at most `SCAN_BUDGET` bytes of
  log per page; a page that runs out returns what it found and stops where it is.
- A run that is not terminal may still be writing: its log ends after its last "\\n".
- A scan parses its 1 MiB blocks in a worker thread, so that the event loop goes on
  serving while a filtered page works through megabytes.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Callable
from typing import IO

import anyio

from .catalog import LogObject
from .errors import InvalidCursor
from .lines import Line, TimeKey, parse_block, time_key
from .pages import Page, PagePlan
from .storage import Store

BLOCK = 64 << 10
MAX_BLOCK = 8 << 20
SCAN_BLOCK = 1 << 20
SCAN_BUDGET = 64 << 20
PROBE_BUDGET = 8 << 20
_CACHED_BLOCKS = 4
_SPOOL = 8 << 20
_PIECE = 4 << 10
_THREAD_BLOCK = 256 << 10


class LogFile:
    """Ranged reads of one log object, counted, the last few blocks kept for reuse."""

    def __init__(self, store: Store, key: str, size: int) -> None:
        self.store, self.key, self.size = store, key, size
        self.reads = 0
        self.bytes_read = 0
        self._cache: list[tuple[int, bytes]] = []

    async def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the log (fewer only at its end)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        for first, data in self._cache:
            last = first + len(data)
            if first <= start and end <= last:
                return data[start - first : end - first]
            if first <= start < last:
                return data[start - first :] + await self._fetch(last, end)
            if first < end <= last:
                return await self._fetch(start, first) + data[: end - first]
        return await self._fetch(start, end)

    def cached_end(self, start: int) -> int | None:
        """Where the kept block that holds offset `start` ends, if one does."""
        for first, data in self._cache:
            if first <= start < first + len(data):
                return first + len(data)
        return None

    async def _fetch(self, start: int, end: int) -> bytes:
        reader = await self.store.open(self.key, start, end)
        parts: list[bytes] = []
        got = 0
        try:
            while got < end - start and (data := await reader.read(end - start - got)):
                parts.append(data)
                got += len(data)
        finally:
            await reader.aclose()
        data = b"".join(parts)
        self.reads += 1
        self.bytes_read += len(data)
        self._cache = [(start, data), *self._cache[: _CACHED_BLOCKS - 1]]
        return data

    async def aclose(self) -> None:
        pass


class SpooledLog(LogFile):
    """A gzip log, inflated once from its start; then read at any offset."""

    def __init__(self, store: Store, key: str, file: IO[bytes], size: int, raw: int) -> None:
        super().__init__(store, key, size)
        self._file = file
        self.reads, self.bytes_read = 1, raw

    async def _fetch(self, start: int, end: int) -> bytes:
        self._file.seek(start)
        return self._file.read(end - start)

    async def aclose(self) -> None:
        self._file.close()


async def open_log(store: Store, log: LogObject) -> LogFile:
    """The log of `log`, ready for ranged reads. FileNotFoundError when it is gone."""
    if not log.gzip:
        if log.info.size is not None:
            return LogFile(store, log.key, log.info.size)
        # A store that gives no size: spooled like a gzip log, without the inflating.
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
        reader = await store.open(log.key)
        try:
            while data := await reader.read(SCAN_BLOCK):
                spool.write(data)
        finally:
            await reader.aclose()
        size = spool.tell()
        return SpooledLog(store, log.key, spool, size, size)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
    reader = await store.open(log.key, 0, log.info.size)
    inflate = zlib.decompressobj(wbits=31)
    raw = size = 0
    try:
        while data := await reader.read(SCAN_BLOCK):
            raw += len(data)
            while data:
                out = inflate.decompress(data, SCAN_BLOCK)
                size += spool.write(out)
                data = inflate.unconsumed_tail
                if inflate.eof and not data:
                    # A concatenated member starts in what is left over (gzip(1) does that).
                    data = inflate.unused_data
                    inflate = zlib.decompressobj(wbits=31)
    except BaseException:
        spool.close()
        raise
    finally:
        await reader.aclose()
    return SpooledLog(store, log.key, spool, size, raw)


async def read_page(file: LogFile, plan: PagePlan, terminal: bool) -> Page:
    """The page `plan` asks for. InvalidCursor when the log is now shorter than the cursor."""
    if plan.position is not None and plan.position > file.size:
        raise InvalidCursor()
    end = file.size if terminal else await _complete_end(file)
    start, start_final = 0, True
    if plan.start is not None:
        start = min(plan.start, end)
    elif plan.bounded:
        start = await lower_bound(file, plan.since_key, 0, end, end)
        start_final = terminal or start < end
    stop, stop_final = end, terminal
    if plan.stop is not None:
        stop, stop_final = max(start, min(plan.stop, end)), True
    elif plan.until is not None:
        stop = await lower_bound(file, plan.until_key, start, end, end)
        stop_final = terminal or stop < end
    default = stop if plan.direction == "backward" else start
    position = max(start, min(stop, default if plan.position is None else plan.position))
    if plan.direction == "backward":
        if plan.filtered:
            lines, far = await scan_backward(file, position, start, plan)
        else:
            lines = await lines_before(file, position, start, plan.limit)
            far = lines[0].offset if lines else position
    elif plan.filtered:
        lines, far = await scan_forward(file, position, start, stop, plan)
    else:
        lines = await lines_from(file, position, stop, plan.limit)
        far = lines[-1].end if lines else position
    near = position if lines else far
    return Page(lines, near, far, start, stop, start_final, stop_final)


async def _complete_end(file: LogFile) -> int:
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


async def lines_before(file: LogFile, position: int, start: int, count: int) -> list[Line]:
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
    return parse_block(data[at + 1 :], low + at + 1)


async def lines_from(file: LogFile, position: int, stop: int, count: int) -> list[Line]:
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
            return parse_block(data, position)
    return parse_block(data[: at + 1], position)


async def _whole_lines(
    file: LogFile, position: int, high: int, end: int, *, grow: bool = True
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


async def _first(
    file: LogFile, position: int, high: int, end: int, wanted: Callable[[Line], bool], budget: int
) -> Line | None:
    """The first line that starts in [position, high) and is `wanted`, within `budget`."""
    scanned = 0
    while position < high and scanned < budget:
        data = await _whole_lines(file, position, min(end, position + BLOCK), end)
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


async def _line_start(file: LogFile, at: int, end: int) -> int:
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


async def lower_bound(file: LogFile, key: TimeKey | None, low: int, high: int, end: int) -> int:
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


async def _parse(data: bytes, base: int) -> list[Line]:
    """`parse_block`, in a worker thread for a scan's big blocks: the event loop keeps
    serving other requests (and probes) while a filtered page parses megabytes."""
    if len(data) < _THREAD_BLOCK:
        return parse_block(data, base)
    return await anyio.to_thread.run_sync(parse_block, data, base)


def _needle(plan: PagePlan) -> bytes | None:
    """Bytes that every line of a block that can match holds, to skip parsing the others.

    Without a level filter, lines are independent; a substring with no U+FFFD is in a
    decoded message only where its UTF-8 bytes are in the raw line.
    """
    if plan.levels is not None or plan.contains is None or "\ufffd" in plan.contains:
        return None
    return plan.contains.encode()


def _matcher(plan: PagePlan) -> Callable[[Line, str | None], bool]:
    """Whether a line matches the filters, given its effective level."""
    levels = frozenset(plan.levels) if plan.levels is not None else None
    contains = plan.contains

    def match(line: Line, level: str | None) -> bool:
        if levels is not None and (level is None or level.upper() not in levels):
            return False
        return contains is None or contains in line.message

    return match


async def _block_before(
    file: LogFile, high: int, start: int, size: int, *, grow: bool = True
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


async def _level_before(file: LogFile, position: int, start: int) -> tuple[str | None, int]:
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


async def scan_forward(
    file: LogFile, position: int, start: int, stop: int, plan: PagePlan
) -> tuple[list[Line], int]:
    """Up to `plan.limit` matching lines from `position`; (them, where the scan stopped)."""
    match = _matcher(plan)
    level, scanned = None, 0
    if plan.levels is not None:
        level, scanned = await _level_before(file, position, start)
    found: list[Line] = []
    first = position
    needle = _needle(plan)
    # The first block is read whatever the search above cost: every page moves on.
    while position < stop and (scanned < SCAN_BUDGET or position == first):
        size = min(SCAN_BLOCK, max(1, SCAN_BUDGET - scanned))
        high = min(stop, position + size)
        # Past the budget only to read one line whole, when the page has no other way on.
        data = await _whole_lines(file, position, high, stop, grow=position == first)
        if not data:
            break
        lines = [] if needle is not None and needle not in data else await _parse(data, position)
        for line in lines:
            if line.shaped:
                level = line.level
            if match(line, level):
                found.append(line)
                if len(found) == plan.limit:
                    return found, line.end
        position += len(data)
        scanned += len(data)
    return found, position


async def scan_backward(
    file: LogFile, position: int, start: int, plan: PagePlan
) -> tuple[list[Line], int]:
    """Up to `plan.limit` matching lines before `position`; (them in file order, where the
    scan stopped).

    A line's effective level comes from above it, which a backward scan reads later: the
    lines at the top of what was read, above its first shaped line, wait in `pending`
    until a block further up settles them. Lines still pending when the budget runs out
    count as having no level.
    """
    match = _matcher(plan)
    by_level = plan.levels is not None
    room = plan.limit
    found: list[Line] = []  # the latest first
    pending: list[Line] = []  # file order
    high, scanned = position, 0
    needle = _needle(plan)
    while high > start and scanned < SCAN_BUDGET:
        size = min(SCAN_BLOCK, SCAN_BUDGET - scanned)
        data, low = await _block_before(file, high, start, size, grow=high == position)
        if not data:
            break
        scanned += len(data)
        level: str | None = None
        seen = False
        unknown: list[Line] = []
        known: list[tuple[Line, str | None]] = []
        lines = [] if needle is not None and needle not in data else await _parse(data, low)
        for line in lines:
            if line.shaped:
                level, seen = line.level, True
            if seen or not by_level:
                known.append((line, level))
            else:
                unknown.append(line)
        if seen:
            settled = [(line, level) for line in pending]
            pending = unknown
        else:
            settled, pending = [], unknown + pending
        for line, effective in reversed(known + settled):
            if match(line, effective):
                found.append(line)
                if len(found) == room:
                    return found[::-1], line.offset
        if plan.contains is not None:
            pending = [line for line in pending if plan.contains in line.message]
        pending = pending[len(pending) - (room - len(found)) :]
        high = low
    return found[::-1], high
