"""A small response leaves in one socket write; everything else leaves as it did.

The server is the protocol `serve` runs, on a real loopback socket; a subclass of it only
counts the writes of each connection's transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.asgi import Receive, Scope, Send
from streamer.config import Settings
from streamer.observe import Observe
from streamer.protocol import GuardedHttpToolsProtocol
from testkit.dataset import LOG_A1
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.wire import connect, read_response, read_to_close

SMALL = "/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a1"
BIG = "/api/v1/models/mdl-big/training-metrics/logs/download?run_id=run-big"
WRITES: list[list[int]] = []  # per connection, the size of each write


class _Counted:
    def __init__(self, transport: asyncio.Transport, writes: list[int]) -> None:
        self._transport, self._writes = transport, writes

    def write(self, data: bytes) -> None:
        self._writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingProtocol(GuardedHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        WRITES.append([])
        super().connection_made(_Counted(transport, WRITES[-1]))  # type: ignore[arg-type]


def failing(app: Observe) -> Any:
    """`/fail` starts a small answer, then fails before its body; the rest is the app's."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/fail":
            return await app(scope, receive, send)
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("failed between the start and the body")

    return served


@pytest.fixture(scope="module")
def running(big_store: tuple[str, bytes]) -> Iterator[Running]:
    settings = Settings(storage_url=big_store[0], jwt_secret=SECRET)
    yield from serve_in_thread(settings, failing, http=CountingProtocol)


def get(path: str, token: str | None = None, method: str = "GET") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_small_answer_is_one_write(running: Running, token: str, method: str) -> None:
    with connect(running) as sock:
        sock.sendall(get(SMALL, token, method) + get("/nowhere", token))
        data = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (LOG_A1 in data) is (method == "GET")
    size = data.index(b"HTTP/1.1 404")
    assert WRITES[-1][0] == size  # head and body in the first write, nothing else in it


def test_a_large_body_still_streams_behind_its_head(
    running: Running, token: str, big_store: tuple[str, bytes]
) -> None:
    with connect(running) as sock:
        sock.sendall(get(BIG, token))
        _, _, body = read_response(sock)
    assert body == big_store[1]
    assert len(WRITES[-1]) > 2  # the head, then the body in chunks


def split(data: bytes) -> list[tuple[bytes, bytes]]:
    """Responses that each carry a content-length, one after the other: (status, body)."""
    answers = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        length = next(
            int(line[15:]) for line in lines if line.lower().startswith(b"content-length:")
        )
        answers.append((status, data[:length]))
        data = data[length:]
    return answers


def test_pipelined_small_answers_keep_their_order(running: Running, token: str) -> None:
    last = b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with connect(running) as sock:
        sock.sendall(get(SMALL, token) + get("/healthz") + get(SMALL, token) + last)
        answers = split(read_to_close(sock))
    assert [status for status, _ in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
    ]
    assert [body for _, body in answers[:3]] == [LOG_A1, b"ok\n", LOG_A1]


def test_a_start_never_sent_gives_way_to_the_500(running: Running) -> None:
    with connect(running) as sock:
        sock.sendall(get("/fail"))
        data = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"HTTP/1.1 200" not in data
