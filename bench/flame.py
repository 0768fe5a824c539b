"""Where a small request's time goes: py-spy samples of `streamer serve` under the 4 KiB load.

    python -m bench.flame [--duration 15] [--clients 16] [--rate 400] [--304] [--bare]
                          [--out DIR]

- streamer serves a 4 KiB log (as served: auth, metrics, access log on) while `clients`
  raw-socket clients fetch it over and over, a new connection per request (bench.load in
  a child process), and py-spy samples the server (stopping it for each sample: a
  sample taken while it runs can be a torn stack).
- The samples are written as collapsed stacks (`DIR/small.txt`, or `small-304.txt` with
  `--304`, which sends the ETag back as `If-None-Match`); `speedscope` or `flamegraph.pl`
  draw them. `--bare` profiles the bare ASGI callable (bench/baselines.py) instead, into
  `bare.txt`: what uvicorn itself costs per request.
- Printed: the requests per second under the profiler (lower than without it), then the
  share of samples each function is on the stack for (inclusive) among streamer's own
  modules and the libraries in SITES, and the functions on top (self) most often. Shares
  are of the samples taken while the server was busy: py-spy drops idle ones (waiting in
  epoll) unless `--idle`. Time in C (uvloop, the socket calls) shows as its caller's.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

LINE = re.compile(r":\d+\)$")
SITES = ("streamer/", "starlette/", "uvicorn/", "anyio/", "joserfc/", "prometheus_client/")


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (`frame;frame;... count` per line) as a counter of frame tuples."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def function(frame: str) -> str:
    """`name (path:line)` without its line: the samples of a function add up."""
    return LINE.sub(")", frame)


def shares(stacks: Counter[tuple[str, ...]]) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, inclusive, self) by function: each function counted once per sample it
    is on the stack for, and for the samples it is on top of."""
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    on_top: Counter[str] = Counter()
    for frames, count in stacks.items():
        for name in {function(frame) for frame in frames}:
            inclusive[name] += count
        on_top[function(frames[-1])] += count
    return total, inclusive, on_top


def summary(stacks: Counter[tuple[str, ...]], top: int = 40) -> list[str]:
    total, inclusive, on_top = shares(stacks)
    lines = [
        f"{total} samples",
        "",
        "inclusive (functions of streamer and the libraries it calls):",
    ]
    ours = [(f, n) for f, n in inclusive.most_common() if any(s in f for s in SITES)]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in ours[:top]]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in on_top.most_common(top)]
    return lines


def record(pid: int, url: str, token: str | None, args: argparse.Namespace, out: Path) -> float:
    """py-spy samples of `pid` into `out` while bench.load runs; the requests per second."""
    from .client import fetch

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    headers = []
    if args.revalidate:
        etag = fetch(url, token, first_bytes_only=True).headers.get("etag", "")
        headers = ["--header", f"If-None-Match: {etag}"]
    command = [sys.executable, "-m", "bench.load", "--url", url, "--token", token or ""]
    command += ["--concurrency", str(args.clients), "--duration", str(args.duration + 2)]
    load = subprocess.Popen([*command, *headers, "--json"], stdout=subprocess.PIPE)
    flags = ["--rate", str(args.rate), "--format", "raw", *(["--idle"] * args.idle)]
    flags += ["--duration", str(int(args.duration)), "--output", str(out)]
    subprocess.run([pyspy, "record", "-p", str(pid), *flags], check=True, capture_output=True)
    stdout, _ = load.communicate(timeout=args.duration + 120)
    rate: float = json.loads(stdout)["requests_per_s"]
    return rate


def main(argv: list[str] | None = None) -> int:
    from streamer.auth import issue_token

    from . import servers
    from .harness import SECRET, download_url
    from .logs import ORG, seed_store
    from .rate import SMALL, small_key

    parser = argparse.ArgumentParser(prog="python -m bench.flame")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--304", dest="revalidate", action="store_true", help="If-None-Match")
    parser.add_argument("--bare", action="store_true", help="the bare ASGI callable instead")
    parser.add_argument("--idle", action="store_true", help="keep samples of an idle loop")
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args(argv)
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
    args.out.mkdir(parents=True, exist_ok=True)
    name = ("bare" if args.bare else "small") + ("-304" if args.revalidate else "")
    out = args.out / f"{name}.txt"
    with tempfile.TemporaryDirectory(prefix="bench-flame-") as scratch:
        root, log = Path(scratch) / "store", Path(scratch) / "server.log"
        seed_store(root, [SMALL])
        if args.bare:
            with servers.baselines(root, log, bare=True) as bare:
                rate = record(bare.pid, f"{bare.url}/{small_key()}", None, args, out)
        else:
            with servers.streamer(str(root), SECRET, log) as streamer:
                url = download_url(streamer.url, SMALL, "txt")
                rate = record(streamer.pid, url, token, args, out)
    print(f"{rate:.0f} requests/s under the profiler; stacks in {out}")
    print("\n".join(summary(read_stacks(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
