"""Default-run resolution of a model with many runs on S3 (moto), cold and warm.

    python -m bench.catalog_s3 [--runs 2000] [--repeat 3]

Cold: a new Store and Catalog (empty cache), so the runs are listed and every run.json is
read (64 concurrent reads). Warm: the same catalog again within its TTL (only the log
object's existence is checked). Reported as medians, with aiobotocore's default connection
pool (10) and with a pool of 64 (`FSSPEC_S3='{"config_kwargs": {"max_pool_connections": 64}}'`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import fsspec
import orjson

from streamer.catalog import Catalog
from streamer.storage import Store
from tests.emulators import BUCKET, fsspec_conf, make_bucket, moto_server, s3_options

MODEL = "mdl-many"
ORG = "org-acme"


def seed(root: str, runs: int) -> str:
    """`runs` completed runs; returns the id of the latest one (the default)."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    files: dict[str, bytes] = {
        f"{root}/models/{MODEL}/model.json": orjson.dumps({"organization_id": ORG}),
    }
    latest = ""
    for i in range(runs):
        run_id = f"run-{i:05d}"
        minute, hour = i % 60, 10 + (i // 60) % 12
        document = {
            "run_id": run_id,
            "status": "completed",
            "completed_at": f"2026-03-{1 + i // 720:02d}T{hour:02d}:{minute:02d}:00Z",
        }
        files[f"{root}/models/{MODEL}/runs/{run_id}/run.json"] = orjson.dumps(document)
        latest = max(latest, document["completed_at"] + run_id)
    default = latest[len("2026-03-01T00:00:00Z") :]
    files[f"{root}/models/{MODEL}/runs/{default}/training.log"] = b"x\n"
    fs.pipe(files)
    return default


async def sequential_get_ms(url: str, count: int = 50) -> float:
    """The time of one run.json GET when they are made one after another."""
    store = Store.from_url(url)
    names = await store.list_dir(f"models/{MODEL}/runs")
    started = time.perf_counter()
    for name in names[:count]:
        await store.read_bytes(f"models/{MODEL}/runs/{name}/run.json")
    elapsed = time.perf_counter() - started
    await store.aclose()
    return elapsed / min(count, len(names)) * 1000


async def measure(url: str, repeat: int) -> tuple[list[float], list[float], str]:
    cold, warm, run_id = [], [], ""
    for _ in range(repeat):
        store = Store.from_url(url)
        catalog = Catalog(store, ttl_s=60)
        started = time.perf_counter()
        log = await catalog.resolve(MODEL, ORG, None)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        await catalog.resolve(MODEL, ORG, None)
        warm.append(time.perf_counter() - started)
        run_id = log.run.run_id
        await store.aclose()
    return cold, warm, run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with moto_server() as endpoint, fsspec_conf("s3", **s3_options(endpoint)):
        make_bucket("s3")
        url = f"s3://{BUCKET}/catalog"
        started = time.perf_counter()
        default = seed(url, args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - started:.1f} s")
        one = asyncio.run(sequential_get_ms(url))
        print(
            f"one run.json GET, sequential: {one:.1f} ms "
            f"(so {args.runs} sequential GETs would take about {one * args.runs / 1000:.1f} s)"
        )
        pools: list[tuple[str, dict[str, Any]]] = [
            ("default pool (10)", {}),
            ("pool 64", {"config_kwargs": {"max_pool_connections": 64}}),
        ]
        print(f"| runs | client | cold ms (median of {args.repeat}) | warm ms |")
        print("|---|---|---|---|")
        for name, options in pools:
            with fsspec_conf("s3", **options):
                cold, warm, run_id = asyncio.run(measure(url, args.repeat))
            assert run_id == default, (run_id, default)
            print(
                f"| {args.runs} | {name} | {statistics.median(cold) * 1000:.0f} "
                f"| {statistics.median(warm) * 1000:.1f} |"
            )


if __name__ == "__main__":
    main()
