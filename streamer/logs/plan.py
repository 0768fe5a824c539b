"""The page a request asks for, decided without I/O: a new walk or one continued.

`plan_page` is the rest of check 2 (400 `invalid_cursor`), decided from the request and
the cursor alone. `check_version` is the one cursor check that needs the object's
metadata (the cursor's position against the log's length is the walk's check, in
`seek`). A plan holds the `Walk` it continues and the `Cursor` it continues from, never
copies of their fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import LogObject
from ..cursors import Cursor, CursorCodec, Walk
from ..encoders import Fields
from ..errors import InvalidCursor
from ..times import time_key
from .query import PageQuery

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class PagePlan:
    """The page to read: `limit` entries of `walk`, from `cursor` (None: a new walk)."""

    walk: Walk
    limit: int
    fields: Fields = "default"
    cursor: Cursor | None = None


def plan_page(model_id: str, query: PageQuery, codec: CursorCodec) -> PagePlan:
    """The page a request asks for; InvalidCursor when its cursor does not fit the request."""
    if query.cursor is None:
        walk = Walk(
            model_id=model_id,
            run_id=query.run_id,
            direction=query.direction or "backward",
            since=query.since,
            until=query.until,
            levels=query.levels,
            contains=query.contains,
        )
        return PagePlan(walk, query.limit, query.fields)
    cursor = codec.decode(query.cursor)
    if cursor.walk.model_id != model_id or not _agrees(query, cursor.walk):
        raise InvalidCursor()
    return PagePlan(cursor.walk, query.limit, query.fields, cursor)


def _agrees(query: PageQuery, walk: Walk) -> bool:
    """Whether every parameter given (but limit and fields) says what the walk says."""

    def same_time(given: str | None, held: str | None) -> bool:
        return given is None or (held is not None and time_key(given) == time_key(held))

    return (
        (query.run_id is None or query.run_id == walk.run_id)
        and (query.direction is None or query.direction == walk.direction)
        and same_time(query.since, walk.since)
        and same_time(query.until, walk.until)
        and (query.levels is None or query.levels == walk.levels)
        and (query.contains is None or query.contains == walk.contains)
    )


def version(log: LogObject) -> str:
    return log.info.etag or ""


def check_version(plan: PagePlan, log: LogObject) -> None:
    """InvalidCursor when the cursor's object was replaced and the run is terminal.

    A cursor made while the run was still writing its log knows the log may have grown
    since, even if the run has ended: only its length counts, which the walk checks
    (`seek.read_page`) once the log's length is known (inflated, for gzip).
    """
    cursor = plan.cursor
    if cursor is None:
        return
    if log.run.status in TERMINAL and not cursor.live and cursor.version != version(log):
        raise InvalidCursor()
