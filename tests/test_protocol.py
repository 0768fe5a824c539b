"""The HTTP protocol `serve` runs: limits on a request's head, over raw loopback sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import pytest

from streamer.asgi import Receive, Scope, Send
from streamer.config import Settings
from streamer.observe import Observe
from streamer.protocol import GuardedHttpToolsProtocol
from testkit.dataset import LOG_A1
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.wire import assert_refused, connect, read_response, read_to_close

DOWNLOAD = "/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a1"


class QuickHeads(GuardedHttpToolsProtocol):
    head_timeout_s = 0.2


@pytest.fixture(scope="module")
def guarded(local_store: str) -> Iterator[Running]:
    settings = Settings(storage_url=local_store, jwt_secret=SECRET, catalog_ttl_s=0)
    yield from serve_in_thread(settings, http=QuickHeads)


def test_a_head_over_64_kib_is_refused_and_the_server_goes_on(guarded: Running, token: str) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20))
        assert_refused(read_to_close(sock), 431, "headers_too_large")
    with connect(guarded) as sock:
        request = f"GET {DOWNLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        sock.sendall(request.encode() + b"X-Pad: " + b"a" * 60_000 + b"\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == b"HTTP/1.1 200 OK" and body == LOG_A1


@pytest.mark.parametrize(
    "sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a head"]
)
def test_a_head_that_does_not_arrive_in_time_is_answered_408(guarded: Running, sent: bytes) -> None:
    with connect(guarded) as sock:
        sock.sendall(sent)
        assert_refused(read_to_close(sock), 408, "request_timeout")


def test_the_head_timeout_applies_to_each_request_of_a_kept_alive_connection(
    guarded: Running,
) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == b"HTTP/1.1 200 OK"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert_refused(read_to_close(sock), 408, "request_timeout")


def test_a_download_outlives_the_head_timeout(guarded: Running, token: str) -> None:
    with connect(guarded) as downloading, connect(guarded) as idle:
        request = f"GET {DOWNLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        downloading.sendall(request.encode())
        # The idle connection's 408 shows the head timeout has passed, with the download
        # answered and not yet read.
        assert_refused(read_to_close(idle), 408, "request_timeout")
        status, _, body = read_response(downloading)
    assert status == b"HTTP/1.1 200 OK" and body == LOG_A1


@pytest.mark.parametrize(
    "request_line",
    [
        b"get /healthz HTTP/1.1",
        b"GET /he\x00althz HTTP/1.1",
        b"GET /healthz HTTP/1.1\nX: y",
        b"GET /\xff HTTP/1.1",
        b"GET /healthz RTSP/1.0",
        b"GET /healthz ICE/1.0",
    ],
)
def test_a_request_that_is_not_http_gets_a_problem_body(
    guarded: Running, request_line: bytes
) -> None:
    with connect(guarded) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        assert_refused(read_to_close(sock), 400, "malformed_request")


@dataclass
class Stalled:
    """ASGI middleware that never lets an HTTP request reach the app (a stuck loop's stand-in)."""

    app: Observe
    released: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await anyio.to_thread.run_sync(self.released.wait)
        await self.app(scope, receive, send)


def test_probes_are_answered_by_the_protocol_through_the_lifespan_state(local_store: str) -> None:
    """The protocol reaches the probe answerer through the lifespan state, not through the
    app: with every request to the app stalled, /healthz still answers (and a /readyz whose
    store check is fresh; the first one, checking the store, is the app's)."""
    settings = Settings(storage_url=local_store, jwt_secret=SECRET)
    stalled: list[Stalled] = []

    def wrap(app: Observe) -> Stalled:
        stalled.append(Stalled(app))
        return stalled[0]

    for running in serve_in_thread(settings, wrap):
        try:
            with connect(running) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, got = read_response(sock)
            assert (status, got) == (b"HTTP/1.1 200 OK", b"ok\n")
        finally:
            stalled[0].released.set()
