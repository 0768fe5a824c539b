"""uvicorn's httptools protocol, with the limits on a request's head that it lacks.

uvicorn bounds neither the size of a request's head nor the time a client may take to send
it. httptools builds a header value by concatenation, so a single 128 MiB header held the
event loop, and every download on it, for seconds and grew the process by hundreds of
MiB; a client that sends half a head and then nothing held its connection forever. Here:

- a head (request line and headers) over `max_head_bytes` is refused with 431;
- a head not complete `head_timeout_s` after its first byte (or after the connection
  opened) is answered with 408 and the connection closed;
- a request uvicorn cannot parse gets 400 as a problem body with `X-Request-ID`, like
  every other error, instead of uvicorn's plain text.

All three close the connection. They happen before the application sees a request, so
they are logged as warnings, not in the access log. Between requests on a kept-alive
connection, uvicorn's own keep-alive timeout applies.

Probes first. `/healthz`, and `/readyz` while its store check is fresh, are answered
right where the request's head is parsed, in the connection's read callback, without a
task: a task would wait its turn behind every stream that moves bytes in that turn of
the event loop. The probe answerer that `Observe` leaves in the lifespan state (ASGI's
`scope["state"]`, which uvicorn hands to every connection's protocol as `app_state`)
decides the answer, counts and logs it as it does every request; anything else goes to
the application as usual. Without a lifespan, every probe goes to the application.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from . import errors
from .asgi import Scope
from .observe.probes import STATE_KEY, AnswerNow
from .plan import request_id

logger = logging.getLogger("streamer")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0
    linger_s = 2.0

    _refused = False
    _head_bytes = 0
    _in_head = True
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        answer_now: AnswerNow | None = self.app_state.get(STATE_KEY)
        answer = None if answer_now is None else answer_now(cast(Scope, cycle.scope))
        if answer is None:
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                limit = f"{self.max_head_bytes // 1024} KiB"
                detail = f"The request line and headers exceed {limit}."
                self._refuse(errors.HeadersTooLarge(detail))
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(errors.MalformedRequest())

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not (self._refused or self.transport.is_closing()):
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
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(self.linger_s, self.transport.close)
        else:
            self.transport.close()


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A whole HTTP/1.1 response, as bytes to write."""
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n" + body
