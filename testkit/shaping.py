"""A network model for tests and benchmarks: a shaping TCP proxy in front of an emulator.

moto and fake-gcs-server on loopback answer in microseconds and give one connection GB/s;
a real object store answers each request after tens of milliseconds and gives one
connection tens of MB/s. `ShapingProxy` puts those two costs back:

- first-byte latency: the response to each HTTP request leaves the proxy no earlier than
  `latency_s` after the request's head reached it. The emulator works on the request
  meanwhile, so the first byte comes after max(latency, emulator time).
- bandwidth: each connection carries at most `bandwidth` bytes/s from the store to the
  client, paced by a token bucket of `burst` bytes (sent(t) <= burst + bandwidth * t).

The defaults model S3 in-region, after AWS's "Optimizing Amazon S3 performance" guidance
(first-byte latency of tens of milliseconds for small objects, which is why it tells
readers to issue concurrent byte-range GETs) and the per-connection throughput commonly
measured from EC2 in the same region, about 85 to 90 MB/s per request stream (GCS publishes
the same advice and figures of the same order): 20 ms and 80 MB/s per connection. The
burst, 256 KiB (3 ms at 80 MB/s), is small beside the 8 to 16 MB parts a parallel reader
asks for, and costs the proxy about half the CPU of a 64 KiB one (bench/README.md).

Bytes from the store never enter Python: they go socket -> pipe -> socket with os.splice
(Linux), paced in pieces of at most `burst`; one thread per direction per connection.

Rules the proxy keeps: it never changes a byte (it only finds where requests begin,
from the request line, headers and Content-Length body; a chunked request body turns the
connection into a plain pipe for the rest of its life); its only sleeps are the shaping
delays; it counts what passes and records, as its own checks, the shortest
request-to-first-byte delay it let through (`min_delay_s`) and how far any connection got
ahead of its pacing bound (`pacing_excess`, never above 0 when pacing holds).
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import threading
import time
from collections import deque

LATENCY_S = 0.020
BANDWIDTH = 80_000_000
BURST = 256 * 1024

_CHUNK = 256 * 1024  # the most one read from a socket takes
_MAX_HEAD = 64 * 1024
_END = b"\r\n\r\n"


class RequestHeads:
    """Where each HTTP/1.1 request begins in a client's byte stream (no I/O).

    `feed(data)` returns how many request heads `data` completes: a head is the request
    line and headers up to the blank line; its Content-Length body is skipped. A chunked
    body, a malformed length or an oversized head makes the stream `opaque`: nothing more
    is counted on it.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._body_left = 0
        self.opaque = False

    def feed(self, data: bytes) -> int:
        heads = 0
        pos = 0
        while pos < len(data) and not self.opaque:
            if self._body_left:
                take = min(self._body_left, len(data) - pos)
                self._body_left -= take
                pos += take
                continue
            end = self._head_end(data, pos)
            if end < 0:
                self._head += data[pos:]
                self.opaque = len(self._head) > _MAX_HEAD
                break
            self._head += data[pos:end]
            pos = end
            if self._head.strip(b"\r\n"):
                heads += 1
                self._body_left = self._body_length(bytes(self._head))
            self._head.clear()
        return heads

    def _head_end(self, data: bytes, pos: int) -> int:
        """The index just past the blank line that ends the head, or -1."""
        if self._head:
            # The blank line may straddle the previous chunk and this one.
            tail = bytes(self._head[-3:])
            at = (tail + data[pos : pos + 3]).find(_END)
            if at >= 0:
                return pos + at + len(_END) - len(tail)
        at = data.find(_END, pos)
        return -1 if at < 0 else at + len(_END)

    def _body_length(self, head: bytes) -> int:
        length = 0
        for line in head.strip(b"\r\n").split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and value.strip().lower() != b"identity":
                self.opaque = True
            elif name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self.opaque = True
        return length


class ShapingProxy:
    """A TCP proxy on loopback in front of an emulator, modelling a remote object store:
    each HTTP request's response starts `latency_s` after the request reached the proxy, and
    each connection carries at most `bandwidth` bytes/s. Counts what passes.

    `latency_s` and `bandwidth` may be changed while it runs (`float("inf")` bandwidth and
    0 latency: unshaped). `requests`: request heads seen; `bytes_down`: bytes relayed from
    the upstream server; `connections`: connections accepted. `min_delay_s`: the shortest
    time from a request's head reaching the proxy to its response's first byte leaving it
    (inf before any). `pacing_excess`: the most bytes any connection released beyond
    `burst` + the integral of `bandwidth` over its life (0 or less while pacing holds).
    `open_connections`: connections relayed now; `peak_connections`: the most open at once
    since the counters were reset.
    """

    def __init__(
        self,
        upstream: str,
        *,
        latency_s: float = LATENCY_S,
        bandwidth: float = BANDWIDTH,
        burst: int = BURST,
    ) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self.latency_s = latency_s
        self.bandwidth = bandwidth
        self.burst = burst
        self._lock = threading.Lock()
        self.open_connections = 0
        self.reset_counters()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.bytes_down = 0
            self.connections = 0
            self.peak_connections = self.open_connections
            self.min_delay_s = math.inf
            self.pacing_excess = -math.inf

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets |= {client, upstream}
            self.open_connections += 1
            self.peak_connections = max(self.peak_connections, self.open_connections)
        # Arrival times of the requests whose responses have not started yet.
        arrivals: deque[float] = deque()
        up = threading.Thread(target=self._relay_up, args=(client, upstream, arrivals))
        up.start()
        try:
            self._relay_down(upstream, client, arrivals)
        finally:
            up.join()
            with self._lock:
                self._sockets -= {client, upstream}
                self.open_connections -= 1
            client.close()
            upstream.close()

    def _relay_up(
        self, client: socket.socket, upstream: socket.socket, arrivals: deque[float]
    ) -> None:
        heads = RequestHeads()
        try:
            while data := client.recv(_CHUNK):
                if not heads.opaque:
                    count = heads.feed(data)
                    if count:
                        now = time.monotonic()
                        # Recorded before the request goes on, so before its response can start.
                        arrivals.extend([now] * count)
                        with self._lock:
                            self.requests += count
                upstream.sendall(data)
            upstream.shutdown(socket.SHUT_WR)
        except OSError:
            _shutdown(client, upstream)

    def _relay_down(
        self, upstream: socket.socket, client: socket.socket, arrivals: deque[float]
    ) -> None:
        # Bytes go socket -> pipe -> socket with os.splice: they never enter Python.
        pipe_r, pipe_w = os.pipe()
        fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, _CHUNK)
        source, sink = upstream.fileno(), client.fileno()
        burst = float(self.burst)
        tokens = burst  # the bucket starts full
        refilled = time.monotonic()
        released = 0
        allowance = burst  # the pacing bound: burst + the integral of the rate so far
        excess = -math.inf
        try:
            while size := os.splice(source, pipe_w, _CHUNK):
                if arrivals:
                    # The first bytes after a request: its response starts, after the latency.
                    arrived = arrivals.popleft()
                    wait = arrived + self.latency_s - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    delay = time.monotonic() - arrived
                    with self._lock:
                        self.min_delay_s = min(self.min_delay_s, delay)
                pos = 0
                while pos < size:
                    rate = self.bandwidth
                    if math.isinf(rate):
                        piece = size - pos
                        allowance = math.inf
                    else:
                        now = time.monotonic()
                        gained = (now - refilled) * rate
                        refilled = now
                        allowance += gained
                        tokens = min(burst, tokens + gained)
                        # Wake for half a bucket at a time, and send all the bucket holds,
                        # so that a late wake-up (a busy machine) is made up, not lost.
                        wanted = min(size - pos, self.burst // 2)
                        if tokens < wanted:
                            time.sleep((wanted - tokens) / rate)
                            continue
                        piece = min(size - pos, int(tokens))
                        tokens -= piece
                    released += piece
                    excess = max(excess, released - allowance)
                    pos += piece
                    # Counted before they leave: a client that has its bytes sees them counted.
                    with self._lock:
                        self.bytes_down += piece
                        self.pacing_excess = max(self.pacing_excess, excess)
                    while piece:
                        piece -= os.splice(pipe_r, sink, piece)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            _shutdown(client, upstream)
        finally:
            os.close(pipe_r)
            os.close(pipe_w)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            _shutdown(*self._sockets)
        self._thread.join(5)

    def __enter__(self) -> ShapingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
