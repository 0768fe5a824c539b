"""Log bytes to JSON bytes, the ``format=json`` body of SPEC section 3, streamed.

One object per log line, compact and byte-identical to ``orjson.dumps`` of
``{"line": n, "timestamp": str | None, "level": str | None, "message": str}``.

Byte layout. Style ``json``: ``[``, a newline, the objects separated by ``,`` and a
newline, a newline, ``]``; an empty log is ``[]``::

    [
    {"line":1,"timestamp":"2026-03-13T10:00:00.123Z","level":"INFO","message":"Start."},
    {"line":2,"timestamp":null,"level":null,"message":""}
    ]

Style ``ndjson``: each object followed by a newline; an empty log is empty.

Two implementations, one chosen at import as `LineEncoder`: `NativeLineEncoder` hands
all the complete lines of a chunk to the native ``streamer._speedups.encode_lines`` (one
C pass: split, match, replace what is not UTF-8, escape, format); `PythonLineEncoder`,
where that module was not built, escapes, matches and formats them in a few C-level
passes of Python's own (about a third as fast). `reference_encode` is the plain model
(split, one regex and one ``orjson.dumps`` per line) that the tests hold both to.
"""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING, Literal

import orjson

from .times import TIMESTAMP

try:
    from . import _speedups
except ImportError:  # built without a C compiler: the pure-Python path serves
    _speedups = None  # type: ignore[assignment]

Style = Literal["json", "ndjson"]
Fields = Literal["default", "ecs", "datadog", "otel"]
# What each log platform calls the timestamp, the level and the message.
FIELD_NAMES: dict[Fields, tuple[str, str, str]] = {
    "default": ("timestamp", "level", "message"),
    "ecs": ("@timestamp", "log.level", "message"),
    "datadog": ("timestamp", "status", "message"),
    "otel": ("Timestamp", "SeverityText", "Body"),
}

__all__ = [
    "FIELD_NAMES",
    "NATIVE",
    "Fields",
    "LineEncoder",
    "NativeLineEncoder",
    "PythonLineEncoder",
    "Style",
    "parse_line",
    "reference_encode",
]

NATIVE = _speedups is not None
"""Whether the native encoder was built; `LineEncoder` is `NativeLineEncoder` when it was."""

# Built from text with [0-9], not \d: the same in a bytes pattern as in a str one.
_TIMESTAMP = TIMESTAMP.encode()
_LINE = re.compile(rb"(" + _TIMESTAMP + rb") \[([A-Za-z]+)\](?: (.*))?", re.DOTALL)
# The same shape as an optional prefix, so that every line of a block is one match.
# It runs on escaped text: escapes start with a backslash, which no prefix can hold, so
# escaping never changes a line's shape. "|)" and "++" instead of ")?" and "+" spare
# sre its general repeat (measured a third faster); they match the same lines.
_LINES = re.compile(
    rb"^(?:("
    + _TIMESTAMP.replace(rb"[0-9]+)?", rb"[0-9]++|)")
    + rb") \[([A-Za-z]++)\](?: |$)|)(.*+)$",
    re.MULTILINE,
)
# For a line too long to hold: a prefix that decides "shaped", and a loose superset of
# the heads that more bytes could still make shaped ("\r": the line may end there).
_PREFIX = re.compile(rb"(" + _TIMESTAMP + rb") \[([A-Za-z]+)\] ")
_MAYBE_PREFIX = re.compile(rb"[-+.:0-9TtZz]*(?: (?:\[[A-Za-z]*\]?)?)?\r?")
_CONTROLS = bytes(range(0x20)).replace(b"\n", b"")
_NOT_CONTROLS = bytes(sorted(set(range(0x100)) - set(_CONTROLS)))
_SLICE = 64 << 10


class _Templates:
    """The fixed bytes around the values, for one set of field names."""

    def __init__(self, fields: Fields) -> None:
        timestamp, level, message = (name.encode() for name in FIELD_NAMES[fields])
        self.number = b'{"line":%d,"' + timestamp + b'":"'
        self.fields = b'%b","' + level + b'":"%b","' + message + b'":"'
        # Every quote inside a JSON string is escaped, so this only matches where we put it.
        self.unshaped = b'"' + timestamp + b'":"","' + level + b'":""'
        self.nulls = b'"' + timestamp + b'":null,"' + level + b'":null'


def parse_line(number: int, line: bytes, fields: Fields = "default") -> dict[str, object]:
    """Model one line, given without its ``\\n`` and line-ending ``\\r`` (SPEC section 3)."""
    timestamp_key, level_key, message_key = FIELD_NAMES[fields]
    match = _LINE.fullmatch(line)
    if match is None:
        return {
            "line": number,
            timestamp_key: None,
            level_key: None,
            message_key: line.decode("utf-8", "replace"),
        }
    timestamp, level, message = match.groups(b"")
    return {
        "line": number,
        timestamp_key: timestamp.decode("ascii"),
        level_key: level.decode("ascii"),
        message_key: message.decode("utf-8", "replace"),
    }


def reference_encode(data: bytes, style: Style = "json", fields: Fields = "default") -> bytes:
    """Encode a whole log the obvious way; the model that `LineEncoder` must equal."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    objects = [
        orjson.dumps(parse_line(number, line.removesuffix(b"\r"), fields))
        for number, line in enumerate(lines, start=1)
    ]
    if style == "ndjson":
        return b"".join(obj + b"\n" for obj in objects)
    return b"[\n" + b",\n".join(objects) + b"\n]" if objects else b"[]"


def _escape(text: bytes) -> bytes:
    """JSON-escape valid UTF-8 as orjson escapes strings, but keep newlines."""
    text = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    # One C pass finds the few control bytes present; a regex scan is ten times slower.
    for control in set(text.translate(None, _NOT_CONTROLS)):
        text = text.replace(bytes([control]), orjson.dumps(chr(control))[1:-1])
    return text


class PythonLineEncoder:
    """Feeds log bytes chunk by chunk, returns JSON bytes ready to send.

    Chunks may split anywhere; the output of all `feed` calls and `finish`, joined, is
    the same for any split and equals `reference_encode` of the whole input. A line
    longer than ``max_line`` bytes is sent piece by piece rather than held whole, unless
    what has come of it could still turn into a timestamp and level (a line of nothing
    but digits, signs and colons, say).
    """

    def __init__(
        self,
        style: Style = "json",
        fields: Fields = "default",
        *,
        max_line: int = 1 << 20,
        first_line: int = 1,
    ) -> None:
        self._json = style == "json"
        self._max_line = max_line
        self._templates = templates = _Templates(fields)
        # In style json every object starts with ",\n"; the very first swaps "," for "[".
        self._number = (b",\n" if self._json else b"") + templates.number
        self._owe_bracket = self._json
        self._end = b'"}' if self._json else b'"}\n'
        self._fields = templates.fields + b"%b" + self._end
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._next_line = first_line  # a resumed follow numbers on from its first line
        # Set while a long line's message is being sent: its decoder, and a held "\r".
        self._decoder: codecs.IncrementalDecoder | None = None
        self._cr = False

    def feed(self, chunk: bytes) -> bytes:
        """Take the next bytes of the log; return the JSON of what they complete.

        May return ``b""``. In style ``json`` the first non-empty output starts with ``[``.
        """
        outs = []
        if self._decoder is not None:
            end = chunk.find(b"\n")
            if end < 0:
                return self._stream(chunk, last=False)
            outs.append(self._stream(chunk[:end], last=True))
            chunk = chunk[end + 1 :]
        cut = chunk.rfind(b"\n") + 1
        if cut:
            head = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            outs.append(self._whole_lines(head, chunk, cut))
        if cut < len(chunk):
            self._pending.append(chunk[cut:])
            self._pending_size += len(chunk) - cut
            if self._pending_size > self._max_line:
                outs.append(self._open())
        return self._bracket(b"".join(outs))

    def finish(self) -> bytes:
        """Encode the last line if it lacks a ``\\n``, and close the output.

        Style ``json`` ends with ``]`` (a whole output of ``[]`` for an empty log).
        """
        out = b""
        if self._decoder is not None:
            out = self._stream(b"", last=True)
        elif self._pending:
            out = self._encode(b"".join(self._pending).removesuffix(b"\r"), ends_in_newline=False)
            self._pending, self._pending_size = [], 0
        if not self._json:
            return out
        out = self._bracket(out)
        return b"[]" if self._owe_bracket else out + b"\n]"

    def _bracket(self, out: bytes) -> bytes:
        """Swap the "," that starts the first object for the "[" that opens the array."""
        if self._owe_bracket and out:
            self._owe_bracket = False
            return b"[" + out[1:]
        return out

    def _whole_lines(self, head: bytes, chunk: bytes, cut: int) -> bytes:
        """Encode ``head + chunk[:cut]``: whole lines, each ending in "\\n"."""
        block = head + chunk[:cut]
        if b"\r" in block:
            # Every line here ends in "\n", so each line-ending "\r" precedes one.
            block = block.replace(b"\r\n", b"\n")
        # Slices that stay in the CPU cache through all passes: 10% faster on 1 MiB.
        outs = []
        start = 0
        while start < len(block):
            end = block.find(b"\n", start + _SLICE) + 1 or len(block)
            outs.append(self._encode(block[start:end], ends_in_newline=True))
            start = end
        return b"".join(outs)

    def _encode(self, block: bytes, *, ends_in_newline: bool) -> bytes:
        """Encode the whole lines in ``block``, whose line-ending "\\r" are already gone."""
        if not block.isascii():
            try:
                block.decode()
            except UnicodeDecodeError:
                # Replacing in the whole block equals replacing line by line: an
                # invalid sequence never swallows the ASCII "\n" after it.
                block = block.decode("utf-8", "replace").encode()
        escaped = _escape(block)
        found = _LINES.findall(escaped, 0, len(escaped) - ends_in_newline)
        first = self._next_line
        self._next_line += len(found)
        # One format per line for the numbers, one for the fields, one join: measured
        # faster than one format of all four.
        parts = [b""] * (2 * len(found))
        parts[::2] = map(self._number.__mod__, range(first, self._next_line))
        parts[1::2] = map(self._fields.__mod__, found)
        return b"".join(parts).replace(self._templates.unshaped, self._templates.nulls)

    def _open(self) -> bytes:
        """Start sending the pending line's object before its end is known."""
        head = b"".join(self._pending)
        match = _PREFIX.match(head)
        if match is None and _MAYBE_PREFIX.fullmatch(head):
            self._pending = [head]
            return b""
        self._pending, self._pending_size = [], 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fields = match.groups() if match else (b"", b"")
        templates = self._templates
        start = self._number % self._next_line + templates.fields % fields
        self._next_line += 1
        body = head[match.end() :] if match else head
        return start.replace(templates.unshaped, templates.nulls) + self._stream(body, last=False)

    def _stream(self, piece: bytes, *, last: bool) -> bytes:
        """Send more of a long line's message, ``\\n`` excluded; close it if ``last``."""
        # bandit B101 (assert): for mypy only, every caller has checked it.
        assert self._decoder is not None  # nosec B101
        if self._cr:
            piece = b"\r" + piece
        # A "\r" at the end of a piece may end the line: hold it until we know.
        self._cr = not last and piece.endswith(b"\r")
        text = self._decoder.decode(piece.removesuffix(b"\r"), last).encode()
        if not last:
            return _escape(text)
        self._decoder = None
        return _escape(text) + self._end


class NativeLineEncoder(PythonLineEncoder):
    """`PythonLineEncoder` with its whole lines encoded by ``streamer._speedups``."""

    def __init__(
        self,
        style: Style = "json",
        fields: Fields = "default",
        *,
        max_line: int = 1 << 20,
        first_line: int = 1,
    ) -> None:
        if _speedups is None:
            raise RuntimeError("streamer._speedups was not built")
        super().__init__(style, fields, max_line=max_line, first_line=first_line)
        timestamp, level, message = (name.encode() for name in FIELD_NAMES[fields])
        self._native_templates = (
            self._number.partition(b"%d")[0],
            b',"' + timestamp + b'":"',
            b'","' + level + b'":"',
            b'","' + message + b'":"',
            b',"' + timestamp + b'":null,"' + level + b'":null,"' + message + b'":"',
            self._end,
        )

    def _whole_lines(self, head: bytes, chunk: bytes, cut: int) -> bytes:
        # One call, no copy of the chunk: it joins the held-over start of the first line
        # itself, and drops each "\r" before a "\n".
        out, count = _speedups.encode_lines(
            head, chunk, 0, cut, self._next_line, True, self._native_templates
        )
        self._next_line += count
        return out

    def _encode(self, block: bytes, *, ends_in_newline: bool) -> bytes:
        # Only `finish` calls it here, with a last line whose "\r" is gone.
        out, count = _speedups.encode_lines(
            b"", block, 0, len(block), self._next_line, ends_in_newline, self._native_templates
        )
        self._next_line += count
        return out


# Chosen once, as uvicorn picks httptools over h11 when it is there. Type checkers see the
# interface both share.
if TYPE_CHECKING:
    LineEncoder = PythonLineEncoder
else:
    LineEncoder = NativeLineEncoder if NATIVE else PythonLineEncoder
