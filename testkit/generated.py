"""A log of any size generated on the fly, for the memory store: no byte of it is stored.

Fixed-width lines (64 bytes), one millisecond apart from 2026-03-13T00:00:00Z, every
1000th an ERROR. fsspec's memory filesystem reads an object through `getbuffer()[a:b]`;
this object makes those bytes when they are asked for, so a 10 GiB log costs nothing
until it is read, and then only what is read.
"""

from __future__ import annotations

from datetime import UTC, datetime

import fsspec

LINE = 64
_EPOCH = datetime(2026, 3, 13, tzinfo=UTC)


def line(number: int) -> bytes:
    # 2026-03-13 plus at most a few days (10 GiB is 1.9 days of lines): no month to turn.
    seconds, millis = divmod(number, 1000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    day, hour = divmod(hours, 24)
    level = b"ERROR" if number % 1000 == 999 else b"INFO"
    text = b"2026-03-%02dT%02d:%02d:%02d.%03dZ [%s] step %d loss=0.%04d" % (
        13 + day,
        hour,
        minute,
        second,
        millis,
        level,
        number,
        number % 9973,
    )
    return text.ljust(LINE - 1) + b"\n"


def timestamp(number: int) -> str:
    """The timestamp of line `number`."""
    return line(number)[:24].decode()


def render(start: int, end: int) -> bytes:
    first, last = start // LINE, (end + LINE - 1) // LINE
    data = b"".join(line(number) for number in range(first, last))
    return data[start - first * LINE : end - first * LINE]


class _View:
    def __init__(self, size: int) -> None:
        self.nbytes = size

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(self.nbytes)
        return render(start, stop)


class GeneratedLog:
    """What fsspec's memory filesystem needs of a stored file: size, created, getbuffer."""

    def __init__(self, size: int) -> None:
        self.size = size - size % LINE
        self.created = _EPOCH

    def getbuffer(self) -> _View:
        return _View(self.size)


def put_generated(root: str, key: str, size: int) -> GeneratedLog:
    """Store a generated log of about `size` bytes at `key` below a memory:// root."""
    fs = fsspec.filesystem("memory")
    log = GeneratedLog(size)
    path = fs._strip_protocol(f"{root.rstrip('/')}/{key}")
    fs.store[path] = log
    return log
