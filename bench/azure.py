"""Azure Blob (Azurite) at production-shaped latency and bandwidth: streamer beside one GET.

`python -m bench.azure --size 1GiB --repeat 3`

Azurite (in memory) holds one log of `size` bytes behind the shaping proxy (20 ms to the
first byte of each response, 80 MB/s per connection). In the same run:

- one streamed GET of the whole blob through the proxy (azure-core's aiohttp session, the
  body read as it comes): what one connection gives;
- streamer's storage layer reading the blob as a download does (`Store.reading`, parallel
  ranged GETs pinned by ETag), its MB/s and the ratio to the one GET (target >= 4x);
- a 16 KiB range read through the storage layer: the bytes and requests that reached the
  store (at the proxy; target < 1 MiB).

MB/s are 10^6 bytes per second; medians of `repeat` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import fsspec

from bench.shaping import size_arg
from streamer.storage import Store
from testkit.emulators import BUCKET, azure_options, azurite, fsspec_conf
from testkit.shaping import ShapingProxy

MiB = 1024 * 1024
KEY = "models/mdl-bench/runs/run-bench/training.log"
ROOT = f"az://{BUCKET}/bench"


def seed(endpoint: str, size: int) -> None:
    fs = fsspec.filesystem("az", skip_instance_cache=True, **azure_options(endpoint))
    fs.mkdir(BUCKET, exist_ok=True)
    block = (b"2026-03-13T10:00:00.000Z [INFO] step 0000001 loss=0.1234\n" * 20_000)[: 8 * MiB]
    with fs.open(f"{BUCKET}/bench/{KEY}", "wb", block_size=8 * MiB) as file:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            file.write(piece)
            left -= len(piece)


async def one_get(size: int) -> float:
    """The whole blob in one streamed GET through the proxy: MB/s."""
    fs = fsspec.filesystem("az", asynchronous=True, skip_instance_cache=True)
    container, blob, _ = fs.split_path(f"{BUCKET}/bench/{KEY}")
    client = fs.service_client.get_blob_client(container=container, blob=blob)
    try:
        start = time.perf_counter()
        response, _ = await client._client.blob.download(
            cls=lambda pipeline, *_: (pipeline.http_response, None)
        )
        body = response.internal_response
        got = 0
        while True:
            data, _end = await body.content.readchunk()
            if not data:
                break
            got += len(data)
        body.close()
        assert got == size, (got, size)
        return size / (time.perf_counter() - start) / 1e6
    finally:
        await fs.service_client.close()


async def parallel_gets(size: int, part: int = 16 * MiB, concurrency: int = 8) -> float:
    """The blob as ranged GETs of `part`, `concurrency` at once, bodies read and dropped:
    MB/s. Unshaped, this is the emulator's own ceiling for what streamer asks of it."""
    fs = fsspec.filesystem("az", asynchronous=True, skip_instance_cache=True)
    container, blob, _ = fs.split_path(f"{BUCKET}/bench/{KEY}")
    client = fs.service_client.get_blob_client(container=container, blob=blob)
    starts = iter(range(0, size, part))

    async def worker() -> None:
        for first in starts:
            response, _ = await client._client.blob.download(
                range=f"bytes={first}-{min(first + part, size) - 1}",
                cls=lambda pipeline, *_: (pipeline.http_response, None),
            )
            body = response.internal_response
            while (await body.content.readchunk())[0]:
                pass
            body.close()

    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return size / (time.perf_counter() - began) / 1e6
    finally:
        await fs.service_client.close()


async def store_read(size: int, start: int = 0, end: int | None = None) -> float:
    """[start, end) through streamer's storage layer, as a download reads it: MB/s."""
    store = Store.from_url(ROOT, streams=8)
    end = size if end is None else end
    try:
        began = time.perf_counter()
        got = 0
        async with store.reading(KEY, start, end, read_size=MiB) as reader:
            while data := await reader.read(MiB):
                got += len(data)
        assert got == end - start, (got, end - start)
        return got / (time.perf_counter() - began) / 1e6
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size_arg, default=size_arg("1GiB"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with azurite() as endpoint:
        seed(endpoint, args.size)
        with fsspec_conf("az", **azure_options(endpoint)):
            ceiling = [asyncio.run(parallel_gets(args.size)) for _ in range(args.repeat)]
        with ShapingProxy(endpoint) as proxy, fsspec_conf("az", **azure_options(proxy.url)):
            single = [asyncio.run(one_get(args.size)) for _ in range(args.repeat)]
            parallel = [asyncio.run(store_read(args.size)) for _ in range(args.repeat)]
            proxy.reset_counters()
            asyncio.run(
                store_read(args.size, 1000 * MiB % args.size, 1000 * MiB % args.size + 16384)
            )
            ranged: dict[str, Any] = {"requests": proxy.requests, "bytes": proxy.bytes_down}
    ratio = statistics.median(parallel) / statistics.median(single)
    size_mib = args.size / MiB
    print(f"Azure (Azurite) behind the shaping proxy, {size_mib:.0f} MiB, medians of {args.repeat}")
    print("| case | MB/s | runs |\n|---|---|---|")
    cases = (
        ("Azurite alone, unshaped: 16 MiB ranged GETs, 8 at once", ceiling),
        ("one streamed GET", single),
        ("streamer storage, parallel", parallel),
    )
    for name, runs in cases:
        shown = ", ".join(f"{run:.0f}" for run in runs)
        print(f"| {name} | {statistics.median(runs):.0f} | {shown} |")
    verdict = "pass" if ratio >= 4 else "fail"
    print(f"\nparallel / one GET: {ratio:.2f}x (target >= 4x): {verdict}")
    fine = "pass" if ranged["bytes"] < MiB else "fail"
    print(
        f"16 KiB range: {ranged['requests']} request(s), {ranged['bytes']} bytes from the store"
        f" (target < 1 MiB): {fine}"
    )


if __name__ == "__main__":
    main()
