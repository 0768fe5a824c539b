"""The catalog of a model with many runs on S3 (moto behind the shaping proxy).

    python -m bench.catalog_s3 [--runs 2000] [--ttl 5] [--duration 90] [--rate 10] [--json]

The store is moto, reached through testkit.shaping.ShapingProxy at its defaults (a first-byte
latency per request and a bandwidth cap per connection, like S3 in-region); every request
of the catalog is counted at the proxy. Each run has a run.json and a small training.log.

- cold: a new Store and Catalog resolve the default run: one listing (a page per 1,000
  keys), one read per run.json, the model.json and one HEAD of the log; the requests
  counted at the proxy against that budget. Each of the two phases below starts with one;
  the median of the two is reported.
- steady: a started Catalog with `--ttl` (streamer's default STREAMER_CATALOG_TTL_S unless
  given) answers a default-run resolution every
  1/`--rate` s for `--duration` s (requests start on schedule, whatever the previous ones
  take), so the metadata expires many times. The rate is kept within what moto serves on
  a busy 2-core machine (about 30 requests/s, each resolution being one HEAD): above it,
  the queue at moto is what the figures show. Meanwhile every `--change-every` s (2.5 TTLs
  unless given: a change is due within 2 TTLs, so it is never overtaken by the next one
  before it is due) a run.json is rewritten to make another run the default (straight to
  moto, not through the proxy); the time until a resolution first returns it is "change
  seen after".
- baseline: the same schedule against a catalog that re-reads every run.json on each
  expiry while the request waits (what the catalog did before stale-while-revalidate and
  versioned listings), for a third of `--duration`.
- loop lag: during both phases a ticker on the event loop sleeps 5 ms at a time and
  records how late it wakes: the time the loop was blocked (by parsing, say), which every
  resolution in flight waits out.
- the store's ceilings, with boto3 straight through the proxy (no streamer): a HEAD alone,
  the listing of the runs alone, and a HEAD while that listing runs at the store.

The resolutions run in this process, without HTTP: what is measured is the catalog.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import statistics
import sys
import time
from typing import Any, cast

import anyio
import fsspec
import orjson

from streamer.allocator import freeze_startup_objects
from streamer.catalog import Catalog
from streamer.config import Settings
from streamer.storage import Backend, Store
from streamer.storage.listing import list_s3
from streamer.storage.s3 import S3Backend
from testkit.emulators import BUCKET, fsspec_conf, make_bucket, moto_server, s3_options

MODEL = "mdl-many"
ORG = "org-acme"
ROOT = f"{BUCKET}/catalog"


def completed_at(i: int) -> str:
    """Seeded runs finish on 2026-03-01, many at the same minute (ties: greatest run_id)."""
    return f"2026-03-01T{10 + (i // 60) % 12:02d}:{i % 60:02d}:00Z"


def run_json(run_id: str, stamp: str) -> bytes:
    return orjson.dumps({"run_id": run_id, "status": "completed", "completed_at": stamp})


def seed(endpoint: str, runs: int) -> str:
    """`runs` completed runs with their logs, written straight to moto; the default's id."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_options(endpoint))
    files = {f"{ROOT}/models/{MODEL}/model.json": orjson.dumps({"organization_id": ORG})}
    stamps = {}
    for i in range(runs):
        run_id = f"run-{i:05d}"
        stamps[run_id] = completed_at(i)
        folder = f"{ROOT}/models/{MODEL}/runs/{run_id}"
        files[f"{folder}/run.json"] = run_json(run_id, stamps[run_id])
        files[f"{folder}/training.log"] = b"x\n"
    fs.pipe(files)
    return max(stamps, key=lambda run_id: (stamps[run_id], run_id))


class Unversioned:
    """A backend whose listings give no versions, so that every refresh reads every
    run.json; every other call goes to `inner` as it is."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_versions(self, prefix: str) -> dict[str, str | None]:
        return dict.fromkeys(await self.inner.list_versions(prefix))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latencies(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_s": quantile(values, 0.5),
        "p99_s": quantile(values, 0.99),
        "max_s": max(values),
    }


class LoopLag:
    """How late a 5 ms sleep on the event loop wakes: the loop's blocked time. Beside it,
    the garbage collector's pauses meanwhile (they stop every thread of the process)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0

    def __enter__(self) -> LoopLag:
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await anyio.sleep(0.005)
            self.lags.append(max(0.0, time.perf_counter() - started - 0.005))

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": quantile(self.lags, 0.5) * 1e3,
            "p99_ms": quantile(self.lags, 0.99) * 1e3,
            "max_ms": max(self.lags) * 1e3,
            "gc_pauses": len(self.gc_pauses),
            "gc_max_ms": max(self.gc_pauses, default=0.0) * 1e3,
        }


def ceilings(url: str, bucket: str, prefix: str) -> dict[str, Any]:
    """What the store behind the proxy takes, with boto3 (no streamer): a HEAD alone, the
    paginated listing of `prefix` alone, and HEADs while that listing runs."""
    import threading

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    key = f"{prefix}run-00000/run.json"

    def head() -> float:
        started = time.perf_counter()
        client.head_object(Bucket=bucket, Key=key)
        return time.perf_counter() - started

    def listing() -> float:
        started = time.perf_counter()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for _ in pages:
            pass
        return time.perf_counter() - started

    head()  # the connection is open
    alone = [head() for _ in range(20)]
    listings = [listing() for _ in range(2)]
    during: list[float] = []
    done = threading.Event()

    def list_once() -> None:
        listings.append(listing())
        done.set()

    lister = threading.Thread(target=list_once)
    lister.start()
    while not done.is_set():
        during.append(head())
    lister.join()
    return {
        "head_alone_s": statistics.median(alone),
        "listing_s": statistics.median(listings),
        "head_during_listing_s": statistics.median(during) if during else math.nan,
        "head_during_listing_max_s": max(during, default=math.nan),
        "heads_during_listing": len(during),
    }


async def listing_lag(store: Store) -> dict[str, dict[str, float]]:
    """The loop's lag while the runs are listed as the catalog lists them (off the loop),
    and while the same listing runs on the loop through the store's own client (as it did
    before), alternately, twice each; the worse of each pair of runs."""
    backend = store.backend
    assert isinstance(backend, S3Backend)
    bucket, prefix = backend.bucket, f"{backend.prefix}models/{MODEL}/runs/"
    found: dict[str, list[dict[str, float]]] = {"off the loop": [], "on the loop": []}
    for _ in range(2):
        for how in found:
            lag = LoopLag()
            with lag:
                async with anyio.create_task_group() as ticker:
                    ticker.start_soon(lag.run)
                    if how == "off the loop":
                        await store.list_versions(f"models/{MODEL}/runs/")
                    else:
                        await list_s3(backend.fs, bucket, prefix)
                    ticker.cancel_scope.cancel()
            found[how].append(lag.summary())
    return {how: max(runs, key=lambda r: r["max_ms"]) for how, runs in found.items()}


def page_parse(repeat: int = 5) -> dict[str, float]:
    """botocore's CPU time to parse one ListObjectsV2 page of 1,000 keys, with its default
    timestamp parser and with timestamps left as strings (as the catalog's listing does);
    the medians of `repeat`, alternately."""
    import botocore.parsers
    import botocore.session

    shape = botocore.session.get_session().get_service_model("s3")
    output = shape.operation_model("ListObjectsV2").output_shape
    contents = "".join(
        f"<Contents><Key>catalog/models/{MODEL}/runs/run-{i:05d}/run.json</Key>"
        "<LastModified>2026-11-28T21:00:00.000Z</LastModified>"
        "<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>80</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for i in range(1000)
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult'
        ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>1000'
        "</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
        f"<NextContinuationToken>t</NextContinuationToken>{contents}</ListBucketResult>"
    ).encode()
    times: dict[str, list[float]] = {"timestamps_parsed_s": [], "timestamps_unparsed_s": []}
    for _ in range(repeat):
        for name in times:
            factory = botocore.parsers.ResponseParserFactory()
            if name == "timestamps_unparsed_s":
                factory.set_parser_defaults(timestamp_parser=str)
            parser = factory.create_parser("rest-xml")
            started = time.process_time()
            parser.parse({"status_code": 200, "headers": {}, "body": body}, output)
            times[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in times.items()}


async def steady(
    url: str,
    endpoint: str,
    proxy: Any,
    *,
    ttl_s: float,
    duration_s: float,
    rate: float,
    change_every_s: float,
    baseline: bool,
    freeze: bool = True,
) -> dict[str, Any]:
    """Default-run resolutions on a schedule; rewrites of run.json on another (not for the
    baseline); returns the latencies and how long each change took to be seen."""
    store = Store.from_url(url)
    if baseline:
        store = Store(cast(Backend, Unversioned(store.backend)))
    writer = fsspec.filesystem("s3", skip_instance_cache=True, **s3_options(endpoint))
    catalog = Catalog(store, ttl_s=ttl_s)
    took: list[float] = []
    changes: list[tuple[str, float]] = []  # (run that became the default, when it was written)
    seen: list[float] = []
    overtaken = 0  # changes replaced by a later one before they were seen
    lag = LoopLag()

    async def one() -> None:
        nonlocal overtaken
        started = time.perf_counter()
        run_id = (await catalog.resolve(MODEL, ORG, None)).run.run_id
        ended = time.perf_counter()
        took.append(ended - started)
        for index, (changed, written) in enumerate(changes):
            if changed == run_id:  # seen; any earlier change was overtaken unseen
                seen.append(ended - written)
                overtaken += index
                del changes[: index + 1]
                break

    async def change(n: int) -> None:
        # Run n becomes the latest completed run (one day later than the one before).
        run_id = f"run-{n:05d}"
        data = run_json(run_id, f"2027-{1 + n // 28:02d}-{1 + n % 28:02d}T00:00:00Z")
        path = f"{ROOT}/models/{MODEL}/runs/{run_id}/run.json"
        await anyio.to_thread.run_sync(writer.pipe_file, path, data)
        changes.append((run_id, time.perf_counter()))

    try:
        proxy.reset_counters()
        started = time.perf_counter()
        await catalog.resolve(MODEL, ORG, None)  # the model is seen once, cold
        cold = {"seconds": time.perf_counter() - started, "requests": proxy.requests}
        # What the store itself takes, alone: a HEAD (each resolution makes one) and the
        # listing a refresh makes.
        heads = []
        for _ in range(5):
            started = time.perf_counter()
            await store.info(f"models/{MODEL}/model.json")
            heads.append(time.perf_counter() - started)
        started = time.perf_counter()
        await store.list_versions(f"models/{MODEL}/runs/")
        alone: dict[str, Any] = {
            "head_s": statistics.median(heads),
            "listing_s": time.perf_counter() - started,
        }
        if not baseline:
            alone["listing_loop_lag"] = await listing_lag(store)
        if freeze:  # as `streamer serve` does once started (streamer.allocator)
            alone["frozen_objects"] = freeze_startup_objects()
        async with contextlib.AsyncExitStack() as running:
            if not baseline:
                await running.enter_async_context(catalog)
            running.enter_context(lag)
            ticker = await running.enter_async_context(anyio.create_task_group())
            ticker.start_soon(lag.run)
            async with anyio.create_task_group() as group:
                start = time.perf_counter()
                next_change, n = change_every_s, 0
                for tick in range(int(duration_s * rate)):
                    at = start + tick / rate
                    await anyio.sleep(max(0.0, at - time.perf_counter()))
                    group.start_soon(one)
                    # No change in the last 3 TTLs: each one has the time to be seen.
                    if not baseline and next_change <= at - start <= duration_s - 3 * ttl_s:
                        group.start_soon(change, n)
                        next_change += change_every_s
                        n += 1
            ticker.cancel_scope.cancel()
        result: dict[str, Any] = latencies(took)
        result["loop_lag"] = lag.summary()
        result["change_seen_s"] = seen
        result["changes_unseen"] = len(changes) + overtaken
        result["refresh_failures"] = catalog.refresh_failures
        result["cold"] = cold
        result["alone"] = alone
        return result
    finally:
        await store.aclose()


def measure(
    runs: int,
    ttl_s: float,
    duration_s: float,
    rate: float,
    change_every_s: float,
    freeze: bool = True,
) -> dict[str, Any]:
    from testkit.shaping import ShapingProxy

    with moto_server() as endpoint, ShapingProxy(endpoint) as proxy:
        make_bucket("s3", **s3_options(endpoint))
        started = time.perf_counter()
        default = seed(endpoint, runs)
        print(f"seeded {runs} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        url = f"s3://{ROOT}"
        bucket, _, root = ROOT.partition("/")
        store_alone = ceilings(proxy.url, bucket, f"{root}/models/{MODEL}/runs/")
        store_alone["page_parse"] = page_parse()
        print(f"store alone: {store_alone}", file=sys.stderr)
        with fsspec_conf("s3", **s3_options(proxy.url)):
            common: dict[str, Any] = {
                "ttl_s": ttl_s,
                "rate": rate,
                "change_every_s": change_every_s,
            }
            ours = asyncio.run(
                steady(
                    url,
                    endpoint,
                    proxy,
                    duration_s=duration_s,
                    baseline=False,
                    freeze=freeze,
                    **common,
                )
            )
            print(f"steady: p99 {ours['p99_s'] * 1e3:.1f} ms", file=sys.stderr)
            before = asyncio.run(
                steady(url, endpoint, proxy, duration_s=duration_s / 3, baseline=True, **common)
            )
            print(f"baseline: p99 {before['p99_s'] * 1e3:.1f} ms", file=sys.stderr)
        colds = [ours.pop("cold"), before.pop("cold")]
        print(f"cold: {[round(c['seconds'], 2) for c in colds]} s", file=sys.stderr)
        keys = 2 * runs
        return {
            "runs": runs,
            "keys_below_runs": keys,
            "default": default,
            "proxy": {"latency_s": proxy.latency_s, "bandwidth": proxy.bandwidth},
            "ttl_s": ttl_s,
            "rate_per_s": rate,
            "duration_s": duration_s,
            "change_every_s": change_every_s,
            "cold": {
                "seconds": statistics.median(c["seconds"] for c in colds),
                "requests": statistics.median(c["requests"] for c in colds),
                # model.json + listing pages + one GET per run.json + the log's HEAD
                "budget": 1 + math.ceil(keys / 1000) + runs + 1,
                "repeat": len(colds),
            },
            "store": store_alone,
            "steady": ours,
            "baseline": before,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    ttl = Settings().catalog_ttl_s
    parser.add_argument("--ttl", type=float, default=ttl, help="STREAMER_CATALOG_TTL_S")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of resolutions")
    parser.add_argument("--rate", type=float, default=10.0, help="resolutions per second")
    parser.add_argument("--change-every", type=float, help="seconds (default: 2.5 TTLs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave start-up objects to the collector"
    )
    args = parser.parse_args()
    change_every = args.change_every or 2.5 * args.ttl
    result = measure(
        args.runs, args.ttl, args.duration, args.rate, change_every, freeze=not args.no_freeze
    )
    if args.json:
        print(orjson.dumps(result).decode())
        return
    c, s, b = result["cold"], result["steady"], result["baseline"]
    print(f"cold: {c['seconds']:.2f} s, {c['requests']:.0f} requests (budget {c['budget']})")
    for name, r in (("stale-while-revalidate", s), ("baseline", b)):
        print(
            f"{name}: p50 {r['p50_s'] * 1e3:.1f} ms, p99 {r['p99_s'] * 1e3:.1f} ms,"
            f" max {r['max_s'] * 1e3:.1f} ms over {r['count']} resolutions"
        )
    print(f"changes seen after (s): {[round(x, 3) for x in s['change_seen_s']]}")
    for name, r in (("stale-while-revalidate", s), ("baseline", b)):
        lag = r["loop_lag"]
        print(
            f"{name}: loop lag p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms,"
            f" max {lag['max_ms']:.1f} ms; garbage collector: {lag['gc_pauses']} pauses, the"
            f" longest {lag['gc_max_ms']:.1f} ms"
        )
    for how, lag in s["alone"]["listing_loop_lag"].items():
        print(
            f"loop lag while listing {how}: p99 {lag['p99_ms']:.1f} ms, max {lag['max_ms']:.1f} ms"
            f" (garbage collector's longest pause {lag['gc_max_ms']:.1f} ms)"
        )
    st = result["store"]
    parse = st["page_parse"]
    print(
        f"botocore parsing a page of 1,000 keys: {parse['timestamps_parsed_s'] * 1e3:.0f} ms of"
        f" CPU, {parse['timestamps_unparsed_s'] * 1e3:.0f} ms with timestamps unparsed"
    )
    print(
        f"store alone (boto3): HEAD {st['head_alone_s'] * 1e3:.1f} ms, listing"
        f" {st['listing_s']:.2f} s, HEAD during the listing"
        f" {st['head_during_listing_s'] * 1e3:.1f} ms (max"
        f" {st['head_during_listing_max_s'] * 1e3:.1f} ms, {st['heads_during_listing']} HEADs)"
    )


if __name__ == "__main__":
    main()
