"""The ASGI application: the lifespan, the checks every route shares, the problem answer.

Each route's own work is in `handlers/`, one module per route."""

from __future__ import annotations

import os

from starlette.datastructures import Headers

from . import errors, routes
from .allocator import freeze_startup_objects, tune_allocator
from .asgi import Receive, Send
from .asgi import Scope as Scope
from .auth import Authenticator, TokenCache
from .budget import Budget, plan_process, resident_bytes
from .catalog import Catalog
from .config import Settings, load_settings
from .cors import Cors
from .cursors import CursorCodec, cursor_keys
from .errors import StreamerError
from .follow import Watches
from .handlers.download import download
from .handlers.logs import get_logs
from .logs.source import LogSources
from .observe import Observe, annotate
from .ops import StreamSlots
from .plan import request_id, target
from .storage import Store
from .turns import Turns


class Streamer:
    """The service as one ASGI callable."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.tokens = TokenCache(self.auth)
        self._store: Store | None = store
        self._catalog: Catalog | None = None
        self.budget = Budget()  # its total is planned at start-up, once the store is open
        self.slots = StreamSlots(settings.max_streams, self.budget)
        self.watches = Watches(settings.follow_poll_s)  # the followed logs (streamer.follow)
        self.turns = Turns()
        self.cursors = CursorCodec(cursor_keys(settings.cursor_keys, settings.jwt_secret))
        # Get Logs: the scan slots and the local copies of gzip logs, for the process's life.
        self.logs = LogSources(settings.scan_slots, settings.scan_disk_bytes, self.budget)

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
                    self._plan_memory()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                freeze_startup_objects()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.logs.close()
                if self._catalog is not None:
                    await self._catalog.aclose()
                if self._store is not None:
                    await self._store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _plan_memory(self) -> None:
        """The memory budget (streamer.budget), and the read-ahead ceiling inside it."""
        supervisor = resident_bytes(os.getppid()) if self.settings.workers > 1 else 0
        planned = plan_process(self.settings, self.store.backend.parallel, supervisor)
        self.budget.total = planned.requests
        self.store.read_ahead.limit = planned.read_ahead

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The checks every route shares, in the spec's order: the route, the method, the
        token; then the route's own handler."""
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id"))
        method: str = scope["method"]
        try:
            found = routes.match(target(scope))
            if found is None:
                raise errors.NotFound()
            route, model_id, template = found
            annotate(scope, route=template, endpoint=route.name)
            if method not in ("GET", "HEAD"):
                raise errors.MethodNotAllowed()
            principal = await self.tokens.authenticate(headers.get("authorization"))
            annotate(scope, subject=principal.subject, organization=principal.organization)
            if route.name == "logs":
                await get_logs(self, scope, model_id, principal, rid, send)
            else:
                await download(self, scope, model_id, principal, rid, headers, receive, send)
        except StreamerError as error:
            await _problem(scope, send, error, rid)


async def _problem(scope: Scope, send: Send, error: StreamerError, rid: str) -> None:
    """Answer `error` (its code recorded for the access log), as `errors.answer` builds it."""
    annotate(scope, code=error.code)
    status, headers, body = errors.answer(error, rid)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def create_app() -> Observe:
    """uvicorn's factory: settings from the environment (the CLI exports its flags there)."""
    tune_allocator()
    return Observe(Cors(Streamer(load_settings(os.environ))))
