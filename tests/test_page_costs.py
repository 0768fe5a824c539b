"""What a page costs the store: counted at the engine (memory, local) and on the wire (S3,
through the shaping proxy, unshaped, for its counters). A page reads about what it
returns, whatever the log's size."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from streamer.config import Settings
from streamer.cursors import Walk
from streamer.logs.plan import PagePlan
from streamer.logs.scan import BLOCK
from streamer.logs.seek import read_page
from streamer.storage import CachedReader, Store
from testkit.dataset import put_run
from testkit.emulators import BUCKET, fsspec_conf
from testkit.generated import LINE, put_generated, render, timestamp
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.shaping import ShapingProxy

PATH = "/api/v1/models/{}/training-metrics/logs"
GIB = 1 << 30


def plan(direction: str = "backward", **kwargs: object) -> PagePlan:
    return PagePlan(Walk("mdl-costs", None, direction, **kwargs), 100)  # type: ignore[arg-type]


def engine_page(
    store: Store, key: str, size: int, page_plan: PagePlan
) -> tuple[CachedReader, list[str]]:
    file = CachedReader(store, key, size)
    page = anyio.run(read_page, file, page_plan, True)
    return file, [line.message for line in page.lines]


@pytest.mark.parametrize("size", [1 << 20, 10 * GIB])
def test_the_last_page_of_a_generated_log_reads_one_block(size: int) -> None:
    log = put_generated("memory://costs", f"tail-{size}.log", size)
    store = Store.from_url("memory://costs")
    file, messages = engine_page(store, f"tail-{size}.log", log.size, plan())
    last = log.size // LINE - 1
    assert messages[-1].startswith(f"step {last} ") and len(messages) == 100
    assert (file.reads, file.bytes_read) == (1, BLOCK)


def test_a_since_page_of_a_10_gib_log_takes_at_most_64_reads() -> None:
    log = put_generated("memory://costs", "since.log", 10 * GIB)
    store = Store.from_url("memory://costs")
    for fraction in (0.0, 0.37, 0.5, 0.999):
        number = int(log.size // LINE * fraction)
        page_plan = plan("forward", since=timestamp(number))
        file, messages = engine_page(store, "since.log", log.size, page_plan)
        assert messages[0].startswith(f"step {number} ")
        assert file.reads <= 64 and file.bytes_read < 4 << 20


def test_local_pages_read_the_same_whatever_the_size(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path))
    counts = []
    for size in (1 << 20, 32 << 20):
        (tmp_path / f"{size}.log").write_bytes(render(0, size))
        file, messages = engine_page(store, f"{size}.log", size, plan())
        assert len(messages) == 100
        counts.append((file.reads, file.bytes_read))
    assert counts[0] == counts[1] == (1, BLOCK)


@pytest.fixture(scope="module")
def s3_costs(s3_endpoint: str) -> Iterator[tuple[Running, ShapingProxy]]:
    root = f"s3://{BUCKET}/costs"
    put_run(root, "mdl-small", "run-s", render(0, 1 << 20))
    put_run(root, "mdl-big", "run-b", render(0, 24 << 20))
    proxy = ShapingProxy(s3_endpoint, latency_s=0, bandwidth=math.inf)
    settings = Settings(storage_url=root, jwt_secret=SECRET, catalog_ttl_s=0)
    with fsspec_conf("s3", endpoint_url=proxy.url):
        servers = serve_in_thread(settings)
        running = next(servers)
    try:
        yield running, proxy
    finally:
        servers.close()
        proxy.close()


def test_on_s3_the_last_page_costs_the_same_for_any_size(
    s3_costs: tuple[Running, ShapingProxy], token: str
) -> None:
    running, proxy = s3_costs
    costs = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for model in ("mdl-small", "mdl-big"):
            proxy.reset_counters()
            response = client.get(running.url + PATH.format(model))
            assert response.status_code == 200 and len(response.json()["data"]) == 100
            costs.append((proxy.requests, proxy.bytes_down))
    (small_requests, small_bytes), (big_requests, big_bytes) = costs
    # model.json, run.json, the object's metadata, one ranged GET of its last block.
    assert small_requests == big_requests <= 5
    assert big_bytes < 1 << 20 and abs(big_bytes - small_bytes) < 1024


def test_on_s3_a_since_page_takes_at_most_64_requests(
    s3_costs: tuple[Running, ShapingProxy], token: str
) -> None:
    running, proxy = s3_costs
    number = (24 << 20) // LINE // 3
    proxy.reset_counters()
    response = httpx.get(
        running.url + PATH.format("mdl-big"),
        params={"since": timestamp(number), "direction": "forward", "limit": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.json()["data"][0]["offset"] == number * LINE
    assert proxy.requests <= 64 and proxy.bytes_down < 4 << 20
