"""Per-request cost and responsiveness under load: the small-log and probe cases.

- Request rate: `clients` raw-socket clients fetch one small URL over and over, a new
  connection each time (bench.load), for a few seconds; the figure is completed
  requests per second. Conditional requests (`If-None-Match`) answer 304 without a body.
- Probes under load: `clients` clients download a large log at full speed (bench.load in
  a child process, so that the probing client shares no event loop with them); meanwhile
  this process opens a new connection every few tens of milliseconds for `/healthz`,
  `/readyz` and a small download in turn, with blocking sockets, and times each from the
  connect to the first byte of the answer (the whole answer, for the probes).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

from .client import request_bytes
from .stats import summary

PROBE_INTERVAL_S = 0.03


def probe_once(url: str, token: str | None = None, *, whole: bool) -> tuple[int, float]:
    """(status, seconds) of one GET on a new connection: to the first byte of the answer,
    or to its end when `whole` (a response with a Content-Length)."""
    parts = urlsplit(url)
    started = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=30) as sock:
        sock.sendall(request_bytes(url, token))
        data = sock.recv(65536)
        first = time.perf_counter()
        if not data:
            return 0, first - started
        while b"\r\n\r\n" not in data and (more := sock.recv(65536)):
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if not whole:
            return status, first - started
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length and (more := sock.recv(65536)):
            body += more
        return status, time.perf_counter() - started


def probes_under_load(
    base: str,
    load_url: str,
    small_url: str,
    token: str,
    clients: int,
    duration: float,
) -> dict[str, Any]:
    """The load's own figures, and p50/p99/max of each probe kind while it ran."""
    load = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--url",
            load_url,
            "--token",
            token,
            "--concurrency",
            str(clients),
            "--duration",
            str(duration),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    kinds = {
        "healthz": (base + "/healthz", None, True),
        "readyz": (base + "/readyz", None, True),
        "download_first_byte": (small_url, token, False),
    }
    seen: dict[str, array[float]] = {kind: array("d") for kind in kinds}
    failures: dict[str, int] = dict.fromkeys(kinds, 0)
    time.sleep(min(2.0, duration / 4))  # every client connected and streaming
    stop = time.monotonic() + duration - min(2.0, duration / 4) - 1.0
    while time.monotonic() < stop:
        for kind, (url, credential, whole) in kinds.items():
            status, seconds = probe_once(url, credential, whole=whole)
            seen[kind].append(seconds)
            failures[kind] += status != 200
            time.sleep(PROBE_INTERVAL_S)
    out, err = load.communicate(timeout=duration + 120)
    if load.returncode not in (0, 1):
        raise RuntimeError(f"bench.load failed: {err.decode(errors='replace')[-300:]}")
    result = json.loads(out)
    return {
        "clients": clients,
        "load_mb_per_s": result["mb_per_s"],
        "load_errors": result["errors"],
        "probes": {kind: summary(values) for kind, values in seen.items()},
        "probe_failures": failures,
    }
