"""Get Logs: one page of a log as a JSON envelope, found by seeking, not by reading it all."""

from __future__ import annotations

from ..asgi import Scope, Send
from ..auth import Principal, authorize
from ..catalog import LogObject, valid_model_id
from ..errors import LogsNotReady
from ..follow.wait import holds, parse_wait, wait_for_lines
from ..logs.body import not_ready_body, page_body
from ..logs.plan import TERMINAL, PagePlan, check_version, plan_page
from ..logs.query import parse_page_query
from ..logs.seek import Page, read_page
from ..observe import annotate
from ..plan import SECURITY_HEADERS
from .common import Service, resolve, store_failures


async def get_logs(
    service: Service, scope: Scope, model_id: str, principal: Principal, rid: str, send: Send
) -> None:
    method: str = scope["method"]
    query_string = scope.get("query_string", b"")
    query = parse_page_query(query_string)
    wait_s = parse_wait(query_string)
    plan = plan_page(model_id, query, service.cursors)
    annotate(scope, model=model_id if valid_model_id(model_id) else None)
    organization = authorize(principal)
    run_id = plan.walk.run_id
    try:
        log = await resolve(service.catalog, model_id, organization, run_id)
    except LogsNotReady:
        # Only a named run can be not ready (the default run is a completed one).
        if run_id is None:
            raise
        annotate(scope, run=run_id)
        body = not_ready_body(plan, run_id, service.cursors)
    else:
        annotate(scope, run=log.run.run_id)
        check_version(plan, log)
        page = await _read(service, plan, log)
        if wait_s and method == "GET" and holds(plan, page, log):
            # Live follow (streamer.follow.wait): held until lines arrive or wait_s passes.
            org = organization

            async def read(newer: LogObject) -> Page:
                return await _read(service, plan, newer)

            log, page = await wait_for_lines(service, org, log, page, wait_s, read)
        body = page_body(plan, page, log, service.cursors)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        (b"x-request-id", rid.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _read(service: Service, plan: PagePlan, log: LogObject) -> Page:
    with store_failures(log.key):
        async with service.logs.open(service.store, log, plan) as file:
            return await read_page(file, plan, log.run.status in TERMINAL)
