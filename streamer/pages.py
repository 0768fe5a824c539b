"""Get Logs decided without I/O: the query, the cursor's checks, the page plan, the body.

`parse_page_query` and `plan_page` are check 2 of the contract for this endpoint (400
`invalid_query`, `invalid_fields`, `invalid_cursor`), decided from the request and the
cursor alone. `check_version` is the one cursor check that needs the object's
metadata. `page_body` turns the page that `seek` read into the JSON envelope.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

import orjson
from starlette.datastructures import QueryParams

from .catalog import LogObject
from .cursors import Cursor, CursorCodec, Direction
from .encoders import FIELD_NAMES, Fields
from .errors import InvalidCursor, InvalidFields, InvalidQuery
from .lines import Line, TimeKey, entry, time_key

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CONTAINS = 256
TERMINAL = frozenset({"completed", "failed", "cancelled"})
FIELDS: dict[str, Fields] = {name: name for name in FIELD_NAMES}
DIRECTIONS: dict[str, Direction] = {"backward": "backward", "forward": "forward"}

_DIGITS = re.compile(r"[0-9]+")
_LEVELS = re.compile(r"[A-Za-z]+(?:,[A-Za-z]+)*")
# RFC 3339; a space where the offset's sign belongs is a "+" that the query decoded.
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([-+ ])([0-9]{2}):([0-9]{2}))"
)


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


@dataclass(frozen=True)
class PagePlan:
    """The page to read: a new walk (`position` None) or one continued from a cursor."""

    model_id: str
    run_id: str | None
    direction: Direction
    limit: int
    fields: Fields
    since: str | None = None
    until: str | None = None
    levels: tuple[str, ...] | None = None
    contains: str | None = None
    position: int | None = None
    start: int | None = None
    stop: int | None = None
    version: str | None = None
    live: bool = False

    @property
    def since_key(self) -> TimeKey | None:
        return None if self.since is None else time_key(self.since)

    @property
    def until_key(self) -> TimeKey | None:
        return None if self.until is None else time_key(self.until)

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def filtered(self) -> bool:
        return self.levels is not None or self.contains is not None


@dataclass(frozen=True)
class Page:
    """What `seek` read: lines in file order, and the positions the cursors start from.

    The page covers [near, far) forward or [far, near) backward; the window it walks is
    [start, stop). `*_final`: that edge holds for good (a terminal run, or an edge found
    at a line that exists); otherwise the log may still grow past it.
    """

    lines: list[Line]
    near: int
    far: int
    start: int
    stop: int
    start_final: bool
    stop_final: bool


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
    match = _TIME.fullmatch(text)
    if match is not None:
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        sign, offset_h, offset_m = match.groups()[7:]
        # RFC 3339 allows a leap second (:60).
        if (
            1 <= month <= 12
            and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23
            and minute <= 59
            and second <= 60
            and (sign is None or (int(offset_h) <= 23 and int(offset_m) <= 59))
        ):
            return text if sign != " " else f"{text[:-6]}+{text[-5:]}"
    raise InvalidQuery(f"The {name} query parameter must be an RFC 3339 time.")


def plan_page(model_id: str, query: PageQuery, codec: CursorCodec) -> PagePlan:
    """The page a request asks for; InvalidCursor when its cursor does not fit the request."""
    if query.cursor is None:
        return PagePlan(
            model_id=model_id,
            run_id=query.run_id,
            direction=query.direction or "backward",
            limit=query.limit,
            fields=query.fields,
            since=query.since,
            until=query.until,
            levels=query.levels,
            contains=query.contains,
        )
    cursor = codec.decode(query.cursor)
    if cursor.model_id != model_id or not _agrees(query, cursor):
        raise InvalidCursor()
    return PagePlan(
        model_id=model_id,
        run_id=cursor.run_id,
        direction=cursor.direction,
        limit=query.limit,
        fields=query.fields,
        since=cursor.since,
        until=cursor.until,
        levels=cursor.levels,
        contains=cursor.contains,
        position=cursor.position,
        start=cursor.start,
        stop=cursor.stop,
        version=cursor.version,
        live=cursor.live,
    )


def _agrees(query: PageQuery, cursor: Cursor) -> bool:
    """Whether every parameter given (but limit and fields) says what the cursor says."""

    def same_time(given: str | None, held: str | None) -> bool:
        return given is None or (held is not None and time_key(given) == time_key(held))

    return (
        (query.run_id is None or query.run_id == cursor.run_id)
        and (query.direction is None or query.direction == cursor.direction)
        and same_time(query.since, cursor.since)
        and same_time(query.until, cursor.until)
        and (query.levels is None or query.levels == cursor.levels)
        and (query.contains is None or query.contains == cursor.contains)
    )


def version(log: LogObject) -> str:
    return log.info.etag or ""


def check_version(plan: PagePlan, log: LogObject) -> None:
    """InvalidCursor when the cursor's object was replaced (terminal run) or cut short.

    A cursor made while the run was still writing its log knows the log may have grown
    since, even if the run has ended: only its length is checked.
    """
    if plan.position is None:
        return
    if log.run.status in TERMINAL and not plan.live and plan.version != version(log):
        raise InvalidCursor()
    size = log.info.size
    if not log.gzip and size is not None and plan.position > size:
        raise InvalidCursor()


def page_cursors(
    plan: PagePlan, page: Page, log: LogObject, codec: CursorCodec
) -> tuple[str | None, str | None]:
    """`next_cursor` (on in the plan's direction from the far edge) and `prev_cursor`."""

    def make(position: int, direction: Direction) -> str | None:
        if direction == "backward" and position <= page.start:
            return None
        if direction == "forward" and position >= page.stop and page.stop_final:
            return None
        return codec.encode(
            Cursor(
                model_id=plan.model_id,
                run_id=log.run.run_id,
                version=version(log),
                position=position,
                direction=direction,
                since=plan.since,
                until=plan.until,
                levels=plan.levels,
                contains=plan.contains,
                start=page.start if page.start_final else None,
                stop=page.stop if page.stop_final else None,
                live=log.run.status not in TERMINAL,
            )
        )

    back: Direction = "forward" if plan.direction == "backward" else "backward"
    return make(page.far, plan.direction), make(page.near, back)


def page_body(plan: PagePlan, page: Page, log: LogObject, codec: CursorCodec) -> bytes:
    """The 200 body: model, run, entries in file order, the two cursors."""
    next_cursor, prev_cursor = page_cursors(plan, page, log, codec)
    return orjson.dumps(
        {
            "model_id": log.model_id,
            "run_id": log.run.run_id,
            "data": [entry(line, plan.fields) for line in page.lines],
            "next_cursor": next_cursor,
            "prev_cursor": prev_cursor,
        }
    )
