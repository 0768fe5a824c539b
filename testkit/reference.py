"""SPEC's line model the obvious way (the reference parser, line by line), to hold the
page reader and Get Logs to, and a log with every feature at known times.

Rules: slow and plain on purpose; it shares only `parse_line` and `time_key` with what it
checks.
"""

from __future__ import annotations

from streamer.encoders import parse_line
from streamer.lines import Line, time_key


def reference_lines(data: bytes, terminal: bool = True) -> list[Line]:
    """SPEC's line model with offsets, through the reference parser; a run still writing
    its log holds back a last line without its "\\n"."""
    lines, offset = [], 0
    for raw in data.split(b"\n"):
        if offset == len(data):
            break
        ended = offset + len(raw) < len(data)
        if not ended and not terminal:
            break
        model = parse_line(0, raw.removesuffix(b"\r"))
        end = offset + len(raw) + ended
        timestamp, level, message = model["timestamp"], model["level"], model["message"]
        assert isinstance(message, str)
        lines.append(Line(offset, end, timestamp, level, message))  # type: ignore[arg-type]
        offset = end
    return lines


def reference_page_lines(
    data: bytes,
    terminal: bool = True,
    since: str | None = None,
    until: str | None = None,
    levels: tuple[str, ...] | None = None,
    contains: str | None = None,
) -> list[Line]:
    """Every line a walk must return, in file order, filtered the obvious way."""
    lines = reference_lines(data, terminal)
    out, level, timestamp = [], None, None
    for line in lines:
        if line.timestamp is not None:
            level, timestamp = line.level, line.timestamp
        if since is not None or until is not None:
            if timestamp is None:
                continue
            key = time_key(timestamp)
            if since is not None and key < time_key(since):
                continue
            if until is not None and key >= time_key(until):
                continue
        if levels is not None and (level is None or level.upper() not in levels):
            continue
        if contains is not None and contains not in line.message:
            continue
        out.append(line)
    return out


def timed_log(lines: int, traceback_every: int = 7) -> bytes:
    """A log of non-decreasing timestamps, levels cycling, tracebacks between some lines."""
    out = []
    for i in range(lines):
        level = ("INFO", "WARN", "ERROR", "debug")[i % 4]
        out.append(
            b"2026-03-13T%02d:%02d:%02dZ [%s] step %d\n"
            % (i // 3600, i // 60 % 60, i % 60, level.encode(), i)
        )
        if i % traceback_every == 3:
            out.append(b"Traceback (most recent call last):\n  File x, line %d\n" % i)
    return b"Banner without a timestamp\n" + b"".join(out)
