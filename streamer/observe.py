"""The ASGI middleware around `Streamer`: probes, Prometheus metrics, one access-log line.

It answers `/healthz`, `/readyz`, `/metrics` and `/openapi.json` itself (no token), and
watches every other request by wrapping `send` and `receive`: status, body bytes,
first-byte time, whether the client left early, whether the app aborted. The app adds
what only it knows (subject, organization, model, run, format) to the per-request dict
`scope["streamer"]` through `annotate()`. The access log never holds a header or a query
string, so never a token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson

from . import errors, metrics
from .asgi import Message, Receive, Scope, Send
from .catalog import Catalog
from .config import Settings
from .ops import Drain, Readiness
from .ops import Service as Checked
from .plan import match_download, request_id, target
from .pump import StreamAborted
from .routes import PROBES, route_name

if TYPE_CHECKING:
    from .follow import Watches

# The API's contract, served as kept in the package: the bytes of the file, unchanged.
OPENAPI_DOCUMENT = resources.files(__package__).joinpath("openapi.json")

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

access_logger = logging.getLogger("streamer.access")
if not access_logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.addHandler(_handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


class Service(Checked, Protocol):
    """What the middleware needs of the app it wraps (which imports this module, not the
    reverse): its settings, keys, store and catalog, and to be called."""

    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def watches(self) -> Watches: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def annotate(scope: Scope, **fields: str | None) -> None:
    """Record request facts for the access log and metrics (subject, org, model, ...)."""
    scope.setdefault("streamer", {}).update(fields)


@dataclass
class _Exchange:
    started: float
    status: int = 0
    request_id: str = ""
    bytes: int = 0
    first_byte_at: float | None = None
    complete: bool = False
    disconnected: bool = False
    streaming: bool = False


class _OneLineCancels(logging.Filter):
    """A download cancelled when the shutdown grace runs out is expected: say it in a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg, record.args = "download aborted: the shutdown grace ran out", ()
            record.exc_info = None
        return True


_ONE_LINE_CANCELS = _OneLineCancels()


class Observe:
    """Wraps the app: answers the probes, measures and logs every HTTP request."""

    def __init__(self, app: Service) -> None:
        logging.getLogger("uvicorn.error").addFilter(_ONE_LINE_CANCELS)  # added once
        self.app = app
        self.drain = Drain(app.settings.drain_delay_s)
        self.drain.on_close.append(app.watches.close)  # follows end as the listener closes
        self.readiness = Readiness(app, self.drain)
        self._inflight = 0
        self._idle: anyio.Event | None = None
        self._retries_counted = 0
        # The labelled children of the request counter, looked up once per label set.
        self._requests: dict[tuple[str, int, str], Any] = {}
        self._refresh_failures_counted = 0
        self.openapi = OPENAPI_DOCUMENT.read_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, self._lifespan_send(send))
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        exchange = _Exchange(time.perf_counter())
        download = match_download(target(scope)) is not None and scope["method"] == "GET"

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        exchange.request_id = value.decode("latin-1")
                if download and exchange.status == 200:
                    exchange.streaming = True
                    metrics.ACTIVE_STREAMS.inc()
            elif message["type"] == "http.response.body":
                size = len(message.get("body", b""))
                if size and exchange.first_byte_at is None:
                    exchange.first_byte_at = time.perf_counter()
                exchange.bytes += size
                exchange.complete = not message.get("more_body", False)
            await send(message)

        async def observed_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not exchange.complete:
                exchange.disconnected = True
            return message

        outcome = "complete"
        self._inflight += 1
        try:
            if scope["path"] in PROBES:
                await self._probe(scope, observed_send)
            else:
                await self.app(scope, observed_receive, observed_send)
        except StreamAborted:
            # A follow cut by its limit is no store failure (streamer.follow: `end` says why).
            cut = scope.get("streamer", {}).get("end") not in (None, "store_failure")
            outcome = "aborted" if cut else "upstream_abort"
            raise
        except BaseException:
            outcome = "aborted"
            raise
        finally:
            if outcome == "complete" and not exchange.complete:
                outcome = "client_disconnect" if exchange.disconnected else "aborted"
            self._record(scope, exchange, outcome)
            self._inflight -= 1
            if self._idle is not None and not self._inflight:
                self._idle.set()

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.drain.install()
            elif message["type"] == "lifespan.shutdown.complete":
                # Requests cancelled when the grace ran out unwind now: let them log first.
                if self._inflight:
                    self._idle = anyio.Event()
                    with anyio.move_on_after(5):
                        await self._idle.wait()
                metrics.mark_this_worker_dead()
            await send(message)

        return lifespan_send

    def answer_now(self, scope: Scope) -> Answer | None:
        """The whole answer to a probe that needs no waiting, counted and logged like any
        request: `/healthz`, and `/readyz` while its store check is fresh. None otherwise.

        The HTTP protocol calls this as soon as a request's head is parsed, so that probes
        are answered from the connection's read callback, ahead of the tasks that move
        bytes (see `streamer.protocol`)."""
        path, method = scope["path"], scope["method"]
        if path not in ("/healthz", "/readyz") or method not in ("GET", "HEAD"):
            return None
        ready = None
        if path == "/readyz" and (ready := self.readiness.known()) is None:
            return None
        started = time.perf_counter()
        rid = request_id(_header(scope, b"x-request-id"))
        status, headers, body = self._probe_answer(scope, ready, rid)
        body = b"" if method == "HEAD" else body
        exchange = _Exchange(started, status, rid, len(body), complete=True)
        exchange.first_byte_at = time.perf_counter()
        self._record(scope, exchange, "complete")
        return status, headers, body

    async def _probe(self, scope: Scope, send: Send) -> None:
        ready = None
        if scope["path"] == "/readyz" and scope["method"] in ("GET", "HEAD"):
            ready = await self.readiness.check()
        rid = request_id(_header(scope, b"x-request-id"))
        status, headers, body = self._probe_answer(scope, ready, rid)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _probe_answer(self, scope: Scope, ready: tuple[bool, str] | None, rid: str) -> Answer:
        """Status, headers and body of a probe or a scrape; `ready` is the readiness answer
        (for a GET or HEAD of /readyz)."""
        path: str = scope["path"]
        method: str = scope["method"]
        status, media_type, body = 200, "text/plain; charset=utf-8", b"ok\n"
        if method not in ("GET", "HEAD"):
            error = errors.MethodNotAllowed()
            status, media_type, body = 405, "application/problem+json", errors.problem(error, rid)
        elif path == "/readyz":
            if ready is None:
                raise ValueError("/readyz is answered with a readiness check")
            status, body = (200 if ready[0] else 503), ready[1].encode() + b"\n"
        elif path == "/metrics":
            media_type, body = metrics.CONTENT_TYPE, metrics.exposition()
        elif path == "/openapi.json":
            media_type, body = "application/json", self.openapi
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", rid.encode()),
        ]
        if status == 405:  # a problem, with the headers of every other
            headers += [(b"x-content-type-options", b"nosniff"), (b"allow", b"GET, HEAD")]
        return status, headers, body

    def _record(self, scope: Scope, exchange: _Exchange, outcome: str) -> None:
        end = time.perf_counter()
        info: dict[str, Any] = scope.get("streamer", {})
        route = route_name(target(scope))
        status = exchange.status or 500
        fmt = info.get("format") or "none"
        labels = (route, status, fmt)
        counter = self._requests.get(labels)
        if counter is None:
            counter = self._requests[labels] = metrics.REQUESTS.labels(route, str(status), fmt)
        counter.inc()
        metrics.BYTES_SENT.inc(exchange.bytes)
        if exchange.streaming:
            metrics.ACTIVE_STREAMS.dec()
            if exchange.first_byte_at is not None:
                metrics.TTFB.observe(exchange.first_byte_at - exchange.started)
            metrics.STREAM_DURATION.observe(end - exchange.started)
        if status == 502 or outcome == "upstream_abort":
            metrics.UPSTREAM_ERRORS.inc()
        # The storage layer counts the reopens it made; hand the new ones to Prometheus.
        retries = self.app.store.retries - self._retries_counted
        if retries:
            metrics.UPSTREAM_RETRIES.inc(retries)
            self._retries_counted += retries
        failures = self.app.catalog.refresh_failures - self._refresh_failures_counted
        if failures:
            metrics.CATALOG_REFRESH_FAILURES.inc(failures)
            self._refresh_failures_counted += failures
        if outcome == "client_disconnect":
            metrics.CLIENT_DISCONNECTS.inc()
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": exchange.request_id or None,
            "method": scope["method"],
            "route": route,
            "subject": info.get("subject"),
            "organization": info.get("organization"),
            "model": info.get("model"),
            "run": info.get("run"),
            "format": info.get("format"),
            "status": status,
            "bytes": exchange.bytes,
            "duration_s": round(end - exchange.started, 6),
            "outcome": outcome,
            "worker": os.getpid(),
        }
        if info.get("follow"):  # streamer.follow: and how the follow ended
            line.update(follow=True, end=info.get("end"))
        access_logger.info(orjson.dumps(line).decode())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
