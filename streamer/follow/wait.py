"""Get Logs pages that wait (SPEC section 9): `wait=N` holds a forward page that found
nothing at the end of a running run's log until lines arrive, or N seconds pass.

The rules this module keeps:
- Only a page that would be empty at the live end is held: forward, no lines, the run not
  terminal, nothing past the page but the end of what the run has written. Any other
  page is answered at once, as without `wait`.
- It is answered as soon as a poll finds whole lines past the page, or the run ended,
  with the usual envelope; after N seconds, with the empty page and its same cursors.
- The waiting request polls through the run's shared watch (`streamer.follow.watch`),
  like a follower, and costs no CPU between polls.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import anyio
from starlette.datastructures import QueryParams

from ..catalog import LogObject
from ..errors import InvalidQuery
from ..handlers.common import Service
from ..logs.plan import TERMINAL, PagePlan
from ..logs.seek import Page
from .watch import poller

MAX_WAIT_S = 60
_SECONDS = re.compile(r"[0-9]{1,2}")


def parse_wait(query_string: bytes) -> int:
    """The `wait` of a Get Logs query in seconds (0 when absent); InvalidQuery otherwise."""
    values = QueryParams(query_string.decode("utf-8", "replace")).getlist("wait")
    if len(values) > 1:
        raise InvalidQuery("The wait query parameter may be given only once.")
    if not values:
        return 0
    if not _SECONDS.fullmatch(values[0]) or int(values[0]) > MAX_WAIT_S:
        raise InvalidQuery(
            f"The wait query parameter must be whole seconds from 0 to {MAX_WAIT_S}."
        )
    return int(values[0])


def holds(plan: PagePlan, page: Page, log: LogObject) -> bool:
    """Whether `page` is one that `wait` holds: empty, forward, at a running log's end."""
    return (
        plan.walk.direction == "forward"
        and not page.lines
        and log.run.status not in TERMINAL
        and not page.stop_final
        and page.far >= page.stop
    )


async def wait_for_lines(
    service: Service,
    organization: str,
    log: LogObject,
    page: Page,
    wait_s: float,
    read: Callable[[LogObject], Awaitable[Page]],
) -> tuple[LogObject, Page]:
    """The log and page to answer with once lines arrived, the run ended, a poll failed,
    the process began to shut down or `wait_s` passed; `read` reads the page again from a
    newer log."""
    model_id, run_id = log.model_id, log.run.run_id
    poll = poller(service.catalog, model_id, organization, run_id)
    seen = anyio.current_time()
    with service.watches.watch(model_id, run_id) as watch, anyio.move_on_after(wait_s):
        while True:
            snap = await watch.after(seen, poll)
            seen = snap.taken_at
            if watch.closed or snap.error is not None or snap.log is None:
                return log, page
            if snap.terminal or snap.log.info != log.info:
                log, page = snap.log, await read(snap.log)
                if page.lines or snap.terminal:
                    return log, page
    return log, page
