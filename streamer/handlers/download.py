"""The download route: the log as a file, raw or encoded line by line, pumped to the client."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.datastructures import Headers

from ..asgi import Message, Receive, Scope, Send
from ..auth import Principal, authorize
from ..budget import stream_bytes
from ..catalog import valid_model_id
from ..coding import Chain, GzipEncoder
from ..encoders import LineEncoder
from ..follow import follow_log
from ..observe import annotate
from ..plan import ResponsePlan, negotiation_headers, parse_query, plan_response
from ..pump import Stream, Transform, pump, read_size
from ..storage import GzipReader, ObjectReader, Reading
from .common import Service, resolve, store_failures


async def download(
    service: Service,
    scope: Scope,
    model_id: str,
    principal: Principal,
    rid: str,
    headers: Headers,
    receive: Receive,
    send: Send,
) -> None:
    method: str = scope["method"]
    query = parse_query(scope.get("query_string", b""))
    # Only an id of the catalog's shape reaches the access log: the path is the client's.
    annotate(scope, model=model_id if valid_model_id(model_id) else None)
    annotate(scope, format=query.format)
    organization = authorize(principal)
    if query.follow:
        # Live follow (streamer.follow): a run still writing its log is sent as it grows.
        followed = await follow_log(
            service, scope, query, model_id, organization, rid, receive, send
        )
        if followed is None:
            return
        log = followed
    else:
        log = await resolve(service.catalog, model_id, organization, query.run_id)
    annotate(scope, run=log.run.run_id)
    plan = plan_response(
        log,
        query,
        method,
        negotiation_headers(headers),
        gzip=service.settings.gzip,
        now=datetime.now(UTC),
    )
    with service.slots.take(_memory(service, plan, method)):
        await _respond(service, plan, log.key, method, rid, receive, send)


def _memory(service: Service, plan: ResponsePlan, method: str) -> int:
    """The bytes of the memory budget this response holds (streamer.budget)."""
    if method == "HEAD" or not plan.has_body:
        return 0
    settings = service.settings
    return stream_bytes(
        settings.chunk_size,
        settings.buffer_chunks,
        encode=plan.encode is not None,
        deflate=plan.gzip,
        inflate=plan.decode_gzip,
    )


async def _respond(
    service: Service,
    plan: ResponsePlan,
    key: str,
    method: str,
    rid: str,
    receive: Receive,
    send: Send,
) -> None:
    headers = [*plan.headers, (b"x-request-id", rid.encode())]
    start = {"type": "http.response.start", "status": plan.status, "headers": headers}
    if method == "HEAD" or not plan.has_body:
        await send(start)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    chunk_size, buffer_chunks = service.settings.chunk_size, service.settings.buffer_chunks
    size = read_size(chunk_size, buffer_chunks)
    transforms: list[Transform] = []
    if plan.encode is not None:
        transforms.append(LineEncoder(plan.encode, plan.fields))
    if plan.gzip:
        transforms.append(GzipEncoder())
    with store_failures(key):
        if service.store.backend.reads_inline:
            # A local file or memory: opened and closed without waiting; no block, no shield.
            raw = await service.store.open(key, plan.start, plan.end)
            await _pump(service, plan, raw, start, size, transforms, receive, send, inline=True)
            return
        async with service.store.reading(
            key, plan.start, plan.end, read_size=size, buffer_chunks=buffer_chunks
        ) as raw:
            await _pump(service, plan, raw, start, size, transforms, receive, send, inline=False)


async def _pump(
    service: Service,
    plan: ResponsePlan,
    raw: Reading,
    start: Message,
    size: int,
    transforms: list[Transform],
    receive: Receive,
    send: Send,
    *,
    inline: bool,
) -> None:
    """The body of `plan` from `raw` (closed by the pump when it is `inline`)."""
    reader: ObjectReader = raw
    if plan.decode_gzip:
        # The pump reads in pieces of read_size(); the decompressor holds no more.
        reader = GzipReader(raw, size)
    stream = Stream(
        chunk_size=service.settings.chunk_size,
        buffer_chunks=service.settings.buffer_chunks,
        transform=Chain(transforms) if transforms else None,
        length=plan.length,
        turns=service.turns,
        ahead=raw.ahead,
        inline=inline,
    )
    try:
        await pump(reader, start, send, receive, stream)
    finally:
        if inline:  # the pump closed it unless it failed first; a second close does nothing
            await raw.aclose()
