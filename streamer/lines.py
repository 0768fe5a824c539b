"""The line model of Get Logs: log bytes to lines with byte offsets, and times to compare.

Each line's timestamp, level and message come from the download's own encoder
(`encoders.LineEncoder`: the native parser where it is built, else its pure-Python
twin), so a page entry and the download's JSON object for the same line can never
disagree. What this module adds is where each line starts and ends in the log, the
cut of long messages, and an order on RFC 3339 times. No I/O.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import orjson

from .encoders import FIELD_NAMES, Fields, LineEncoder

MAX_MESSAGE = 65_536
"""Bytes of UTF-8 of a message in an entry; a longer one is cut and marked truncated."""

TimeKey = tuple[int, str]
"""An instant that sorts: seconds since 1970 (of a proleptic calendar), fraction digits."""

_NEWLINE = re.compile(b"\n")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


class Line(NamedTuple):
    """One log line: [offset, end) in the log (its "\\n" included) and its model."""

    offset: int
    end: int
    timestamp: str | None
    level: str | None
    message: str

    @property
    def shaped(self) -> bool:
        return self.timestamp is not None


def parse_block(block: bytes, base: int) -> list[Line]:
    """The lines of `block`, which starts a line at log offset `base`.

    Every line ends with "\\n" but perhaps the last, which counts as a whole line (the
    caller passes an unterminated last line only where the log really ends).
    """
    if not block:
        return []
    encoder = LineEncoder("json", "default")
    records = orjson.loads(encoder.feed(block) + encoder.finish())
    ends = [base + found.end() for found in _NEWLINE.finditer(block)]
    if not ends or ends[-1] != base + len(block):
        ends.append(base + len(block))
    return [
        Line(start, end, record["timestamp"], record["level"], record["message"])
        for start, end, record in zip([base, *ends[:-1]], ends, records, strict=True)
    ]


def entry(line: Line, fields: Fields = "default") -> dict[str, object]:
    """The page entry of `line`: offset, then section 3's three values under `fields` names."""
    timestamp_key, level_key, message_key = FIELD_NAMES[fields]
    out: dict[str, object] = {
        "offset": line.offset,
        timestamp_key: line.timestamp,
        level_key: line.level,
        message_key: line.message,
    }
    # A character takes at most 4 bytes: most messages are short enough not to encode.
    if len(line.message) * 4 > MAX_MESSAGE:
        encoded = line.message.encode()
        if len(encoded) > MAX_MESSAGE:
            # "ignore" drops only a character cut in two at the end: the rest is valid.
            out[message_key] = encoded[:MAX_MESSAGE].decode("utf-8", "ignore")
            out["truncated"] = True
    return out


def time_key(text: str) -> TimeKey:
    """The instant of a timestamp of section 3's shape, for ordering; ValueError otherwise.

    Not a calendar check: "2026-02-31" sorts after "2026-02-28" as its numbers say.
    """
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not a timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, sign, offset_h, offset_m = match.groups()[6:]
    seconds = _days(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    if sign is not None:
        offset = (int(offset_h) * 60 + int(offset_m)) * 60
        seconds += -offset if sign == "+" else offset
    return seconds, (fraction or "").rstrip("0")


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468
