"""The memory budget: the limit found, the plan, reservations, and the 503 over a socket."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from streamer.budget import (
    MARGIN,
    Budget,
    BudgetTooSmall,
    cgroup_limit,
    plan,
    plan_process,
    process_limit,
    resident_bytes,
    stream_bytes,
)
from streamer.catalog import LogObject, Run
from streamer.config import Settings
from streamer.cursors import Walk
from streamer.errors import Overloaded
from streamer.logs.inflated import INFLATE_BYTES
from streamer.logs.plan import PagePlan
from streamer.logs.source import page_bytes
from streamer.ops import StreamSlots
from streamer.storage import ObjectInfo
from testkit.fakes import SpyBackend
from testkit.servers import SECRET, Running, TokenFactory, run_cli, serve_in_thread
from testkit.wire import assert_problem

MiB = 1024 * 1024
PATH = "/api/v1/models/mdl-alpha/training-metrics/logs/download"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "536870912\n"}, 512 * MiB),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "201326592\n"}, 192 * MiB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "none"
        ({}, None),
    ],
)
def test_the_cgroup_limit_is_found(tmp_path: Path, files: dict[str, str], expected: int) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_limit(tmp_path) == expected


def test_a_configured_limit_wins_and_workers_share_what_their_supervisor_leaves() -> None:
    assert process_limit(512 * MiB) == 512 * MiB
    assert process_limit(512 * MiB, workers=1, supervisor=50 * MiB) == 512 * MiB
    # 50 MiB of supervisor, 16 MiB of resource tracker.
    assert process_limit(512 * MiB, workers=2, supervisor=50 * MiB) == 223 * MiB


def test_resident_bytes_are_measured() -> None:
    assert resident_bytes() > 10 * MiB
    assert resident_bytes(os.getpid()) > 10 * MiB


def test_a_stream_reserves_its_chunks_and_its_coding() -> None:
    assert stream_bytes(MiB, 4) == 4 * MiB
    assert stream_bytes(MiB, 4, encode=True) == 6 * MiB
    assert stream_bytes(MiB, 4, deflate=True) > 4 * MiB
    assert stream_bytes(MiB, 4, inflate=True) > 5 * MiB


def test_the_plan_divides_the_limit() -> None:
    planned = plan(320 * MiB, 96 * MiB, 256 * MiB, 4 * MiB)
    assert planned.read_ahead == (320 - 96 - 32 - 4) * MiB // 2
    assert planned.requests == 320 * MiB - 96 * MiB - MARGIN - planned.read_ahead
    assert planned.requests >= 4 * MiB
    # A small read-ahead setting is kept as it is.
    assert plan(1024 * MiB, 96 * MiB, 16 * MiB, 4 * MiB).read_ahead == 16 * MiB
    unlimited = plan(None, 96 * MiB, 256 * MiB, 4 * MiB)
    assert (unlimited.requests, unlimited.read_ahead) == (None, 256 * MiB)


def test_a_limit_without_room_for_one_stream_is_refused() -> None:
    assert plan(132 * MiB, 96 * MiB, 256 * MiB, 4 * MiB).requests == 4 * MiB  # exactly one
    with pytest.raises(BudgetTooSmall, match=r"STREAMER_MEMORY_LIMIT: 131 MiB .* 132 MiB"):
        plan(131 * MiB, 96 * MiB, 256 * MiB, 4 * MiB)


def test_a_process_plans_read_ahead_only_where_parallel_reads_run() -> None:
    settings = Settings(memory_limit=4096 * MiB, readahead_bytes=128 * MiB)
    assert plan_process(settings, True).read_ahead == 128 * MiB
    assert plan_process(settings, True).read_ahead == 128 * MiB
    assert plan_process(settings, False).read_ahead == 0  # a local folder
    local = plan_process(settings, False)
    assert local.read_ahead == 0
    assert local.requests == 4096 * MiB - local.idle - MARGIN
    unset = plan_process(replace(settings, memory_limit=None), True)
    assert (unset.limit is None) == (cgroup_limit() is None)  # the machine's own, if any


def test_reservations_that_do_not_fit_are_overloaded() -> None:
    budget = Budget(10 * MiB, retry_after_s=2)
    with budget.reserve(6 * MiB):
        assert budget.free == 4 * MiB
        with pytest.raises(Overloaded) as refused:
            with budget.reserve(5 * MiB):
                pass  # pragma: no cover
        assert refused.value.headers["Retry-After"] == "2"
        assert budget.used == 6 * MiB  # a refusal holds nothing
        with budget.reserve(4 * MiB):
            assert budget.free == 0
    assert budget.used == 0
    unlimited = Budget()
    with unlimited.reserve(1 << 50):
        assert unlimited.used == 1 << 50 and unlimited.free is None


def test_a_slot_holds_its_bytes_and_a_refusal_holds_no_slot() -> None:
    slots = StreamSlots(4, Budget(8 * MiB))
    with slots.take(4 * MiB), slots.take(4 * MiB):
        assert (slots.active, slots.budget.used) == (2, 8 * MiB)
        with pytest.raises(Overloaded):
            with slots.take(1):
                pass  # pragma: no cover
        assert slots.active == 2
        with slots.take(0):  # HEAD holds no bytes
            assert slots.active == 3
    assert (slots.active, slots.budget.used) == (0, 0)


@pytest.fixture
def limited(base_settings: Settings) -> Iterator[Running]:
    """A server whose limit leaves a few streams beside this process's RSS."""
    limit = resident_bytes() + MARGIN + 256 * MiB
    yield from serve_in_thread(replace(base_settings, memory_limit=limit))


def test_a_download_beyond_the_budget_is_503_and_one_within_it_is_served(
    limited: Running, make_token: TokenFactory
) -> None:
    budget = limited.app.budget
    assert budget.total is not None
    assert limited.app.store.read_ahead.limit <= budget.total  # the ceiling fits inside
    headers = {"Authorization": f"Bearer {make_token()}"}
    free = budget.free or 0
    with budget.reserve(free - stream_bytes(MiB, 4) + 1):  # a scan holds the rest
        for fmt in ("txt", "json"):
            response = httpx.get(limited.url + PATH, params={"format": fmt}, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["code"] == "overloaded"
        head = httpx.head(limited.url + PATH, headers=headers)
        assert head.status_code == 200  # no body, no bytes
    response = httpx.get(limited.url + PATH, headers=headers)
    assert response.status_code == 200
    assert response.content
    assert budget.used == 0


def test_a_running_download_holds_its_bytes_and_finishes_while_others_are_refused(
    big_store: tuple[str, bytes],
    settings_server: Callable[..., Running],
    make_token: TokenFactory,
) -> None:
    root, log = big_store
    limit = resident_bytes() + MARGIN + 256 * MiB
    running = settings_server(
        Settings(storage_url=root, jwt_secret=SECRET, catalog_ttl_s=0), memory_limit=limit
    )
    budget, one = running.app.budget, stream_bytes(MiB, 4)
    url = running.url + "/api/v1/models/mdl-big/training-metrics/logs/download"
    headers = {"Authorization": f"Bearer {make_token()}"}
    with (
        budget.reserve((budget.free or 0) - one - one // 2),  # room for one stream and a half
        httpx.stream("GET", url, headers=headers, timeout=60) as first,
    ):
        assert first.status_code == 200
        body = first.iter_bytes()
        got = bytearray(next(body))  # it runs: its client reads no further for now
        refused = httpx.get(url, headers=headers, timeout=60)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "overloaded"
        for chunk in body:
            got += chunk
    assert got == log  # the running download never failed for it


def test_serve_refuses_a_limit_below_the_idle_process(local_store: str) -> None:
    env = {
        "STREAMER_STORAGE_URL": local_store,
        "STREAMER_JWT_SECRET": SECRET,
        "STREAMER_MEMORY_LIMIT": "40Mi",
    }
    result = run_cli("serve", "--port", "0", env=env)  # any free port: never the default's
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamer: STREAMER_MEMORY_LIMIT: 40 MiB is below the")


def log_object(key: str, size: int | None, gzip: bool = False) -> LogObject:
    run = Run("run-1", "completed", None, None, None)
    return LogObject("mdl-x", run, key, gzip, ObjectInfo(size, "v1", datetime.now(UTC)))


def test_a_get_logs_page_reserves_its_reads_its_scan_and_its_inflation() -> None:
    def page(limit: int, filtered: bool = False) -> PagePlan:
        return PagePlan(
            Walk("mdl-x", "run-1", "backward", levels=("X",) if filtered else None), limit
        )

    big, small = log_object("a.log", 1 << 40), log_object("b.log", 1000)
    gz = log_object("c.log.gz", 1000, gzip=True)
    # A plain page's reads grow with `limit`, and stay bounded whatever the log's size.
    assert page_bytes(page(1), big) < page_bytes(page(1000), big) <= 32 * MiB
    # A scan holds blocks beside the page's lines; inflating holds zlib's buffers too.
    for asked in (page(1), page(1000)):
        assert page_bytes(asked, big) + 8 * MiB <= page_bytes(
            replace(asked, walk=page(1, True).walk), big
        )
        assert page_bytes(asked, gz) == page_bytes(asked, big) + INFLATE_BYTES
    # A small plain log: no page holds more than a few copies of it.
    assert page_bytes(page(1000, True), small) <= 20 * 1000


@pytest.fixture
def limited_spy(base_settings: Settings, local_store: str) -> Iterator[tuple[Running, SpyBackend]]:
    """A limited server whose store records every log it opens."""
    spy = SpyBackend(local_store)
    limit = resident_bytes() + MARGIN + 256 * MiB
    servers = serve_in_thread(replace(base_settings, memory_limit=limit), store=spy.store)
    yield next(servers), spy
    servers.close()


def test_get_logs_pages_beyond_the_budget_are_503_before_reading(
    limited_spy: tuple[Running, SpyBackend], local_store: str, make_token: TokenFactory
) -> None:
    running, spy = limited_spy
    budget, copies = running.app.budget, running.app.logs.copies
    url = running.url + "/api/v1/models/mdl-alpha/training-metrics/logs"
    headers = {"Authorization": f"Bearer {make_token()}"}
    key = "models/mdl-alpha/runs/run-a1/training.log"
    plain = page_bytes(
        PagePlan(Walk("mdl-alpha", "run-a1", "backward"), 100),
        log_object(key, Path(local_store, key).stat().st_size),
    )
    pages = [{"run_id": "run-a1", "level": "ERROR"}, {"run_id": "run-gz", "limit": "10"}]
    with budget.reserve((budget.free or 0) - plain):  # room for a plain page of run-a1 alone
        for params in pages:
            refused = httpx.get(url, params=params, headers=headers)
            assert_problem(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "1"
        assert [key for key, _, _ in spy.opens if "/training.log" in key] == []  # nothing read
        assert copies.inflations == 0
        served = httpx.get(url, params={"run_id": "run-a1"}, headers=headers)
        assert served.status_code == 200 and served.json()["data"]
    for params in pages:
        assert httpx.get(url, params=params, headers=headers).status_code == 200
    assert copies.inflations == 1
    assert budget.used == 0  # every page gave its bytes back
