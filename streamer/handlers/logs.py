"""Get Logs: one page of a log as a JSON envelope, found by seeking, not by reading it all."""

from __future__ import annotations

from ..asgi import Scope, Send
from ..auth import Principal, authorize
from ..catalog import LogObject, valid_model_id
from ..follow.wait import holds, parse_wait, wait_for_lines
from ..observe import annotate
from ..pages import TERMINAL, Page, check_version, page_body, parse_page_query, plan_page
from ..plan import SECURITY_HEADERS
from ..seek import open_log, read_page
from .common import Service, resolve, store_failures


async def get_logs(
    service: Service, scope: Scope, model_id: str, principal: Principal, rid: str, send: Send
) -> None:
    method: str = scope["method"]
    query = parse_page_query(scope.get("query_string", b""))
    wait_s = parse_wait(scope.get("query_string", b""))
    plan = plan_page(model_id, query, service.cursors)
    annotate(scope, model=model_id if valid_model_id(model_id) else None)
    authorize(principal)
    # bandit B101 (assert): for mypy only, authorize() has refused None.
    assert principal.organization is not None  # nosec B101
    log = await resolve(service.catalog, model_id, principal.organization, plan.run_id)
    annotate(scope, run=log.run.run_id)
    check_version(plan, log)

    async def read(log: LogObject) -> Page:
        with store_failures(log.key):
            file = await open_log(service.store, log)
            try:
                return await read_page(file, plan, log.run.status in TERMINAL)
            finally:
                await file.aclose()

    page = await read(log)
    if wait_s and method == "GET" and holds(plan, page, log):
        # Live follow (streamer.follow.wait): held until lines arrive or wait_s passes.
        org = principal.organization
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
