"""The shaping proxy's own ceiling: how many bytes/s it relays before it is the limit.

`python -m bench.shaping --connections 16 --size 256MiB --repeat 3`

A minimal HTTP/1.1 upstream (a child process: every GET answers `size` bytes from one
buffer) is read by `connections` concurrent raw-socket clients (threads of this process,
`recv_into` 1 MiB), directly and through `testkit.shaping.ShapingProxy` (another child
process) unshaped (no latency, no bandwidth cap) and at its defaults (20 ms, 80 MB/s per
connection). Aggregate MB/s (10^6 bytes) of all bodies, median and runs, with the proxy's
CPU seconds per GiB.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit.emulators import free_port
from testkit.shaping import BANDWIDTH, BURST, LATENCY_S, ShapingProxy

_BLOCK = memoryview(bytes(4 * 1024 * 1024))


def serve(port: int, size: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)

    def answer(conn: socket.socket) -> None:
        with conn:
            head = b""
            while True:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                head = head.split(b"\r\n\r\n", 1)[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                left = size
                while left:
                    n = min(left, len(_BLOCK))
                    conn.sendall(_BLOCK[:n])
                    left -= n

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def proxy(upstream: str, latency_s: float, bandwidth: float, burst: int) -> None:
    with ShapingProxy(upstream, latency_s=latency_s, bandwidth=bandwidth, burst=burst) as shaper:
        print(shaper.url, flush=True)
        sys.stdin.read()


def fetch(port: int, size: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /object HTTP/1.1\r\nHost: bench\r\n\r\n")
        buffer = bytearray(1024 * 1024)
        received = 0
        head_end = -1
        while head_end < 0:
            received += sock.recv_into(buffer)
            head_end = bytes(buffer[:received]).find(b"\r\n\r\n")
        body = received - head_end - 4
        while body < size:
            n = sock.recv_into(buffer)
            if not n:
                raise RuntimeError("short body")
            body += n


def aggregate(port: int, connections: int, size: int) -> float:
    threads = [threading.Thread(target=fetch, args=(port, size)) for _ in range(connections)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return connections * size / (time.perf_counter() - start) / 1e6


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks of 1/100 s


def size_arg(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text.removesuffix(unit)) * factor
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--size", type=size_arg, default=size_arg("256MiB"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--burst", type=size_arg, default=BURST, help="the proxy's burst")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.size)
        return
    if args.proxy:
        proxy(args.proxy[0], float(args.proxy[1]), float(args.proxy[2]), args.burst)
        return

    port = free_port()
    python = [sys.executable, "-m", "bench.shaping"]
    upstream = subprocess.Popen(
        [*python, "--serve", str(port), "--size", str(args.size)], stdout=subprocess.PIPE
    )
    assert upstream.stdout is not None
    upstream.stdout.readline()
    cases: dict[str, tuple[str, str] | None] = {
        "direct": None,
        "proxy, unshaped": ("0", "inf"),
        "proxy, 20 ms + 80 MB/s per connection": (str(LATENCY_S), str(BANDWIDTH)),
    }
    try:
        print(f"{args.connections} connections x {args.size / 2**20:.0f} MiB, burst {args.burst}")
        print("| path | MB/s | runs | proxy CPU s/GiB |\n|---|---|---|---|")
        for name, shaping in cases.items():
            runs: list[float] = []
            cpu: list[float] = []
            for _ in range(args.repeat):
                if shaping is None:
                    runs.append(aggregate(port, args.connections, args.size))
                    continue
                shaper = subprocess.Popen(
                    [
                        *python,
                        "--proxy",
                        f"http://127.0.0.1:{port}",
                        *shaping,
                        "--burst",
                        str(args.burst),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert shaper.stdout is not None and shaper.stdin is not None
                url = shaper.stdout.readline().strip()
                before = cpu_s(shaper.pid)
                runs.append(aggregate(int(url.rsplit(":", 1)[1]), args.connections, args.size))
                gib = args.connections * args.size / 2**30
                cpu.append((cpu_s(shaper.pid) - before) / gib)
                shaper.stdin.close()
                shaper.wait()
            shown = ", ".join(f"{run:.0f}" for run in runs)
            cpu_text = f"{statistics.median(cpu):.2f}" if cpu else "-"
            print(f"| {name} | {statistics.median(runs):.0f} | {shown} | {cpu_text} |")
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
