"""The 200 body of Get Logs: the page's entries and the cursors on from its edges. No I/O."""

from __future__ import annotations

from dataclasses import replace

import orjson

from ..catalog import LogObject
from ..cursors import Cursor, CursorCodec, Direction
from ..lines import entry
from .plan import TERMINAL, PagePlan, version
from .seek import Page


def page_cursors(
    plan: PagePlan, page: Page, log: LogObject, codec: CursorCodec
) -> tuple[str | None, str | None]:
    """`next_cursor` (on in the walk's direction from the far edge) and `prev_cursor`."""
    # A walk of the default run is bound to the run its first page found.
    walk = replace(plan.walk, run_id=log.run.run_id)

    def make(position: int, direction: Direction) -> str | None:
        if direction == "backward" and position <= page.start:
            return None
        if direction == "forward" and position >= page.stop and page.stop_final:
            return None
        return codec.encode(
            Cursor(
                walk=replace(walk, direction=direction),
                version=version(log),
                position=position,
                start=page.start if page.start_final else None,
                stop=page.stop if page.stop_final else None,
                live=log.run.status not in TERMINAL,
            )
        )

    back: Direction = "forward" if walk.direction == "backward" else "backward"
    return make(page.far, walk.direction), make(page.near, back)


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


def not_ready_body(plan: PagePlan, run_id: str, codec: CursorCodec) -> bytes:
    """The page of a run that has not written its log yet: no entries, and a forward
    cursor from offset 0 that a UI polls until lines come (SPEC section 8)."""
    walk = replace(plan.walk, run_id=run_id, direction="forward")
    cursor = Cursor(walk=walk, version="", position=0, live=True)
    return orjson.dumps(
        {
            "model_id": walk.model_id,
            "run_id": run_id,
            "data": [],
            "next_cursor": codec.encode(cursor),
            "prev_cursor": None,
        }
    )
