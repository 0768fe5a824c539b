"""uvicorn's httptools protocol, with the limits and the HTTP/1.1 rules (RFC 9112) it lacks.

The rules it keeps, each before the application sees a request:

- A head (request line and headers) over `max_head_bytes` is refused with 431; a head not
  complete `head_timeout_s` after its first byte (or after the connection opened) with
  408. Unbounded, httptools built a 128 MiB header by concatenation, holding the event
  loop for seconds; a client that sent half a head held its connection forever.
- A request uvicorn cannot parse, a request without `Host`, a request with more
  than one `Host` or more than one `Authorization`, and a WebSocket upgrade (the service
  speaks none) are 400 `malformed_request`; a version other than HTTP/1.0 and 1.1 is 505.
  Another upgrade (`h2c`) is ignored: the request is answered, then the connection closed.
- A response is whole or its connection aborted. Bytes that arrive while a request's
  response is being written are held, unparsed (reading paused), until that response
  ends; a request that turns out malformed behind it is refused after it, never inside
  it. A request's body that arrives after its response is parsed as that body and
  dropped, never as the next request's head.

A small response (a head and a whole body of at most 64 KiB) goes out in one socket write
(`streamer.coalesce`).

Every refusal is a problem body (`errors.answer`, as the application's) and closes the
connection, reading and dropping what the client still sends for `linger_s`. Refusals are
logged as warnings, not in the access log. Between requests on a kept-alive connection,
uvicorn's own keep-alive timeout applies.

Probes first. `/healthz`, and `/readyz` while its store check is fresh, are answered
right where the request's head is parsed, in the connection's read callback, without a
task: a task would wait its turn behind every stream that moves bytes in that turn of
the event loop. The probe answerer that `Observe` leaves in the lifespan state (ASGI's
`scope["state"]`, which uvicorn hands to every connection's protocol as `app_state`)
decides the answer, counts and logs it; anything else goes to the application as usual.
Without a lifespan, every probe goes to the application. This overrides uvicorn's
`_start_asgi_task`, a private method: pyproject.toml bounds uvicorn to the minor versions
this is tested on.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from . import errors
from .asgi import Scope
from .coalesce import one_write
from .observe.probes import STATE_KEY, AnswerNow
from .plan import request_id

logger = logging.getLogger("streamer")

NO_WEBSOCKET = "This service speaks no WebSocket; the upgrade is refused."
# RFC 9112 3.2 and RFC 3986 3.2.2: an IP literal or a reg-name (IPv4 is one), then a port.
HOST = re.compile(rb"(\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?")


class _Refusal(Exception):
    """Raised in a parser callback: stops the parser, carries the answer."""

    def __init__(self, error: errors.StreamerError) -> None:
        super().__init__(error.code)
        self.error = error


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0
    linger_s = 2.0

    _refused = False
    _head_bytes = 0
    _in_head = True  # the parser waits for, or reads, a request's head
    _at_boundary = True  # no byte of the next request has been parsed yet
    _head_timer: asyncio.TimerHandle | None = None
    _message_done = False  # the current request has been read to its end
    _held = b""  # what arrived while a response was being written, parsed after it
    _pending: errors.StreamerError | None = None  # a refusal waiting for that response

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if self._answering() or self._pending is not None:
            self._hold(data)
            return
        if self._idle():
            if self._at_boundary and not _names_http(data):
                self._refuse(errors.MalformedRequest())
                return
            # A head, or the rest of a body whose answer has gone, must arrive in time.
            self._arm_head_timer()
            self._head_bytes += len(data) if self._in_head else 0
            if self._head_bytes > self.max_head_bytes:
                limit = f"{self.max_head_bytes // 1024} KiB"
                self._refuse(
                    errors.HeadersTooLarge(f"The request line and headers exceed {limit}.")
                )
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a WebSocket was refused at its head; another upgrade is answered as HTTP
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            error = refusal.error if isinstance(refusal, _Refusal) else errors.MalformedRequest()
            self._refuse_when_free(error)
        except httptools.HttpParserError as exc:
            version = "HTTP version" in str(exc)
            self._refuse_when_free(
                errors.VersionNotSupported() if version else errors.MalformedRequest()
            )

    def on_message_begin(self) -> None:
        self._message_done = self._at_boundary = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        if (error := self._check_head()) is not None:
            raise _Refusal(error)
        super().on_headers_complete()
        if self.parser.should_upgrade():  # the parser stops at an upgrade: nothing follows
            if self.cycle.response_complete:  # a probe, answered at once
                self.transport.close()
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._message_done = self._at_boundary = self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        answer_now: AnswerNow | None = self.app_state.get(STATE_KEY)
        answer = None if answer_now is None else answer_now(cast(Scope, cycle.scope))
        if answer is None:
            cycle.send = one_write(cycle)  # type: ignore[method-assign,assignment]
            super()._start_asgi_task(cycle, app)
            return
        status, headers, body = answer
        headers = [*self.server_state.default_headers, *headers]
        if not cycle.keep_alive:
            headers.append((b"connection", b"close"))
        self.transport.write(_response(status, headers, body))
        # As uvicorn's own send does at the end of a response.
        cycle.response_started = cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._answering():
            return
        if self._pending is not None:
            error, self._pending = self._pending, None
            self._refuse(error)
        elif self._held:
            held, self._held = self._held, b""
            self.data_received(held)

    def send_400_response(self, msg: str) -> None:
        self._refuse_when_free(errors.MalformedRequest())

    def _check_head(self) -> errors.StreamerError | None:
        """What RFC 9112 refuses in a parsed head, else None."""
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            return errors.VersionNotSupported()
        hosts = [value for name, value in self.headers if name == b"host"]
        # SPEC section 8 refuses a request with no Host whatever its version (RFC 9112
        # only requires it of HTTP/1.1; every HTTP/1.0 client in use sends one).
        if len(hosts) != 1:
            return errors.MalformedRequest("A request has exactly one Host header (RFC 9112).")
        if hosts and not HOST.fullmatch(hosts[0]):
            return errors.MalformedRequest("The Host header is not a host and port.")
        if sum(name == b"authorization" for name, _ in self.headers) > 1:
            return errors.MalformedRequest("A request has at most one Authorization header.")
        # With or without `Connection: upgrade`: no WebSocket request is answered as HTTP.
        if any(
            name == b"upgrade" and b"websocket" in value.lower() for name, value in self.headers
        ):
            return errors.MalformedRequest(NO_WEBSOCKET)
        return None

    def _idle(self) -> bool:
        """Whether no response is being written (none started, or the last one ended)."""
        return self.cycle is None or self.cycle.response_complete

    def _answering(self) -> bool:
        """Whether a request has been read whole and its response is still being written."""
        cycle = self.cycle
        return cycle is not None and self._message_done and not cycle.response_complete

    def _hold(self, data: bytes) -> None:
        self.flow.pause_reading()
        if self._pending is None and len(self._held) + len(data) > self.max_head_bytes:
            self._pending = errors.HeadersTooLarge("Too much was sent ahead of its turn.")
        if self._pending is None:
            self._held += data

    def _refuse_when_free(self, error: errors.StreamerError) -> None:
        """Refuse now, or once the response being written has ended."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._pending, self._held = error, b""
            self.flow.pause_reading()
        else:
            self._refuse(error)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._idle() and not (self._refused or self.transport.is_closing()):
            self._refuse(errors.RequestTimeout())

    def _refuse(self, error: errors.StreamerError) -> None:
        """Answer `error` as a problem body and close, whatever the parser's state."""
        self._disarm_head_timer()
        rid = request_id(None)
        logger.warning("request refused before the application: %s (%s)", error.code, rid)
        status, headers, body = errors.answer(error, rid)
        self.transport.write(_response(status, [*headers, (b"connection", b"close")], body))
        # A lingering close: what the client still sends is read and dropped for a while.
        # Closing at once, with its bytes unread, would reset the connection, and a reset
        # can destroy the answer before the client reads it.
        self._refused = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(self.linger_s, self.transport.close)
        else:
            self.transport.close()


def _names_http(start: bytes) -> bool:
    """Whether the request line at the start of `start`, when whole, names HTTP: llhttp
    also parses `RTSP/1.0` and `ICE/1.0` lines, and httptools does not say which it saw."""
    line, found, _ = start.lstrip(b"\r\n").partition(b"\n")
    return not found or line.rstrip(b"\r").rpartition(b" ")[2].startswith(b"HTTP/")


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A whole HTTP/1.1 response, as bytes to write."""
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n" + body
