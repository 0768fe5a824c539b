"""HTTP/1.1 as RFC 9112 says, at the protocol `serve` runs, over raw loopback sockets.

Malformed heads are refused before routing as problem bodies; a WebSocket upgrade is a 4xx;
bytes a client sends while a response is written never land inside it; a body that
arrives after its response is dropped, never read as the next request's head.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from streamer.config import Settings
from testkit.dataset import LOG_A1
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.wire import assert_refused, connect, read_response, read_to_close

SMALL = "/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a1"
BIG = "/api/v1/models/mdl-big/training-metrics/logs/download?run_id=run-big"


@pytest.fixture(scope="module")
def running(big_store: tuple[str, bytes]) -> Iterator[Running]:
    yield from serve_in_thread(Settings(storage_url=big_store[0], jwt_secret=SECRET))


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """The records of ERROR or worse that uvicorn and streamer log meanwhile."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "streamer")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def exchange(server: Running, raw: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_to_close(sock)


def read_big(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a content-length, read without quadratic copies: (head, body)."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    rest = bytearray(body)
    while len(rest) < length:
        rest += sock.recv(min(1 << 20, length - len(rest)))
    return head, bytes(rest)


def get(path: str, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n".encode()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /no/such/path HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: \xff\r\n\r\n",
    ],
    ids=[
        "no host",
        "two hosts",
        "the same host twice",
        "two hosts in 1.0",
        "unrouted",
        "not a host",
        "not ascii",
    ],
)
def test_a_request_without_exactly_one_host_is_400(running: Running, head: bytes) -> None:
    assert_refused(exchange(running, head), 400, "malformed_request")


def test_two_authorization_headers_are_400_before_routing(running: Running, token: str) -> None:
    twice = get(SMALL, token, f"Authorization: Bearer {token}\r\n")
    assert_refused(exchange(running, twice), 400, "malformed_request")
    unrouted = get("/nowhere", token, "Authorization: Basic eA==\r\n")
    assert_refused(exchange(running, unrouted), 400, "malformed_request")


def test_an_http_10_request_is_served_with_its_host_and_refused_without(
    running: Running,
) -> None:
    with connect(running) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"ok\n")
    assert_refused(exchange(running, b"GET /healthz HTTP/1.0\r\n\r\n"), 400, "malformed_request")


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/3.0"])
def test_a_version_other_than_10_and_11_is_505(running: Running, version: bytes) -> None:
    raw = exchange(running, b"GET /healthz " + version + b"\r\nHost: x\r\n\r\n")
    assert_refused(raw, 505, "http_version_not_supported")


@pytest.mark.parametrize("path", ["/healthz", SMALL, "/nowhere", "/metrics"])
@pytest.mark.parametrize("with_token", [False, True], ids=["no token", "token"])
@pytest.mark.parametrize(
    "connection", ["Connection: Upgrade\r\n", ""], ids=["upgrade", "no connection header"]
)
def test_a_websocket_upgrade_is_a_4xx_problem(
    running: Running,
    token: str,
    server_errors: list[logging.LogRecord],
    path: str,
    with_token: bool,
    connection: str,
) -> None:
    upgrade = (
        f"{connection}Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    raw = exchange(running, get(path, token if with_token else None, upgrade))
    assert_refused(raw, 400, "malformed_request")
    assert b"WebSocket" in raw
    assert server_errors == []


def test_another_upgrade_is_answered_as_http_then_closed(running: Running) -> None:
    raw = exchange(running, get("/healthz", None, "Connection: Upgrade\r\nUpgrade: h2c\r\n"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"ok\n"


def test_garbage_pipelined_behind_a_download_never_lands_in_it(
    running: Running,
    token: str,
    big_store: tuple[str, bytes],
    server_errors: list[logging.LogRecord],
) -> None:
    """The garbage arrives while the 48 MiB answer is being written: the answer is whole,
    and the refusal of the garbage follows it."""
    _, log = big_store
    with connect(running) as sock:
        sock.sendall(get(BIG, token))
        received = sock.recv(65536)
        sock.sendall(b"\x00\x01 not HTTP at all\r\n\r\n")
        received += read_to_close(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest[: len(log)] == log
    assert_refused(rest[len(log) :], 400, "malformed_request")
    assert server_errors == []


def test_garbage_in_the_same_packet_as_a_download_follows_its_answer(
    running: Running, token: str
) -> None:
    raw = exchange(running, get(SMALL, token) + b"\x00garbage\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest[: len(LOG_A1)] == LOG_A1
    assert_refused(rest[len(LOG_A1) :], 400, "malformed_request")


def test_requests_pipelined_behind_a_download_are_answered_in_turn(
    running: Running, token: str, big_store: tuple[str, bytes]
) -> None:
    _, log = big_store
    with connect(running) as sock:
        sock.sendall(get(BIG, token))
        first = sock.recv(1)
        sock.sendall(get("/healthz") + get(SMALL, token) + get("/nowhere", None, "Host: y\r\n"))
        head, body = read_big(sock)
        assert (first + head).startswith(b"HTTP/1.1 200 OK\r\n") and body == log
        rest = read_to_close(sock)
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and rest.startswith(b"ok\n")
    head, _, rest = rest[3:].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and rest.startswith(LOG_A1)
    assert_refused(rest[len(LOG_A1) :], 400, "malformed_request")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/healthz", b"HTTP/1.1 405 Method Not Allowed"),  # answered by the app
        ("GET", "/healthz", b"HTTP/1.1 200 OK"),  # answered by the protocol at its head
        ("GET", "/nowhere", b"HTTP/1.1 404 Not Found"),
    ],
)
@pytest.mark.parametrize(
    "late",
    [b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"not a head\n" * 10_000],
    ids=["a head", "100 KiB"],
)
def test_a_body_that_arrives_after_its_answer_is_dropped(
    running: Running, method: str, path: str, status: bytes, late: bytes
) -> None:
    with connect(running) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(late)}\r\n\r\n"
        sock.sendall(head.encode())
        assert read_response(sock)[0] == status
        sock.sendall(late)
        sock.sendall(get("/healthz"))
        answered, _, body = read_response(sock)
    assert (answered, body) == (b"HTTP/1.1 200 OK", b"ok\n")
