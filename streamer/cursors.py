"""Page cursors: opaque, signed, and bound to what they were made for. No I/O.

A cursor is ``<payload>.<mac>``: the payload is URL-safe base64 (no padding) of a
compact JSON array, the mac the first 16 bytes of HMAC-SHA256 over the payload's text,
in the same base64. The mac covers the text, not the decoded bytes, and is compared as
text, so that every change of any character is refused, even one that base64 would
decode to the same bytes. The first key signs; every configured key verifies, so that
an operator can rotate keys: add the new one first, drop the old one later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidCursor

Direction = Literal["backward", "forward"]

_FORMAT = 1
_MAC_BYTES = 16
_TEXT = re.compile(r"[A-Za-z0-9_-]{1,4096}\.[A-Za-z0-9_-]{22}")
_DIRECTIONS: dict[str, Direction] = {"b": "backward", "f": "forward"}


@dataclass(frozen=True)
class Walk:
    """What a walk of pages is bound to: the model, the run (None: the default run, until
    the first page finds it), the direction, the time window and the filters."""

    model_id: str
    run_id: str | None
    direction: Direction
    since: str | None = None
    until: str | None = None
    levels: tuple[str, ...] | None = None
    contains: str | None = None

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def filtered(self) -> bool:
        return self.levels is not None or self.contains is not None


@dataclass(frozen=True)
class Cursor:
    """Where the next page of `walk` starts, and the object it was made on.

    `start` and `stop` are the window's edges once found for good (None: find them
    again, the log may still grow); `version` is the object's version it was made on,
    `live` whether the run was still writing it then.
    """

    walk: Walk
    version: str
    position: int
    start: int | None = None
    stop: int | None = None
    live: bool = False


def derive_key(secret: str) -> bytes:
    """The default cursor key: HKDF-SHA256 of the JWT secret, for that purpose alone."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"streamer cursor key v1")
    return hkdf.derive(secret.encode())


def random_key() -> str:
    """A fresh key, as text that `STREAMER_CURSOR_KEYS` takes."""
    return secrets.token_urlsafe(32)


def cursor_keys(configured: Sequence[str] | None, jwt_secret: str | None) -> list[bytes]:
    """The keys of `STREAMER_CURSOR_KEYS`, else one derived from the JWT secret, else one
    random key (then only this process accepts its cursors; `serve` shares one between
    its workers)."""
    if configured:
        return [key.encode() for key in configured]
    if jwt_secret:
        return [derive_key(jwt_secret)]
    return [secrets.token_bytes(32)]


class CursorCodec:
    """Signs cursors with the first key, verifies them with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one cursor key is needed")
        self._keys = tuple(keys)

    def encode(self, cursor: Cursor) -> str:
        walk = cursor.walk
        body = [
            _FORMAT,
            walk.model_id,
            walk.run_id,
            cursor.version,
            cursor.position,
            walk.direction[0],
            walk.since,
            walk.until,
            list(walk.levels) if walk.levels is not None else None,
            walk.contains,
            cursor.start,
            cursor.stop,
            cursor.live,
        ]
        payload = _b64(orjson.dumps(body))
        return f"{payload}.{self._mac(self._keys[0], payload)}"

    def decode(self, text: str) -> Cursor:
        """The cursor `text` stands for; InvalidCursor for anything else."""
        if not _TEXT.fullmatch(text):
            raise InvalidCursor()
        payload, mac = text.split(".")
        # Every key is tried, whichever matches, so the time does not tell which did.
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(self._mac(key, payload), mac)
        if not valid:
            raise InvalidCursor()
        try:
            body = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return _cursor(body)
        except (ValueError, TypeError, binascii.Error):
            raise InvalidCursor() from None

    @staticmethod
    def _mac(key: bytes, payload: str) -> str:
        digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _cursor(body: Any) -> Cursor:
    """A signed body is ours, but its shape is still checked: keys outlive versions."""
    if not isinstance(body, list) or len(body) != 13 or body[0] != _FORMAT:
        raise ValueError("unknown cursor format")
    _, model_id, run_id, version, position, direction, since, until, levels, contains = body[:10]
    start, stop, live = body[10:]
    strings = (model_id, run_id, version)
    optional = (since, until, contains)
    numbers = (start, stop)
    if (
        not all(isinstance(value, str) for value in strings)
        or not all(value is None or isinstance(value, str) for value in optional)
        or not all(value is None or _position(value) for value in numbers)
        or not _position(position)
        or direction not in _DIRECTIONS
        or not isinstance(live, bool)
        or not (levels is None or all(isinstance(level, str) for level in levels))
    ):
        raise ValueError("malformed cursor")
    walk = Walk(
        model_id,
        run_id,
        _DIRECTIONS[direction],
        since,
        until,
        tuple(levels) if levels is not None else None,
        contains,
    )
    return Cursor(walk, version, position, start, stop, live)


def _position(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
