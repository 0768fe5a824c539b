"""The ASGI application: routing, the order of checks, and the download response."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from starlette.datastructures import Headers

from . import errors, routes
from .allocator import tune_allocator
from .asgi import Receive, Send
from .asgi import Scope as Scope
from .auth import Authenticator, Principal, TokenCache, authorize
from .catalog import Catalog, LogObject, valid_model_id
from .coding import Chain, GzipEncoder
from .config import Settings, load_settings
from .cursors import CursorCodec, cursor_keys
from .encoders import LineEncoder
from .errors import StreamerError
from .observe import Observe, annotate
from .ops import StreamSlots
from .pages import TERMINAL, check_version, page_body, parse_page_query, plan_page
from .plan import (
    SECURITY_HEADERS,
    ResponsePlan,
    negotiation_headers,
    parse_query,
    plan_response,
    request_id,
    target,
)
from .pump import StreamAborted, Transform, pump, read_size
from .seek import open_log, read_page
from .storage import GzipReader, ObjectReader, ParallelReader, Store
from .turns import Turns

logger = logging.getLogger("streamer")


class Streamer:
    """The service as one ASGI callable."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.tokens = TokenCache(self.auth)
        self._store: Store | None = store
        self._catalog: Catalog | None = None
        self.slots = StreamSlots(settings.max_streams)
        self.turns = Turns()
        self.cursors = CursorCodec(cursor_keys(settings.cursor_keys, settings.jwt_secret))

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.from_url(
                self.settings.storage_url,
                streams=self.settings.max_streams,
                read_ahead_bytes=self.settings.readahead_bytes,
            )
        return self._store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.store, ttl_s=self.settings.catalog_ttl_s)
        return self._catalog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.auth.start()
                    await self.store.ping()
                    await self.catalog.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._catalog is not None:
                    await self._catalog.aclose()
                if self._store is not None:
                    await self._store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id"))
        method: str = scope["method"]
        try:
            found = routes.match(target(scope))
            if found is None:
                raise errors.NotFound()
            route, model_id = found
            if method not in ("GET", "HEAD"):
                raise errors.MethodNotAllowed()
            principal = await self.tokens.authenticate(headers.get("authorization"))
            annotate(scope, subject=principal.subject, organization=principal.organization)
            if route.name == "logs":
                await self._page(scope, model_id, principal, method, rid, send)
                return
            query = parse_query(scope.get("query_string", b""))
            # Only an id of the catalog's shape reaches the access log: the path is the client's.
            annotate(scope, model=model_id if valid_model_id(model_id) else None)
            annotate(scope, format=query.format)
            authorize(principal)
            # bandit B101 (assert): for mypy only, authorize() has refused None.
            assert principal.organization is not None  # nosec B101
            log = await self._resolve(model_id, principal.organization, query.run_id)
            annotate(scope, run=log.run.run_id)
            plan = plan_response(
                log,
                query,
                method,
                negotiation_headers(headers),
                gzip=self.settings.gzip,
                now=datetime.now(UTC),
            )
            with self.slots.take():
                await self._download(plan, log, method, rid, receive, send)
        except StreamerError as error:
            await _problem(send, error, rid, method)

    async def _page(
        self, scope: Scope, model_id: str, principal: Principal, method: str, rid: str, send: Send
    ) -> None:
        """Get Logs: one page of a log as a JSON envelope."""
        query = parse_page_query(scope.get("query_string", b""))
        plan = plan_page(model_id, query, self.cursors)
        annotate(scope, model=model_id if valid_model_id(model_id) else None)
        authorize(principal)
        # bandit B101 (assert): for mypy only, authorize() has refused None.
        assert principal.organization is not None  # nosec B101
        log = await self._resolve(model_id, principal.organization, plan.run_id)
        annotate(scope, run=log.run.run_id)
        check_version(plan, log)
        with _store_failures(log.key):
            file = await open_log(self.store, log)
            try:
                page = await read_page(file, plan, log.run.status in TERMINAL)
            finally:
                await file.aclose()
        body = page_body(plan, page, log, self.cursors)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            (b"x-request-id", rid.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _resolve(self, model_id: str, organization: str, run_id: str | None) -> LogObject:
        """The catalog's answer; a store that fails to answer (not a missing key) is a 502."""
        try:
            return await self.catalog.resolve(model_id, organization, run_id)
        except StreamerError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
            logger.warning("store failed while resolving model %s: %s", model_id, reason)
            raise errors.UpstreamError() from None

    async def _download(
        self,
        plan: ResponsePlan,
        log: LogObject,
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
        chunk_size, buffer_chunks = self.settings.chunk_size, self.settings.buffer_chunks
        size = read_size(chunk_size, buffer_chunks)
        transforms: list[Transform] = []
        if plan.encode is not None:
            transforms.append(LineEncoder(plan.encode, plan.fields))
        if plan.gzip:
            transforms.append(GzipEncoder())
        with _store_failures(log.key):
            # Parallel reads hold one read of their own for a slow client: it takes the
            # pump's queued slot, so they need the three chunks in hand plus one.
            async with self.store.reading(
                log.key, plan.start, plan.end, read_size=size, parallel=buffer_chunks >= 4
            ) as raw:
                if isinstance(raw, ParallelReader):
                    buffer_chunks -= 1
                reader: ObjectReader = raw
                if plan.decode_gzip:
                    # The pump reads in pieces of read_size(); the decompressor holds no more.
                    reader = GzipReader(raw, size)
                await pump(
                    reader,
                    start,
                    send,
                    receive,
                    chunk_size=chunk_size,
                    buffer_chunks=buffer_chunks,
                    transform=Chain(transforms) if transforms else None,
                    length=plan.length,
                    turns=self.turns,
                )


@contextmanager
def _store_failures(key: str) -> Iterator[None]:
    """Reading a log: a missing object is a purge, any other store failure a 502 (or, once
    the response has started, the abort the pump raised)."""
    try:
        yield
    except FileNotFoundError:
        raise errors.LogsPurged() from None
    except (StreamerError, StreamAborted):
        raise
    except Exception as exc:
        logger.warning("store read failed for %s: %s", key, type(exc).__name__)
        raise errors.UpstreamError() from None


async def _problem(send: Send, error: StreamerError, rid: str, method: str) -> None:
    body = errors.problem(error, rid)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-request-id", rid.encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class _OneLineAborts(logging.Filter):
    """uvicorn logs a traceback for an app that raises; an abort is expected, say it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], StreamAborted):
            record.msg, record.args = "download aborted: the store failed mid-stream", ()
            record.exc_info = None
        return True


def create_app() -> Observe:
    """uvicorn's factory: settings from the environment (the CLI exports its flags there)."""
    logging.getLogger("uvicorn.error").addFilter(_OneLineAborts())
    tune_allocator()
    return Observe(Streamer(load_settings(os.environ)))
