"""Metrics and the access log: a plain ASGI middleware that wraps `send` and `receive`.

The rules it keeps:
- It re-derives nothing. The route template, the problem `code` of an error answer and
  what the request was about (subject, organization, model, run, format) are what the app
  recorded in `scope["streamer"]` through `annotate()`; a request the app recorded no
  route for is labelled "unmatched". The status is that of the first response start.
- A download that streams a body (GET of the download route answered 200 or 206) is
  counted in `streamer_active_streams`, the TTFB and the stream-duration histograms.
- Only the store's failures count as upstream errors: a 502 `upstream_error` or 503
  `store_unavailable` answer, or a download the app aborted (`StreamAborted`). A request
  whose client left, or whose transport failed, before its end is a client disconnect,
  never a store failure.
- One access-log line per request, on stderr, never holding a header or a query string,
  so never a token.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson

from .. import metrics
from ..asgi import App, Message, Receive, Scope, Send
from ..errors import Answer
from ..pump import StreamAborted

access_logger = logging.getLogger("streamer.access")
if not access_logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.addHandler(_handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


def _plain_stream(logger: logging.Logger) -> Any:
    """The stream of the logger's one handler when that handler writes each message as it
    is to a stream that a line leaves at once (stderr, unbuffered, as streamer's log config
    and the default here set it up), else None: the line is then written there directly,
    without a `LogRecord`, filters and handler lock per line. Any other set-up (a test's
    handler, a filter, a level) goes through `logging`."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.disabled:
        return None
    handler = handlers[0]
    if type(handler) is not logging.StreamHandler or handler.filters:
        return None
    formatter = handler.formatter
    plain = formatter is not None and formatter._fmt == "%(message)s"
    if not plain or not logger.isEnabledFor(logging.INFO) or handler.level > logging.INFO:
        return None
    # Written as it comes only where the write leaves at once, as the handler's flush made it.
    stream = handler.stream
    at_once = getattr(stream, "write_through", False) or getattr(stream, "line_buffering", False)
    return stream if at_once else None


def annotate(scope: Scope, **fields: str | None) -> None:
    """Record request facts for the access log and metrics (route, subject, code, ...)."""
    scope.setdefault("streamer", {}).update(fields)


@dataclass
class _Exchange:
    started: float
    status: int = 0
    code: str | None = None
    request_id: str = ""
    bytes: int = 0
    first_byte_at: float | None = None
    complete: bool = False
    gone: bool = False  # the client left, or its transport failed, before the end
    streaming: bool = False


class Measure:
    """Counts and logs every HTTP request that passes through it to `app`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inflight = 0
        self._idle: anyio.Event | None = None
        # The labelled children of the request counter, looked up once per label set.
        self._requests: dict[tuple[str, int, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange(time.perf_counter())

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not exchange.status:
                    _started(scope, exchange, message)
            elif message["type"] == "http.response.body":
                size = len(message.get("body", b""))
                if size and exchange.first_byte_at is None:
                    exchange.first_byte_at = time.perf_counter()
                exchange.bytes += size
                exchange.complete = not message.get("more_body", False)
            try:
                await send(message)
            except OSError:
                exchange.gone = True
                raise

        async def measured_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not exchange.complete:
                exchange.gone = True
            return message

        outcome = "complete"
        self.inflight += 1
        try:
            await self.app(scope, measured_receive, measured_send)
        except StreamAborted:
            # A follow cut by its limit is no store failure (streamer.follow: `end` says why).
            cut = scope.get("streamer", {}).get("end") not in (None, "store_failure")
            outcome = "aborted" if cut else "upstream_abort"
            raise
        except BaseException:
            outcome = "aborted"
            raise
        finally:
            if exchange.gone and not exchange.complete:
                outcome = "client_disconnect"
            elif outcome == "complete" and not exchange.complete:
                outcome = "aborted"
            self._record(scope, exchange, outcome)
            self.inflight -= 1
            if self._idle is not None and not self.inflight:
                self._idle.set()

    def record_answer(self, scope: Scope, answer: Answer, started: float) -> None:
        """Count and log a request answered whole without the app (a probe, by the protocol)."""
        status, headers, body = answer
        exchange = _Exchange(started, bytes=len(body), complete=True)
        _started(scope, exchange, {"status": status, "headers": headers})
        exchange.first_byte_at = time.perf_counter()
        self._record(scope, exchange, "complete")

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every request running has been logged."""
        if self.inflight:
            self._idle = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._idle.wait()

    def _record(self, scope: Scope, exchange: _Exchange, outcome: str) -> None:
        end = time.perf_counter()
        info: dict[str, Any] = scope.get("streamer", {})
        route = info.get("route") or "unmatched"
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
        if outcome == "client_disconnect":
            metrics.CLIENT_DISCONNECTS.inc()
        elif status == 502 or exchange.code == "store_unavailable" or outcome == "upstream_abort":
            metrics.UPSTREAM_ERRORS.inc()
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
            "code": exchange.code,
            "bytes": exchange.bytes,
            "duration_s": round(end - exchange.started, 6),
            "outcome": outcome,
            "worker": os.getpid(),
        }
        if info.get("follow"):  # streamer.follow: and how the follow ended
            line.update(follow=True, end=info.get("end"))
        stream = _plain_stream(access_logger)
        if stream is None:
            access_logger.info(orjson.dumps(line).decode())
        else:
            _batch.add(stream, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE).decode())


class _Batch:
    """Access-log lines of one turn of the event loop, written to their stream at its end
    in one write: the lines of requests that end together cost one system call. Outside
    a running loop a line is written at once; what a loop left unwritten (it stopped
    first) is written before the next line, or at exit."""

    def __init__(self) -> None:
        self.stream: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lines: list[str] = []

    def add(self, stream: Any, line: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if stream is not self.stream or loop is not self.loop:
            self.flush()
            self.stream, self.loop = stream, loop
        if loop is None:
            stream.write(line)
            return
        if not self.lines:
            loop.call_soon(self.flush)
        self.lines.append(line)

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            self.stream.write("".join(lines))


_batch = _Batch()
atexit.register(_batch.flush)


def _started(scope: Scope, exchange: _Exchange, message: Message) -> None:
    """What the start of the response tells, with what the app recorded before it."""
    info: dict[str, Any] = scope.get("streamer", {})
    exchange.status = message["status"]
    exchange.code = info.get("code")
    for name, value in message.get("headers", ()):
        if name == b"x-request-id":
            exchange.request_id = value.decode("latin-1")
    body = scope["method"] == "GET" and exchange.status in (200, 206)
    if body and info.get("endpoint") == "download":
        exchange.streaming = True
        metrics.ACTIVE_STREAMS.inc()
