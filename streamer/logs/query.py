"""The query of Get Logs, parsed and normalised: check 2 of the contract, no I/O.

Each parameter at most once; a repeated or malformed one is 400 `invalid_query` naming
it (`fields`: 400 `invalid_fields`, as on the download). Unknown parameters are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import QueryParams

from ..cursors import Direction
from ..encoders import FIELD_NAMES, Fields
from ..errors import InvalidFields, InvalidQuery
from ..times import query_time, time_key

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CONTAINS = 256
FIELDS: dict[str, Fields] = {name: name for name in FIELD_NAMES}
DIRECTIONS: dict[str, Direction] = {"backward": "backward", "forward": "forward"}

_DIGITS = re.compile(r"[0-9]+")
_LEVELS = re.compile(r"[A-Za-z]+(?:,[A-Za-z]+)*")


@dataclass(frozen=True)
class PageQuery:
    """The parameters as given (None: absent), parsed and normalised."""

    run_id: str | None = None
    limit: int = DEFAULT_LIMIT
    direction: Direction | None = None
    since: str | None = None
    until: str | None = None
    levels: tuple[str, ...] | None = None
    contains: str | None = None
    fields: Fields = "default"
    cursor: str | None = None


def parse_page_query(query_string: bytes) -> PageQuery:
    """The query of Get Logs; InvalidQuery (naming the parameter), InvalidFields."""
    # Raw UTF-8 in a query string (not valid in a URI, but sent) reads as UTF-8, like %-escapes.
    params = QueryParams(query_string.decode("utf-8", "replace"))

    def one(name: str) -> str | None:
        values = params.getlist(name)
        if len(values) > 1:
            raise InvalidQuery(f"The {name} query parameter may be given only once.")
        return values[0] if values else None

    fields = params.getlist("fields")
    if len(fields) > 1 or (fields and fields[0] not in FIELDS):
        raise InvalidFields()
    run_id = one("run_id")
    limit = DEFAULT_LIMIT
    if (text := one("limit")) is not None:
        digits = text.lstrip("0")
        if not _DIGITS.fullmatch(text) or len(digits) > 4 or not 1 <= int(digits or 0) <= MAX_LIMIT:
            raise InvalidQuery(f"The limit query parameter must be from 1 to {MAX_LIMIT}.")
        limit = int(digits)
    direction = one("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise InvalidQuery("The direction query parameter must be backward or forward.")
    since, until = _time(one("since"), "since"), _time(one("until"), "until")
    if since is not None and until is not None and time_key(since) > time_key(until):
        raise InvalidQuery("The since query parameter must not be later than until.")
    levels = None
    if (text := one("level")) is not None:
        if not _LEVELS.fullmatch(text):
            raise InvalidQuery("The level query parameter must be comma-separated level names.")
        levels = tuple(sorted({name.upper() for name in text.split(",")}))
    contains = one("contains")
    if contains is not None and not 1 <= len(contains) <= MAX_CONTAINS:
        raise InvalidQuery(
            f"The contains query parameter must hold 1 to {MAX_CONTAINS} characters."
        )
    return PageQuery(
        run_id=run_id,
        limit=limit,
        direction=DIRECTIONS[direction] if direction is not None else None,
        since=since,
        until=until,
        levels=levels,
        contains=contains,
        fields=FIELDS[fields[0]] if fields else "default",
        cursor=one("cursor"),
    )


def _time(text: str | None, name: str) -> str | None:
    """An RFC 3339 time of the query, its offset sign restored; InvalidQuery otherwise."""
    if text is None:
        return None
    normal = query_time(text)
    if normal is None:
        raise InvalidQuery(f"The {name} query parameter must be an RFC 3339 time.")
    return normal
