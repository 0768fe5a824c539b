"""Live follow measured where it runs: N followers of one running log, with a verdict.

One `streamer serve` follows one running run's log on a local store (`--store local`) or on
S3 (`--store s3`: moto behind testkit.shaping.ShapingProxy at its defaults, in a process of
its own (bench/proxy.py), 20 ms first-byte
latency and 80 MB/s per connection; the bench writes to moto directly, so the proxy counts
only the server's requests). N clients follow the log (`follow=true`, raw sockets, so that
the clients cost little). Then:

- idle, `--idle-s`: nobody writes. The server's polls (`streamer_follow_polls_total`), the
  store requests at the proxy (all metadata: nothing new to read), CPU and RSS are read.
- appends, `--appends`: before each, a wait drawn uniformly from one poll interval, so the
  append lands at a random phase of the poll; then one line is appended (S3 has no append:
  the object is rewritten longer) and the time until the last follower has it is recorded.
- all along, a probe asks /healthz every 10 ms on its own keep-alive connection.

Targets (SPEC section 9), each reported ok or FAIL, and the exit status is 1 if any fails:
append to last follower p95 <= poll interval + 100 ms; RSS with the followers <= RSS before
them + N x 64 KiB + 32 MiB; /healthz p99 < 50 ms; on S3, store requests per poll interval
while idle <= 1.5 ("about 1": the log's metadata each poll, run.json once per catalog TTL).

    python -m bench.follow --store s3 --followers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import orjson

from bench.servers import streamer
from bench.stats import percentile
from streamer.auth import issue_token

SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
MODEL, RUN, ORG = "mdl-follow", "run-follow", "org-bench"
LINE = b"2026-03-13T12:00:00Z [INFO] step %d loss=0.5\n"
BUCKET, PREFIX = "bench", "store"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FILES = {
    f"models/{MODEL}/model.json": orjson.dumps({"model_id": MODEL, "organization_id": ORG}),
    f"models/{MODEL}/runs/{RUN}/run.json": orjson.dumps({"run_id": RUN, "status": "running"}),
}
LOG_KEY = f"models/{MODEL}/runs/{RUN}/training.log"
FIRST = b"".join(LINE % i for i in range(100))


class Store(Protocol):
    url: str
    env: dict[str, str]

    def append(self, line: bytes) -> None: ...

    def requests(self) -> int | None: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.url, self.log = str(root), root / LOG_KEY
        self.env: dict[str, str] = {}
        for key, data in {**FILES, LOG_KEY: FIRST}.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

    def append(self, line: bytes) -> None:
        with open(self.log, "ab") as file:
            file.write(line)

    def requests(self) -> int | None:
        return None


class S3Store:
    def __init__(self, endpoint: str, proxy: Any) -> None:
        import boto3

        self.proxy = proxy
        self.url = f"s3://{BUCKET}/{PREFIX}"
        self.env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": proxy.url}
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_credentials()
        )
        self.client.create_bucket(Bucket=BUCKET)
        self.data = FIRST
        for key, data in {**FILES, LOG_KEY: FIRST}.items():
            self.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)

    def append(self, line: bytes) -> None:
        self.data += line
        self.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{LOG_KEY}", Body=self.data)

    def requests(self) -> int | None:
        count: int = self.proxy.counters()["requests"]
        return count


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


@contextmanager
def store(kind: str, root: Path) -> Iterator[Store]:
    if kind == "local":
        yield LocalStore(root)
        return
    from bench.proxy import ProxyProcess
    from testkit.emulators import moto_server

    with moto_server() as endpoint, ProxyProcess(endpoint) as proxy:
        yield S3Store(endpoint, proxy)


class Follower:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.seen = b""

    async def until(self, marker: bytes) -> float:
        while marker not in self.seen:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError(f"the follow ended: {self.seen[:300]!r}")
            self.seen = self.seen[-4096:] + data
        return time.perf_counter()


async def follow(port: int, token: str) -> Follower:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    target = f"/api/v1/models/{MODEL}/training-metrics/logs/download?run_id={RUN}&follow=true"
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    return Follower(reader, writer)


class Probe:
    """GET /healthz every `every_s` on one keep-alive connection, in a thread."""

    def __init__(self, port: int, every_s: float = 0.010) -> None:
        self.port, self.every_s = port, every_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        tick = time.perf_counter()
        while not self._stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            self.latencies.append(time.perf_counter() - started)
            tick = max(tick + self.every_s, time.perf_counter())
            self._stop.wait(tick - time.perf_counter())
        connection.close()

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.latencies


def polls(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("streamer_follow_polls_total")
    )


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("VmRSS")


async def appends(
    args: argparse.Namespace, where: Store, followers: list[Follower]
) -> tuple[list[float], list[float]]:
    """The delays from each append, at a random phase of the poll, to the first follower
    and to the last."""
    firsts, delays = [], []
    for i in range(args.appends):
        await asyncio.sleep(random.uniform(0, args.poll_s))
        line = LINE % (1000 + i)
        where.append(line)
        appended = time.perf_counter()
        received = await asyncio.gather(*(f.until(line) for f in followers))
        firsts.append(min(received) - appended)
        delays.append(max(received) - appended)
    return firsts, delays


async def measure(args: argparse.Namespace, where: Store, root: Path) -> dict[str, Any]:
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=3600)
    env = {**where.env, "STREAMER_FOLLOW_POLL_S": str(args.poll_s), "STREAMER_FOLLOW_MAX_S": "0"}
    with streamer(where.url, SECRET, root / "server.log", env=env) as server:
        rss_before = rss_kib(server.pid)
        followers = []
        for _ in range(args.followers):
            followers.append(await follow(server.port, token))
        await asyncio.gather(*(f.until(LINE % 99) for f in followers))
        probe = Probe(server.port)
        await asyncio.sleep(args.poll_s)  # the followers settle into the watch
        requests0 = where.requests()
        polls0, cpu0, wall0 = polls(server.url), cpu_s(server.pid), time.perf_counter()
        await asyncio.sleep(args.idle_s)
        polls1, cpu1, wall1 = polls(server.url), cpu_s(server.pid), time.perf_counter()
        requests1 = where.requests()
        rss_after = rss_kib(server.pid)
        firsts, delays = await appends(args, where, followers)
        health = probe.stop()
        for f in followers:
            f.writer.close()
    idle = wall1 - wall0
    per_poll = None
    if requests0 is not None and requests1 is not None:
        per_poll = (requests1 - requests0) / (idle / args.poll_s)
    return {
        "idle_s": idle,
        "polls_per_s": (polls1 - polls0) / idle,
        "cpu": (cpu1 - cpu0) / idle,
        "rss": (rss_before, rss_after),
        "requests_per_poll": per_poll,
        "delays": delays,
        "firsts": firsts,
        "health": health,
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {q: percentile(ordered, f) for q, f in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))} | {
        "max": ordered[-1]
    }


def verdict(args: argparse.Namespace, found: dict[str, Any]) -> bool:
    n = args.followers
    delays, health = _summary(found["delays"]), _summary(found["health"])
    before, after = found["rss"]
    rss_bound = before + n * 64 + 32 * 1024
    checks = {
        f"append to last follower p95 <= {1000 * args.poll_s + 100:.0f} ms": delays["p95"]
        <= args.poll_s + 0.100,
        f"RSS <= {rss_bound} KiB": after <= rss_bound,
        "/healthz p99 < 50 ms": health["p99"] < 0.050,
    }
    if found["requests_per_poll"] is not None:
        checks["store requests per poll interval <= 1.5"] = found["requests_per_poll"] <= 1.5
    print(f"follow on {args.store}: {n} followers, poll interval {args.poll_s} s")
    print(f"  idle {found['idle_s']:.1f} s: polls of the log per second {found['polls_per_s']:.2f}")
    if found["requests_per_poll"] is not None:
        print(f"  store requests per poll interval (proxy): {found['requests_per_poll']:.2f}")
    print(f"  server CPU while idle: {100 * found['cpu']:.2f}% of a core")
    print(f"  server RSS: {before} KiB before, {after} KiB with the followers")
    print(f"    that is {(after - before) / max(n, 1):.1f} KiB a follower")
    print(
        f"  append to last follower over {len(found['delays'])} appends at random phases: "
        f"p50 {1000 * delays['p50']:.0f} ms, p95 {1000 * delays['p95']:.0f} ms, "
        f"max {1000 * delays['max']:.0f} ms"
    )
    first = _summary(found["firsts"])
    print(
        f"  append to first follower: p50 {1000 * first['p50']:.0f} ms, "
        f"p95 {1000 * first['p95']:.0f} ms, max {1000 * first['max']:.0f} ms"
    )
    print(
        f"  /healthz every 10 ms ({len(found['health'])} probes): p50 "
        f"{1000 * health['p50']:.1f} ms, p99 {1000 * health['p99']:.1f} ms, "
        f"max {1000 * health['max']:.1f} ms"
    )
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--appends", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as folder:
        with store(args.store, Path(folder)) as where:
            found = asyncio.run(measure(args, where, Path(folder)))
    if not verdict(args, found):
        sys.exit(1)


if __name__ == "__main__":
    main()
