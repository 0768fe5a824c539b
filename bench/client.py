"""A minimal raw-socket HTTP/1.1 reader: one GET, timed, with as little work as can be.

curl and httpx top out below what nginx serves on loopback (bench/README.md#results), so
the benchmark reads with this: `recv_into` one reusable buffer, note the time of every `recv`, and
follow `Content-Length` or the chunked framing just enough to know where the body ends
(decoding it only when a `sink` wants the bytes). An optional `rate` (bytes/s) sleeps
between reads like a slow client, so the server meets real TCP backpressure.
"""

from __future__ import annotations

import hashlib
import socket
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class IncompleteBody(Exception):
    """The connection ended before the body did."""


@dataclass
class Fetch:
    status: int
    headers: dict[str, str]
    body_bytes: int
    ttfb_s: float
    seconds: float
    # Seconds between successive reads that brought body bytes, at the client.
    gaps: array[float] = field(default_factory=lambda: array("d"))
    sha256: str | None = None

    @property
    def mb_per_s(self) -> float:
        return self.body_bytes / self.seconds / 1e6 if self.seconds else 0.0


def request_bytes(url: str, token: str | None, extra: Mapping[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target or '/'} HTTP/1.1", f"Host: {parts.netloc}", "User-Agent: bench"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class ChunkedFraming:
    """Follows a chunked body without copying it; `feed` returns the body bytes seen."""

    def __init__(self, sink: Callable[[memoryview], object] | None) -> None:
        self._sink = sink
        self._left = 0  # data bytes left in the current chunk
        self._line = b""  # a size line (or the CRLF after data) being read
        self._after_data = False
        self.done = False

    def feed(self, data: memoryview) -> int:
        body = 0
        at = 0
        size = len(data)
        while at < size and not self.done:
            if self._left:
                take = min(self._left, size - at)
                if self._sink is not None:
                    self._sink(data[at : at + take])
                self._left -= take
                body += take
                at += take
                if not self._left:
                    self._after_data = True
                continue
            end = bytes(data[at : at + 64]).find(b"\n")
            if end < 0:
                self._line += bytes(data[at:])
                if len(self._line) > 4096:
                    raise ValueError("chunk size line too long")
                break
            line = self._line + bytes(data[at : at + end])
            self._line = b""
            at += end + 1
            if self._after_data:
                self._after_data = False
                continue
            chunk = int(line.split(b";")[0].strip(), 16)
            if chunk == 0:
                # Trailers are not used by the servers benchmarked: end at the last chunk.
                self.done = True
            self._left = chunk
        return body


def fetch(
    url: str,
    token: str | None = None,
    *,
    rate: float | None = None,
    hash_body: bool = False,
    buffer_size: int = 1 << 20,
    timeout: float = 120.0,
    first_bytes_only: bool = False,
) -> Fetch:
    """GET `url` on a fresh connection and read the whole body (or only the head)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    digest = hashlib.sha256() if hash_body else None
    sink = digest.update if digest is not None else None
    buffer = bytearray(buffer_size if rate is None else min(buffer_size, 64 << 10))
    view = memoryview(buffer)
    gaps = array("d")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(request_bytes(url, token))
        head = b""
        while b"\r\n\r\n" not in head:
            got = sock.recv(65536)
            if not got:
                raise IncompleteBody("closed before the headers")
            head += got
        first = time.perf_counter()
        header_blob, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"]) if "content-length" in headers else None
        framing = None if length is not None else ChunkedFraming(sink)
        received = 0

        def take(piece: memoryview) -> bool:
            nonlocal received
            if framing is not None:
                received += framing.feed(piece)
                return framing.done
            assert length is not None
            piece = piece[: length - received]
            if sink is not None:
                sink(piece)
            received += len(piece)
            return received >= length

        finished = take(memoryview(rest)) if rest or length == 0 else length == 0
        finished = finished or first_bytes_only
        last = first
        if not finished and length is not None and sink is None and rate is None:
            # The common case, kept tight: only count (one request per connection, so
            # nothing follows the body).
            recv_into, clock, note = sock.recv_into, time.perf_counter, gaps.append
            while received < length:
                count = recv_into(view)
                now = clock()
                if not count:
                    raise IncompleteBody(f"closed after {received} body bytes")
                note(now - last)
                last = now
                received += count
            finished = True
        while not finished:
            count = sock.recv_into(view)
            now = time.perf_counter()
            if not count:
                raise IncompleteBody(f"closed after {received} body bytes")
            gaps.append(now - last)
            last = now
            finished = take(view[:count])
            if rate is not None:
                ahead = received / rate - (now - first)
                if ahead > 0:
                    time.sleep(ahead)
        ended = time.perf_counter()
    return Fetch(
        status=status,
        headers=headers,
        body_bytes=received,
        ttfb_s=first - started,
        seconds=ended - started,
        gaps=gaps,
        sha256=digest.hexdigest() if digest is not None else None,
    )
