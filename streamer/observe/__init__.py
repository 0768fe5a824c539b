"""Observability around the app, one module per concern:

- `probes`: the answers to `/healthz`, `/readyz`, `/metrics` and `/openapi.json`, decided
  by one answerer that the HTTP protocol (what needs no waiting) and `Observe` (the rest)
  both call;
- `measure`: Prometheus metrics and the access-log line, a plain ASGI middleware that
  wraps `send` and reads what the app recorded in the scope (`annotate`);
- `quiet`: log filters that say an expected abort in one line.

`Observe` puts them around the app and does the lifespan's part: at startup it installs
the drain hook (`streamer.ops.Drain`) and leaves the probe answerer in the lifespan state
(ASGI's `scope["state"]`), where the HTTP protocol finds it (`probes.STATE_KEY`); at
shutdown it lets requests cancelled by the grace write their lines before this worker's
live gauges are dropped. Counters that other layers own (store retries, catalog refresh
failures) are pushed by those layers when they happen.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from .. import errors, metrics
from ..asgi import Message, Receive, Scope, Send
from ..catalog import Catalog
from ..config import Settings
from ..errors import Answer
from ..ops import Drain, Readiness
from ..ops import Service as Checked
from ..plan import request_id
from ..routes import PROBES
from . import quiet
from .measure import Measure, annotate
from .probes import STATE_KEY, Probes, header

__all__ = ["Observe", "Service", "annotate"]

if TYPE_CHECKING:
    from ..follow import Watches


class Service(Checked, Protocol):
    """What `Observe` needs of the app it wraps (which imports this module, not the
    reverse): its settings, keys, store and catalog, and to be called."""

    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def watches(self) -> Watches: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Observe:
    """Wraps the app: answers the probes, measures and logs every HTTP request."""

    def __init__(self, app: Service) -> None:
        quiet.install()
        self.app = app
        self.drain = Drain(app.settings.drain_delay_s)
        self.drain.on_close.append(app.watches.close)  # follows end as the listener closes
        self.readiness = Readiness(app, self.drain)
        self.probes = Probes(self.readiness)
        self.measure = Measure(self._dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.measure(scope, receive, send)
        elif scope["type"] == "lifespan":
            scope.setdefault("state", {})[STATE_KEY] = self.answer_now
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def answer_now(self, scope: Scope) -> Answer | None:
        """The whole answer to a probe that needs no waiting, counted and logged like any
        request; None for any other request (the app's, through uvicorn's task)."""
        started = time.perf_counter()
        answer = self.probes.answer_now(scope)
        if answer is not None:
            annotate(scope, route=scope["path"])
            self.measure.record_answer(scope, answer, started)
        return answer

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] not in PROBES:
            return await self.app(scope, receive, send)
        annotate(scope, route=scope["path"])
        if scope["method"] in ("GET", "HEAD"):
            status, headers, body = await self.probes.answer(scope)
        else:
            error = errors.MethodNotAllowed()
            annotate(scope, code=error.code)
            status, headers, body = errors.answer(error, request_id(header(scope, b"x-request-id")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.drain.install()
            elif message["type"] == "lifespan.shutdown.complete":
                # Requests cancelled when the grace ran out unwind now: let them log first.
                await self.measure.settle(5)
                metrics.mark_this_worker_dead()
            await send(message)

        return lifespan_send
