"""Content codings: which one a client accepts, and gzip on the fly. No I/O.

The only coding streamer produces is gzip: a log stored as `.gz` is sent as stored, and,
when `STREAMER_GZIP` is on, other responses are compressed as they stream.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Protocol

_QVALUE = re.compile(r"q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", re.ASCII | re.IGNORECASE)


class Transform(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value (RFC 9110 section 12.5.3) prefers gzip to identity.

    gzip (or its alias x-gzip, or `*` when gzip is not named) must have a non-zero
    qvalue at least that of identity when identity is named. No header means identity:
    RFC 9110 would allow any coding then, but clients that send none (curl without
    --compressed, wget) save the body as it comes. An element with a malformed qvalue is
    ignored.
    """
    if header is None:
        return False
    weights: dict[str, float] = {}
    for element in header.split(","):
        coding, *params = (part.strip(" \t") for part in element.split(";"))
        coding = coding.lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            if param[:2].lower() == "q=":
                match = _QVALUE.fullmatch(param)
                q = float(match.group(1)) if match else -1.0
        if q < 0:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        weights[coding] = max(q, weights.get(coding, q))
    gzip = weights.get("gzip", weights.get("*", 0.0))
    return gzip > 0 and gzip >= weights.get("identity", 0.0)


class GzipEncoder:
    """gzip on the fly, flushed at the end of every chunk (Z_SYNC_FLUSH).

    A flush costs a few bytes per chunk and keeps every chunk decodable as soon as it
    arrives, so a slow log never sits in the compressor's window.
    """

    def __init__(self, level: int = 6) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        return self._deflate.compress(chunk) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._deflate.flush(zlib.Z_FINISH)


class Chain:
    """Transforms applied one after the other."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self._transforms = tuple(transforms)

    def feed(self, chunk: bytes) -> bytes:
        for transform in self._transforms:
            chunk = transform.feed(chunk)
        return chunk

    def finish(self) -> bytes:
        tail = b""
        for transform in self._transforms:
            tail = transform.feed(tail) + transform.finish()
        return tail
