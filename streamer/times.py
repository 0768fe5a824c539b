"""RFC 3339 times, read in one place: log timestamps, Get Logs bounds, catalog metadata.

The rules:
- One pattern reads them all; each reader says how strict it is. A log line's timestamp
  and a query's bound need "T" and an offset; run metadata may use a space between date
  and time and may omit the offset (then it is UTC).
- `time_key` orders instants without a calendar check: a line's place in the order never
  depends on whether its date exists ("2026-02-31" sorts as its numbers say).
- A query's bound and a metadata time must exist: a calendar date, hours to 23, minutes
  to 59, a leap second (:60) allowed, an offset to 23:59.
- In a query, a space where the offset's sign belongs is the "+" that URL decoding made
  a space.
No I/O.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

TimeKey = tuple[int, str]
"""An instant that sorts: seconds since 1970 (of a proleptic calendar), fraction digits."""

TIMESTAMP = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
"""The shape of a log line's timestamp (section 3), as pattern text for line parsers."""

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})([Tt ])([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([-+ ])([0-9]{2}):([0-9]{2}))?"
)


class _Parts(NamedTuple):
    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    fraction: str
    separator: str
    sign: str | None  # "Z", "+", "-", " " or None (no offset)
    offset_minutes: int


def _parts(text: str) -> _Parts | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, separator, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
    return _Parts(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        fraction or "",
        separator,
        "Z" if zulu else sign,
        int(oh) * 60 + int(om) if sign else 0,
    )


def _exists(parts: _Parts) -> bool:
    return (
        1 <= parts.month <= 12
        and 1 <= parts.day <= calendar.monthrange(parts.year, parts.month)[1]
        and parts.hour <= 23
        and parts.minute <= 59
        and parts.second <= 60
        and parts.offset_minutes // 60 <= 23
        and parts.offset_minutes % 60 <= 59
    )


def time_key(text: str) -> TimeKey:
    """The instant of a timestamp of section 3's shape, for ordering; ValueError otherwise."""
    parts = _parts(text)
    if parts is None or parts.separator == " " or parts.sign in (None, " "):
        raise ValueError(f"not a timestamp: {text!r}")
    seconds = (
        _days(parts.year, parts.month, parts.day) * 86_400
        + parts.hour * 3600
        + parts.minute * 60
        + parts.second
    )
    offset = parts.offset_minutes * 60
    seconds += -offset if parts.sign == "+" else offset
    return seconds, parts.fraction.rstrip("0")


def query_time(text: str) -> str | None:
    """A query's bound as RFC 3339 text (its offset sign restored), or None if it is not one."""
    parts = _parts(text)
    if parts is None or parts.separator == " " or parts.sign is None or not _exists(parts):
        return None
    return text if parts.sign != " " else f"{text[:-6]}+{text[-5:]}"


def parse_datetime(text: str) -> datetime:
    """A metadata time (no offset: UTC); ValueError, saying why, when it is not one."""
    parts = _parts(text)
    if parts is None or parts.sign == " ":
        raise ValueError("a time is not an RFC 3339 string")
    if parts.offset_minutes // 60 > 23 or parts.offset_minutes % 60 > 59:
        raise ValueError("a time has an impossible offset")
    if not _exists(parts):
        raise ValueError("a time is not a calendar date")
    offset = timedelta(minutes=parts.offset_minutes)
    tz = UTC if parts.sign in (None, "Z") else timezone(-offset if parts.sign == "-" else offset)
    micros = int(parts.fraction[:6].ljust(6, "0"))
    # datetime has no leap second: :60 is held at :59.
    return datetime(
        parts.year,
        parts.month,
        parts.day,
        parts.hour,
        parts.minute,
        min(parts.second, 59),
        micros,
        tz,
    )


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468
