"""Get Logs on a gzip log: how long its pages take, and the longest the event loop stalls.

    python -m bench.gzip_pages [--mib 512] [--pages 3]

A log of one repeated line (so the .gz is small and the inflated copy large) in a local
store; the last 100 lines asked `--pages` times through `LogSources` and `read_page`, as
the handler does, while a ticker task sleeps 1 ms at a time and records the longest gap
between its wake-ups: the longest the loop was held. The first page inflates the log;
the later ones read the shared copy. The machine is shared and noisy: compare within a
run.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from streamer.catalog import LogObject, Run
from streamer.cursors import Walk
from streamer.logs.plan import PagePlan
from streamer.logs.seek import read_page
from streamer.logs.source import LogSources
from streamer.storage import ObjectInfo, Store

LINE = b"2026-03-13T10:00:00Z [INFO] the same line, again and again\n"


async def _ticker(gaps: list[float], stop: anyio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await anyio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last - 0.001)
        last = now


async def measure(root: Path, mib: int, pages: int) -> None:
    data = gzip.compress(LINE * ((mib << 20) // len(LINE)), 6)
    (root / "big.log.gz").write_bytes(data)
    run = Run("run-1", "completed", None, None, None)
    info = ObjectInfo(len(data), "v1", datetime.now(UTC))
    log = LogObject("mdl-x", run, "big.log.gz", True, info)
    store = Store.from_url(str(root))
    sources = LogSources(4, None)
    plan = PagePlan(Walk("mdl-x", "run-1", "backward"), 100)
    print(f"{mib} MiB inflated, {len(data) / 1e6:.2f} MB of gzip")
    for number in range(1, pages + 1):
        gaps: list[float] = []
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(_ticker, gaps, stop)
            await anyio.sleep(0.01)
            started = time.perf_counter()
            async with sources.open(store, log, plan) as file:
                page = await read_page(file, plan, True)
            took = time.perf_counter() - started
            stop.set()
        print(
            f"page {number}: {took:.3f} s, {len(page.lines)} lines, "
            f"longest loop stall {max(gaps) * 1000:.0f} ms over {len(gaps)} ticks, "
            f"{sum(gap > 0.01 for gap in gaps)} over 10 ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gzip_pages", description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="inflated size of the log")
    parser.add_argument("--pages", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        anyio.run(measure, Path(root), args.mib, args.pages)


if __name__ == "__main__":
    main()
