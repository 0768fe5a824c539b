"""Byte ranges (RFC 9110 section 14): parse a `Range` header, resolve it against a size. No I/O.

streamer serves a single range. A header it does not serve (another unit, a syntax error,
several ranges) is ignored and the whole representation is sent, as RFC 9110 allows; only
a well-formed single range that no byte of the representation satisfies is an error
(`RangeNotSatisfiable`, 416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RangeNotSatisfiable

# int-range "first-last" / "first-", or suffix-range "-length"; DIGIT is ASCII only.
_SPEC = re.compile(r"(?:([0-9]+)-([0-9]*)|-([0-9]+))", re.ASCII)
_UNIT = re.compile(r"[Bb][Yy][Tt][Ee][Ss]=")
_OWS = " \t"


@dataclass(frozen=True)
class RangeSpec:
    """One range-spec as written: `first`/`last` of an int-range, or a `suffix` length."""

    first: int | None = None
    last: int | None = None
    suffix: int | None = None


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of a representation of `size` bytes; never empty."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


# Above any object's size: a position of more digits than this selects past the end.
# Python refuses to convert strings of over 4300 digits, so they are never converted.
_HUGE = 10**18


def _position(digits: str) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 18 else _HUGE


def _below(a: str, b: str) -> bool:
    """Whether the decimal `a` is less than the decimal `b`, at any length."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def parse_range(header: str) -> RangeSpec | None:
    """The single range of a `Range: bytes=...` value, or None when it is not one.

    None for another unit, bad syntax, an int-range whose last is below its first (invalid
    per RFC 9110 section 14.1.1), and for several ranges (which streamer does not serve).
    Empty list elements are skipped, as RFC 9110 section 5.6.1.2 asks.
    """
    value = header.strip(_OWS)
    unit = _UNIT.match(value)
    if unit is None:
        return None
    elements = [item.strip(_OWS) for item in value[unit.end() :].split(",")]
    specs = [item for item in elements if item]
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        return RangeSpec(suffix=_position(suffix))
    if last and _below(last, first):
        return None
    return RangeSpec(first=_position(first), last=_position(last) if last else None)


def resolve(spec: RangeSpec, size: int) -> ByteRange | None:
    """The bytes `spec` selects of a representation of `size` bytes.

    Raises RangeNotSatisfiable when no byte is selected: an int-range starting at or past
    the end, or a suffix of length 0. None for a suffix range of an empty representation:
    it is satisfiable but selects nothing, so the whole (empty) body is the answer.
    """
    if spec.suffix is not None:
        if spec.suffix == 0:
            raise RangeNotSatisfiable(size)
        if size == 0:
            return None
        return ByteRange(max(0, size - spec.suffix), size, size)
    # bandit B101 (assert): for mypy only, the suffix range (no `first`) returned above.
    assert spec.first is not None  # nosec B101
    if spec.first >= size:
        raise RangeNotSatisfiable(size)
    end = size if spec.last is None else min(spec.last + 1, size)
    return ByteRange(spec.first, end, size)
