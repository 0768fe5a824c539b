"""Validators and conditional requests (RFC 9110 sections 8.8 and 13). No I/O.

streamer makes its own entity tags: a hash of the stored object's identity (key, the
store's version or etag, modification time, size) and of the representation sent (format,
field names, content coding). Backend etags are never passed through: an S3 multipart
etag or a GCS generation says nothing about a JSON rendering of the object, and a tag
built only from the store's metadata is the same on every replica and after restarts.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


def make_etag(parts: Iterable[str], *, weak: bool = False) -> str:
    """An entity tag naming `parts`: 22 URL-safe characters, quoted, `W/` when weak."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()[:16]
    tag = '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + '"'
    return "W/" + tag if weak else tag


def http_date(moment: datetime) -> str:
    """IMF-fixdate, as Last-Modified carries it (`Sun, 06 Nov 1994 08:49:37 GMT`)."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date (any of the three forms RFC 9110 section 5.6.7 lists), else None."""
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def not_modified(
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    modified: datetime | None,
) -> bool:
    """Whether a GET or HEAD should answer 304 (RFC 9110 section 13.2.2, steps 3 and 4).

    If-None-Match, when present, decides alone (weak comparison); If-Modified-Since is
    looked at only without it, and ignored when it is not a valid date.
    """
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        if etag is None:
            return False
        return any(
            _opaque(match.group(0)) == _opaque(etag) for match in _TAG.finditer(if_none_match)
        )
    if if_modified_since is None or modified is None:
        return False
    since = parse_http_date(if_modified_since)
    return since is not None and modified.replace(microsecond=0) <= since


def if_range_holds(value: str, etag: str | None, modified: datetime | None, now: datetime) -> bool:
    """Whether an If-Range condition lets the Range be served (RFC 9110 section 13.1.5).

    An entity tag must match strongly (a weak tag never does). A date must equal
    Last-Modified exactly, and Last-Modified must be a strong validator: at least a
    second older than now, so that a change within the same second cannot go unseen.
    """
    value = value.strip()
    if value.startswith(('"', "W/")):
        match = _TAG.fullmatch(value)
        return (
            match is not None
            and match.group(1) is None
            and etag is not None
            and not etag.startswith("W/")
            and value == etag
        )
    date = parse_http_date(value)
    if date is None or modified is None:
        return False
    last_modified = modified.replace(microsecond=0)
    return last_modified == date and last_modified <= now - timedelta(seconds=1)
