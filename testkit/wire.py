"""What a client sees on the wire: raw HTTP/1.1 over a loopback socket, and the problem
document (RFC 9457) of an error answer.

Rules: every socket read is bounded by the socket's 30 s timeout, never by a sleep; a
problem answer is checked whole (status, media type, code, request id, the standard members).
"""

from __future__ import annotations

import socket

import httpx
import orjson

from testkit.servers import Running


def connect(server: Running) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the 30 s socket timeout guards hangs)."""
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def read_response(sock: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """One response with a content-length: (status line, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {
        name.decode().lower(): value.decode().strip()
        for name, _, value in (line.partition(b":") for line in lines)
    }
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert {"type", "title", "detail"} <= body.keys()
    return body


def assert_refused(raw: bytes, status: int, code: str) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"content-type: application/problem+json" in head
    assert b"connection: close" in head
    # The headers of every other problem (the OpenAPI document's error responses).
    assert b"cache-control: no-store" in head
    assert b"x-content-type-options: nosniff" in head
    problem = orjson.loads(body)
    assert (problem["status"], problem["code"]) == (status, code)
    assert f"x-request-id: {problem['request_id']}".encode() in head
