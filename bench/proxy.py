"""The shaping proxy (testkit/shaping.py) in a process of its own.

    python -m bench.proxy --upstream URL

The proxy relays with Python threads; in the process of the clients it measures, it would
share their interpreter. Here it prints its URL on one line, then answers each command
on stdin with one JSON line: `counters`, `reset`, `shape LATENCY_S BANDWIDTH` (`inf` for
unshaped); end of input stops it. `ProxyProcess` drives it from the benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import orjson


class ProxyProcess:
    """A shaping proxy child process in front of `upstream`, at the proxy's defaults."""

    def __init__(self, upstream: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.proxy", "--upstream", upstream],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.close()
            raise RuntimeError("the shaping proxy did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = orjson.loads(self.process.stdout.readline())
        return answer

    def counters(self) -> dict[str, Any]:
        return self._ask("counters")

    def reset(self) -> None:
        self._ask("reset")

    def shape(self, latency_s: float, bandwidth: float) -> dict[str, Any]:
        return self._ask(f"shape {latency_s} {bandwidth}")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    from testkit.shaping import ShapingProxy

    parser = argparse.ArgumentParser(prog="python -m bench.proxy")
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    with ShapingProxy(args.upstream) as proxy:

        def state() -> dict[str, Any]:
            return {
                "latency_s": proxy.latency_s,
                "bandwidth": proxy.bandwidth,
                "requests": proxy.requests,
                "bytes_down": proxy.bytes_down,
                "connections": proxy.connections,
                "peak_connections": proxy.peak_connections,
            }

        print(proxy.url, flush=True)
        for line in sys.stdin:
            command, *values = line.split()
            if command == "reset":
                proxy.reset_counters()
            elif command == "shape":
                proxy.latency_s, proxy.bandwidth = float(values[0]), float(values[1])
            sys.stdout.write(orjson.dumps(state()).decode())
            sys.stdout.write("\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
