"""Load mode: N raw-socket clients download one URL over and over for S seconds.

    python -m bench.load [--url URL] --token T --concurrency N --duration S [--rate BPS]
                         [--header "Name: value"]... [--pid PID] [--json]

Each client is an asyncio `BufferedProtocol` reading into its own buffer; with `--rate`
it pauses reading to hold that many bytes per second, so the server meets real TCP
backpressure. Prints aggregate throughput, requests per second, per-client fairness
(slowest / fastest client by bytes), errors, TTFB and the gaps between reads (p50, p99,
max), and, with `--pid`, the server's CPU seconds per GiB and its RSS over time. A 200,
206 or 304 counts as a completed request. The URL defaults to the demo's download on
loopback; any other host works too (a staging deployment, say), with a warning on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from .client import ChunkedFraming, request_bytes
from .stats import ProcSampler, summary

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_URL = "http://127.0.0.1:8080/api/v1/models/mdl-churn/training-metrics/logs/download"
OK = (200, 206, 304)


@dataclass
class ClientStats:
    body_bytes: int = 0
    requests: int = 0
    completed: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    ttfb: array[float] = field(default_factory=lambda: array("d"))
    gaps: array[float] = field(default_factory=lambda: array("d"))


class _Download(asyncio.BufferedProtocol):
    """One GET on one connection; `done` resolves when the body ended or the link broke."""

    def __init__(self, stats: ClientStats, buffer: bytearray, rate: float | None) -> None:
        self.stats, self.rate = stats, rate
        self.view = memoryview(buffer)
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.length: int | None = None
        self.framing: ChunkedFraming | None = None
        self.received = 0
        self.status = 0
        self.started = time.perf_counter()
        self.first = 0.0
        self.last = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        now = time.perf_counter()
        data = self.view[:nbytes]
        if not self.first:
            self.head += bytes(data)
            if b"\r\n\r\n" not in self.head:
                return
            self.first = self.last = now
            self.stats.ttfb.append(now - self.started)
            blob, _, rest = self.head.partition(b"\r\n\r\n")
            lines = blob.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value)
            if self.status == 304:
                self.length = 0
            if self.length is None:
                self.framing = ChunkedFraming(None)
            self._take(memoryview(rest))
        else:
            self.stats.gaps.append(now - self.last)
            self.last = now
            self._take(data)
        if self.rate is not None and not self.done.done() and self.transport is not None:
            ahead = self.received / self.rate - (now - self.first)
            if ahead > 0.001:
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(ahead, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _take(self, data: memoryview) -> None:
        if self.framing is not None:
            got = self.framing.feed(data)
            finished = self.framing.done
        else:
            assert self.length is not None
            got = min(len(data), self.length - self.received)
            finished = self.received + got >= self.length
        self.received += got
        self.stats.body_bytes += got
        if finished and not self.done.done():
            self.done.set_result("ok" if self.status in OK else f"status {self.status}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result("incomplete body" if self.first else "no response")


async def _client(
    host: str, port: int, request: bytes, stats: ClientStats, deadline: float, rate: float | None
) -> None:
    loop = asyncio.get_running_loop()
    buffer = bytearray(256 << 10 if rate is None else 16 << 10)
    while time.perf_counter() < deadline:
        stats.requests += 1
        try:
            transport, protocol = await loop.create_connection(
                lambda: _Download(stats, buffer, rate), host, port
            )
        except OSError as exc:
            stats.errors += 1
            kind = type(exc).__name__
            stats.error_kinds[kind] = stats.error_kinds.get(kind, 0) + 1
            await asyncio.sleep(0.05)
            continue
        transport.write(request)
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(protocol.done), max(0.0, deadline - time.perf_counter())
            )
        except TimeoutError:
            outcome = "cut at the deadline"
        transport.abort() if outcome != "ok" else transport.close()
        if outcome == "ok":
            stats.completed += 1
        elif outcome != "cut at the deadline":
            stats.errors += 1
            stats.error_kinds[outcome] = stats.error_kinds.get(outcome, 0) + 1


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def remote_warning(url: str) -> str | None:
    """The warning for a target that is not this machine's loopback interface, if it is not."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        local = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        local = False
    return None if local else f"warning: sending load to {host}, which is not this machine"


async def run_load(
    url: str,
    token: str | None,
    concurrency: int,
    duration: float,
    rate: float | None = None,
    pid: int | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the clients; return every figure as plain data."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("bench.load speaks plain http:// only")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    request = request_bytes(url, token, headers)
    clients = [ClientStats() for _ in range(concurrency)]
    sampler = ProcSampler(pid) if pid else None
    if sampler:
        sampler.start()
    cpu_before = _own_cpu_s()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_client(host, port, request, stats, deadline, rate) for stats in clients)
    )
    elapsed = time.perf_counter() - started
    client_cpu_s = _own_cpu_s() - cpu_before
    usage = sampler.stop() if sampler else None
    total = sum(c.body_bytes for c in clients)
    per_client = [c.body_bytes for c in clients]
    ttfb = array("d", (t for c in clients for t in c.ttfb))
    gaps = array("d", (g for c in clients for g in c.gaps))
    error_kinds: dict[str, int] = {}
    for c in clients:
        for kind, count in c.error_kinds.items():
            error_kinds[kind] = error_kinds.get(kind, 0) + count
    result: dict[str, Any] = {
        "url": url,
        "concurrency": concurrency,
        "rate_bytes_per_s": rate,
        "duration_s": elapsed,
        "bytes": total,
        "mb_per_s": total / elapsed / 1e6,
        "requests": sum(c.requests for c in clients),
        "completed": sum(c.completed for c in clients),
        "requests_per_s": sum(c.completed for c in clients) / elapsed,
        "errors": sum(c.errors for c in clients),
        "error_kinds": error_kinds,
        "fairness": min(per_client) / max(per_client) if max(per_client) else 0.0,
        "slowest_client_mb_per_s": min(per_client) / elapsed / 1e6,
        "fastest_client_mb_per_s": max(per_client) / elapsed / 1e6,
        "ttfb_s": summary(ttfb),
        "gap_s": summary(gaps),
        # This process's CPU over the run (the clients, and the sampler when given): near
        # the run's length, the clients themselves are the limit.
        "client_cpu_s": client_cpu_s,
    }
    if usage is not None:
        result["server"] = usage.as_dict(total)
    return result


def run_load_sync(
    url: str,
    token: str | None,
    concurrency: int,
    duration: float,
    rate: float | None = None,
    pid: int | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`run_load` on a fresh event loop: uvloop's when installed (a cheaper client)."""
    work = run_load(url, token, concurrency, duration, rate, pid, headers)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    result: dict[str, Any] = uvloop.run(work)
    return result


def format_result(result: dict[str, Any]) -> str:
    """The figures as a few readable lines."""
    lines = [
        f"{result['concurrency']} clients"
        + (
            f" at {result['rate_bytes_per_s'] / 1e6:g} MB/s each"
            if result["rate_bytes_per_s"]
            else ""
        )
        + f", {result['duration_s']:.1f} s: {result['mb_per_s']:.1f} MB/s aggregate,"
        f" {result['completed']} downloads ({result['requests_per_s']:.0f}/s),"
        f" {result['errors']} errors"
        f" {result['error_kinds'] or ''}",
        f"fairness (slowest/fastest client): {result['fairness']:.3f}"
        f" ({result['slowest_client_mb_per_s']:.2f}"
        f" / {result['fastest_client_mb_per_s']:.2f} MB/s)",
    ]
    for name in ("ttfb_s", "gap_s"):
        s = result[name]
        lines.append(
            f"{name[:-2]}: p50 {s['p50'] * 1e3:.2f} ms, p99 {s['p99'] * 1e3:.2f} ms,"
            f" max {s['max'] * 1e3:.2f} ms (n={s['n']})"
        )
    if "server" in result:
        server = result["server"]
        lines.append(
            f"server: {server['cpu_s_per_gib']:.2f} CPU s/GiB, RSS peak"
            f" {server['rss_peak_mib']:.1f} MiB (start {server['rss_start_mib']:.1f} MiB)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"default: {DEFAULT_URL}")
    parser.add_argument("--token")
    parser.add_argument(
        "--header", action="append", default=[], help='an extra request header, "Name: value"'
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, help="bytes per second per client")
    parser.add_argument("--pid", type=int, help="server process to sample (CPU, RSS)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 4096 or not 0 < args.duration <= 3600:
        parser.error("concurrency must be 1..4096 and duration 0..3600 s")
    if urlsplit(args.url).scheme != "http":
        parser.error("--url must be an http:// URL")
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header {header!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if (warning := remote_warning(args.url)) is not None:
        print(warning, file=sys.stderr)
    result = run_load_sync(
        args.url, args.token, args.concurrency, args.duration, args.rate, args.pid, headers
    )
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print(format_result(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
