"""The ASGI application: routing, the order of checks, and the download response."""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import Headers

from . import errors
from .allocator import tune_allocator
from .auth import Authenticator, authorize
from .catalog import Catalog, LogObject
from .config import Settings, load_settings
from .encoders import LineEncoder
from .errors import StreamerError
from .plan import (
    MEDIA_TYPES,
    Query,
    content_disposition,
    match_download,
    parse_query,
    request_id,
)
from .pump import Receive, Send, StreamAborted, Transform, pump
from .storage import GzipReader, ObjectReader, Store

logger = logging.getLogger("streamer")

Scope = MutableMapping[str, Any]

SECURITY_HEADERS = [
    (b"cache-control", b"private, no-store"),
    (b"x-content-type-options", b"nosniff"),
]


class Streamer:
    """The service as one ASGI callable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self._store: Store | None = None
        self._catalog: Catalog | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.from_url(self.settings.storage_url)
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
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._store is not None:
                    await self._store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id"))
        method: str = scope["method"]
        try:
            path: str = scope["path"]
            model_id = match_download(path)
            if model_id is None:
                if path == "/healthz":
                    return await _plain(send, 200, b"ok\n", rid, method)
                raise errors.NotFound()
            if method not in ("GET", "HEAD"):
                raise errors.MethodNotAllowed()
            principal = await self.auth.authenticate(headers.get("authorization"))
            query = parse_query(scope.get("query_string", b""))
            authorize(principal)
            assert principal.organization is not None  # authorize() refuses None
            log = await self.catalog.resolve(model_id, principal.organization, query.run_id)
            await self._download(log, query, method, rid, receive, send)
        except StreamerError as error:
            await _problem(send, error, rid, method)

    async def _download(
        self,
        log: LogObject,
        query: Query,
        method: str,
        rid: str,
        receive: Receive,
        send: Send,
    ) -> None:
        length = log.info.size if query.format == "txt" and not log.gzip else None
        response_headers = [
            (b"content-type", MEDIA_TYPES[query.format].encode()),
            (
                b"content-disposition",
                content_disposition(log.run.run_id, query.format).encode(),
            ),
            *SECURITY_HEADERS,
            (b"x-request-id", rid.encode()),
        ]
        if length is not None:
            response_headers.append((b"content-length", str(length).encode()))
        start = {"type": "http.response.start", "status": 200, "headers": response_headers}
        if method == "HEAD":
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        chunk_size = self.settings.chunk_size
        try:
            reader: ObjectReader = await self.store.open(log.key, end=log.info.size)
        except FileNotFoundError:
            raise errors.LogsPurged() from None
        except Exception as exc:
            logger.warning("store open failed for %s: %s", log.key, type(exc).__name__)
            raise errors.UpstreamError() from None
        if log.gzip:
            reader = GzipReader(reader, chunk_size)
        transform: Transform | None = LineEncoder("json") if query.format == "json" else None
        try:
            await pump(
                reader,
                start,
                send,
                receive,
                chunk_size=chunk_size,
                buffer_chunks=self.settings.buffer_chunks,
                transform=transform,
                length=length,
            )
        except FileNotFoundError:
            raise errors.LogsPurged() from None
        except (StreamerError, StreamAborted):
            raise
        except Exception as exc:
            logger.warning("store read failed for %s: %s", log.key, type(exc).__name__)
            raise errors.UpstreamError() from None


async def _plain(send: Send, status: int, body: bytes, rid: str, method: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


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


def create_app() -> Streamer:
    """uvicorn's factory: settings from the environment (the CLI exports its flags there)."""
    logging.getLogger("uvicorn.error").addFilter(_OneLineAborts())
    tune_allocator()
    return Streamer(load_settings(os.environ))
