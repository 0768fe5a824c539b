"""What live follow costs: N idle followers of one running log, then appends.

One `streamer serve` on a fresh local store holding one running run. N clients follow its
log (`follow=true`, raw sockets, so that the clients cost little); then, for `--idle-s`,
nobody writes: the server's polls of the log (`streamer_follow_polls_total`), its CPU
time and its RSS are read before and after. Then `--appends` lines are appended one at a
time, each once every follower has the one before, and the time from each append to the
last follower receiving it is reported (the freshness promise: the poll interval plus
100 ms).

    python -m bench.follow --followers 200 --idle-s 10 --poll-s 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from bench.servers import streamer
from streamer.auth import issue_token

SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
MODEL, RUN, ORG = "mdl-follow", "run-follow", "org-bench"
LINE = b"2026-03-13T12:00:00Z [INFO] step %d loss=0.5\n"


def seed(root: Path) -> Path:
    folder = root / "models" / MODEL / "runs" / RUN
    folder.mkdir(parents=True)
    (root / "models" / MODEL / "model.json").write_bytes(
        orjson.dumps({"model_id": MODEL, "organization_id": ORG})
    )
    (folder / "run.json").write_bytes(orjson.dumps({"run_id": RUN, "status": "running"}))
    log = folder / "training.log"
    log.write_bytes(b"".join(LINE % i for i in range(100)))
    return log


def append(log: Path, line: bytes) -> None:
    with open(log, "ab") as file:
        file.write(line)


class Follower:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.seen = b""

    async def until(self, marker: bytes) -> float:
        while marker not in self.seen:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the follow ended")
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


async def measure(args: argparse.Namespace, root: Path) -> None:
    log = seed(root)
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=3600)
    env = {"STREAMER_FOLLOW_POLL_S": str(args.poll_s), "STREAMER_FOLLOW_MAX_S": "0"}
    with streamer(str(root), SECRET, root / "server.log", env=env) as server:
        rss_before = rss_kib(server.pid)
        followers = [await follow(server.port, token) for _ in range(args.followers)]
        await asyncio.gather(*(f.until(LINE % 99) for f in followers))
        polls0, cpu0, wall0 = polls(server.url), cpu_s(server.pid), time.perf_counter()
        await asyncio.sleep(args.idle_s)
        polls1, cpu1, wall1 = polls(server.url), cpu_s(server.pid), time.perf_counter()
        rss_after = rss_kib(server.pid)
        delays = []
        for i in range(args.appends):
            line = LINE % (1000 + i)
            append(log, line)
            appended = time.perf_counter()
            received = await asyncio.gather(*(f.until(line) for f in followers))
            delays.append(max(received) - appended)
        for f in followers:
            f.writer.close()
    idle = wall1 - wall0
    print(f"followers {args.followers}, poll interval {args.poll_s} s, idle {idle:.1f} s")
    print(f"  polls of the log per second: {(polls1 - polls0) / idle:.2f}")
    print(f"  server CPU while idle: {100 * (cpu1 - cpu0) / idle:.2f}% of a core")
    print(f"  server RSS: {rss_before} KiB before, {rss_after} KiB with the followers")
    print(
        f"  append to last follower: p50 {1000 * statistics.median(delays):.0f} ms, "
        f"max {1000 * max(delays):.0f} ms over {len(delays)} appends"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--appends", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as folder:
        asyncio.run(measure(args, Path(folder)))


if __name__ == "__main__":
    main()
