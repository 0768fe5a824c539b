"""Get Logs: the latency of a page against the log's size, and what each page reads.

    python -m bench.pages [--sizes 1M,100M,1G,10G] [--s3-sizes 1M,64M] [--rounds 30]
                          [--walk 100M] [--json PATH]

The logs are generated on the fly (`testkit.generated`: fixed 64-byte lines, 1 ms apart) in
the memory store, so a 10 GiB log costs only the bytes a page reads; the S3 logs are
real objects in moto's server, reached through `testkit/shaping.py`'s proxy with its
defaults (20 ms first-byte latency per request, 80 MB/s per connection: S3 in-region),
which also counts requests and bytes. streamer runs
in this process under uvicorn on a loopback port (the memory store is this process's),
and one keep-alive httpx client asks, in a shuffled order of sizes each round:
- the last page (`limit=100`, the default direction);
- a `since` page (`limit=100`, forward from the line a third of the way in).
Medians and p90 of `--rounds` rounds, and each page's store reads (counted at the page
reader for the memory store, on the wire for S3). `--walk` walks a generated log of that
size by 1000 lines both ways at the page reader and checks every line came once, in order.
The machine is shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Generator
from contextlib import ExitStack
from typing import Any

import anyio
import httpx
import orjson

from bench.stats import percentile
from streamer.auth import issue_token
from streamer.config import Settings
from streamer.cursors import Cursor, Direction, Walk
from streamer.logs.plan import PagePlan
from streamer.logs.seek import read_page
from streamer.storage import CachedReader, Store
from testkit.dataset import ORG, put_run
from testkit.emulators import BUCKET, fsspec_conf, make_bucket, moto_server
from testkit.generated import LINE, put_generated, render, timestamp
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.shaping import ShapingProxy

PATH = "/api/v1/models/{}/training-metrics/logs"
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_of(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].isalpha() else int(text)


def model_of(size: str) -> str:
    return f"mdl-pages-{size.lower()}"


def queries(size: int) -> dict[str, dict[str, str]]:
    third = size // LINE // 3
    return {
        "last": {"limit": "100"},
        "since": {"limit": "100", "direction": "forward", "since": timestamp(third)},
    }


def seed_memory(root: str, sizes: list[str]) -> None:
    for size in sizes:
        put_run(root, model_of(size), "run-1", b"")
        put_generated(root, f"models/{model_of(size)}/runs/run-1/training.log", size_of(size))


def engine_reads(root: str, size: str, query: dict[str, str]) -> tuple[int, int]:
    """(reads, bytes) of one page at the page reader."""
    store = Store.from_url(root)
    key = f"models/{model_of(size)}/runs/run-1/training.log"
    total = size_of(size) - size_of(size) % LINE
    direction: Direction = "forward" if query.get("direction") == "forward" else "backward"
    walk = Walk(model_of(size), None, direction, since=query.get("since"))
    plan = PagePlan(walk, int(query["limit"]))
    file = CachedReader(store, key, total)
    anyio.run(read_page, file, plan, True)
    return file.reads, file.bytes_read


def measure(
    running: Running, sizes: list[str], rounds: int, proxy: ShapingProxy | None = None
) -> dict[str, dict[str, Any]]:
    token = issue_token(SECRET, "bench", ORG, ["model:read"])
    times: dict[tuple[str, str], list[float]] = {}
    wire: dict[tuple[str, str], tuple[int, int]] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for round_ in range(rounds + 1):  # round 0 warms up and is not counted
            order = [(size, kind) for size in sizes for kind in ("last", "since")]
            random.shuffle(order)
            for size, kind in order:
                params = queries(size_of(size))[kind]
                if proxy is not None:
                    proxy.reset_counters()
                started = time.perf_counter()
                response = client.get(running.url + PATH.format(model_of(size)), params=params)
                elapsed = time.perf_counter() - started
                body = orjson.loads(response.content)
                assert response.status_code == 200 and len(body["data"]) == 100, response.text
                if round_:
                    times.setdefault((size, kind), []).append(elapsed)
                if proxy is not None:
                    wire[(size, kind)] = (proxy.requests, proxy.bytes_down)
    out: dict[str, dict[str, Any]] = {}
    for (size, kind), values in times.items():
        ordered = sorted(values)
        out[f"{size} {kind}"] = {
            "median_ms": statistics.median(values) * 1000,
            "p90_ms": percentile(ordered, 0.9) * 1000,
            "runs": len(values),
            **(
                {"requests": wire[(size, kind)][0], "bytes": wire[(size, kind)][1]}
                if proxy is not None
                else {}
            ),
        }
    return out


def walk_check(size: int) -> dict[str, Any]:
    """Walk a generated log by 1000 lines both ways; every line once, in order."""
    root = "memory://bench-walk"
    log = put_generated(root, "walk.log", size)
    store = Store.from_url(root)
    result: dict[str, Any] = {"size": log.size, "lines": log.size // LINE}
    for direction in ("backward", "forward"):
        started = time.perf_counter()
        walk = Walk("mdl-walk", None, direction)
        plan: PagePlan | None = PagePlan(walk, 1000)
        offsets: list[int] = []
        pages = 0
        while plan is not None:
            page = anyio.run(read_page, CachedReader(store, "walk.log", log.size), plan, True)
            pages += 1
            chunk = [line.offset for line in page.lines]
            offsets = chunk + offsets if direction == "backward" else offsets + chunk
            done = page.far <= page.start if direction == "backward" else page.far >= page.stop
            plan = (
                None
                if done
                else PagePlan(walk, 1000, cursor=Cursor(walk, "", page.far, 0, log.size))
            )
        result[direction] = {
            "pages": pages,
            "seconds": time.perf_counter() - started,
            "every_line_once_in_order": offsets == list(range(0, log.size, LINE)),
        }
    return result


def table(title: str, results: dict[str, dict[str, Any]], base: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| page | median ms | p90 ms | vs the same page of " + base + " | reads | bytes read |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        kind = name.split()[1]
        ratio = figures["median_ms"] / results[f"{base} {kind}"]["median_ms"]
        reads = figures.get("requests", figures.get("reads"))
        lines.append(
            f"| {name} | {figures['median_ms']:.1f} | {figures['p90_ms']:.1f} | {ratio:.2f}x"
            f" | {reads} | {figures.get('bytes', 0):,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__)
    parser.add_argument("--sizes", default="1M,100M,1G,10G")
    parser.add_argument("--s3-sizes", default="1M,64M", help="'' to skip S3")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--walk", default="100M", help="'' to skip the walk")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    sizes = [size for size in args.sizes.split(",") if size]
    s3_sizes = [size for size in args.s3_sizes.split(",") if size]
    report: dict[str, Any] = {}

    root = "memory://bench-pages"
    seed_memory(root, sizes)
    settings = Settings(storage_url=root, jwt_secret=SECRET)
    servers: Generator[Running, None, None] = serve_in_thread(settings)
    running = next(servers)
    try:
        memory = measure(running, sizes, args.rounds)
    finally:
        servers.close()
    for name, figures in memory.items():
        size, kind = name.split()
        figures["reads"], figures["bytes"] = engine_reads(root, size, queries(size_of(size))[kind])
    report["memory"] = memory
    print(table("memory store, generated logs", memory, sizes[0]))

    if s3_sizes:
        with ExitStack() as stack:
            endpoint = stack.enter_context(moto_server())
            stack.enter_context(
                fsspec_conf("s3", key="testing", secret="testing", endpoint_url=endpoint)
            )
            make_bucket("s3")
            s3_root = f"s3://{BUCKET}/bench-pages"
            for size in s3_sizes:
                put_run(s3_root, model_of(size), "run-1", render(0, size_of(size)))
            proxy = ShapingProxy(endpoint)
            stack.callback(proxy.close)
            with fsspec_conf("s3", endpoint_url=proxy.url):
                servers = serve_in_thread(Settings(storage_url=s3_root, jwt_secret=SECRET))
                running = next(servers)
            try:
                s3 = measure(running, s3_sizes, args.rounds, proxy)
            finally:
                servers.close()
        report["s3"] = s3
        print()
        print(
            table(
                "S3: moto through the shaping proxy (20 ms a request, 80 MB/s); catalog cached",
                s3,
                s3_sizes[0],
            )
        )

    if args.walk:
        report["walk"] = walk_check(size_of(args.walk))
        print()
        print("walk:", orjson.dumps(report["walk"]).decode())
    if args.json:
        with open(args.json, "wb") as file:
            file.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
