"""Concurrent lookups of one object: shared, never answered by a lookup sent before they came.

Unit tier: a lookup is a coroutine the test holds on an event, so every arrival's place
(before, during, after a lookup) is decided by the test, not by timing. The store tier:
S3 and GCS through the shaping proxy, which counts the requests that reached the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import fsspec
import httpx
import pytest

from streamer.config import Settings
from streamer.storage import Store
from streamer.storage.flights import Flights
from testkit.dataset import put
from testkit.emulators import BUCKET, ENDPOINTS, endpoint_options, fsspec_conf
from testkit.faulty import seed, serving_through
from testkit.servers import SECRET
from testkit.shaping import ShapingProxy

pytestmark = pytest.mark.anyio

HERD = 64


class Held:
    """Lookups that answer with the store's `state` as it was when they were sent, once
    released: a change made while one is in flight is not in its answer."""

    def __init__(self) -> None:
        self.state = "present"
        self.calls = 0
        self.release = anyio.Event()
        self.entered = anyio.Event()

    def lookup(self) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            self.calls += 1
            seen = self.state
            self.entered.set()
            await self.release.wait()
            return seen

        return run


async def test_a_herd_that_arrives_during_a_lookup_shares_the_next_one() -> None:
    flights: Flights[str, str] = Flights()
    held = Held()
    answers: list[str] = []

    async def call() -> None:
        answers.append(await flights.run("key", held.lookup()))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        await held.entered.wait()  # the first lookup is in flight
        for _ in range(HERD):
            tasks.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        held.state = "purged"  # changed before the herd's lookup is sent
        held.release.set()
    assert held.calls == 2
    assert flights.started == 2
    assert sorted(answers) == ["present"] + ["purged"] * HERD


async def test_a_lookup_sent_before_a_caller_arrived_never_answers_it() -> None:
    flights: Flights[str, str] = Flights()
    held = Held()
    late: list[str] = []

    async def first() -> None:
        await flights.run("key", held.lookup())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await held.entered.wait()
        held.state = "purged"  # the store changes; the lookup in flight may have missed it

        async def after() -> None:
            late.append(await flights.run("key", held.lookup()))

        tasks.start_soon(after)
        await anyio.wait_all_tasks_blocked()
        held.release.set()
    assert late == ["purged"]
    assert held.calls == 2


async def test_calls_one_after_another_each_ask_the_store() -> None:
    flights: Flights[str, int] = Flights()
    count = 0

    async def lookup() -> int:
        nonlocal count
        count += 1
        return count

    assert [await flights.run("key", lookup) for _ in range(3)] == [1, 2, 3]


async def test_keys_do_not_share_lookups() -> None:
    flights: Flights[str, str] = Flights()
    held = Held()
    answers: list[str] = []

    async def call(key: str) -> None:
        answers.append(await flights.run(key, held.lookup()))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call, "a")
        tasks.start_soon(call, "b")
        await anyio.wait_all_tasks_blocked()
        held.release.set()
    assert held.calls == 2


async def test_a_failed_lookup_fails_every_caller_that_shared_it() -> None:
    flights: Flights[str, str] = Flights()
    release = anyio.Event()
    failures: list[str] = []

    async def failing() -> str:
        await release.wait()
        raise OSError("the store answered HTTP 503")

    async def call() -> None:
        try:
            await flights.run("key", failing)
        except OSError as exc:
            failures.append(str(exc))

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert failures == ["the store answered HTTP 503"] * 3

    async def working() -> str:
        return "present"

    assert await flights.run("key", working) == "present"  # a failure is not remembered


async def test_a_cancelled_leader_leaves_the_others_a_lookup_of_their_own() -> None:
    flights: Flights[str, str] = Flights()
    held = Held()
    answers: list[str] = []

    async def follower() -> None:
        answers.append(await flights.run("key", held.lookup()))

    async with anyio.create_task_group() as tasks:
        with anyio.CancelScope() as leader:
            async with anyio.create_task_group() as lead:
                lead.start_soon(flights.run, "key", held.lookup())
                await held.entered.wait()
                tasks.start_soon(follower)
                tasks.start_soon(follower)
                await anyio.wait_all_tasks_blocked()
                leader.cancel()  # its client went away, mid-lookup
        await anyio.wait_all_tasks_blocked()
        assert held.calls == 2  # one of the followers leads the next lookup, both share it
        held.release.set()
    assert answers == ["present", "present"]


def rm(root: str, key: str) -> None:
    """Delete an object behind streamer's back, as a retention job would."""
    fs, path = fsspec.core.url_to_fs(f"{root}/{key}", skip_instance_cache=True)
    fs.rm_file(path)


@pytest.fixture(params=["s3", "gs", "az"])
def remote(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind: str = request.param
    endpoint: str = request.getfixturevalue(ENDPOINTS[kind])
    return kind, endpoint


async def test_a_herd_of_lookups_of_one_object_costs_the_store_two_requests(
    remote: tuple[str, str],
) -> None:
    """Every lookup in one turn of the loop: the first is one request, the rest its next."""
    kind, endpoint = remote
    root = f"{kind}://{BUCKET}/flights"
    key = "models/mdl-herd/runs/run-1/training.log"
    put(root, key, b"2026-03-13T10:00:00Z [INFO] one line\n")
    with ShapingProxy(endpoint) as proxy:
        with fsspec_conf(kind, **endpoint_options(kind, proxy.url)):
            store = Store.from_url(root, streams=HERD)
        try:
            await store.info(key)  # the client's session and credentials are set up
            proxy.reset_counters()
            sizes: list[int | None] = []

            async def look() -> None:
                info = await store.info(key)
                sizes.append(None if info is None else info.size)

            async with anyio.create_task_group() as tasks:
                for _ in range(HERD):
                    tasks.start_soon(look)
            assert sizes == [37] * HERD
            assert proxy.requests == 2
            assert store.lookups.started == 3
        finally:
            await store.aclose()


async def test_a_purge_is_seen_by_the_next_lookup(remote: tuple[str, str]) -> None:
    kind, endpoint = remote
    root = f"{kind}://{BUCKET}/flights-purge"
    key = "models/mdl-herd/runs/run-2/training.log"
    put(root, key, b"2026-03-13T10:00:00Z [INFO] one line\n")
    with fsspec_conf(kind, endpoint_url=endpoint):
        store = Store.from_url(root, streams=8)
    try:
        assert await store.info(key) is not None
        rm(root, key)
        assert await store.info(key) is None
    finally:
        await store.aclose()


def test_a_purge_between_two_downloads_is_seen_by_the_second(
    remote: tuple[str, str], token: str
) -> None:
    """With the catalog's metadata cached, the log itself is looked up for each request."""
    kind, endpoint = remote
    log = b"2026-03-13T10:00:00Z [INFO] one line\n"
    root = seed(kind, "flights-served", "mdl-herd", {"run-h1": ("training.log", log)})
    settings = Settings(storage_url=root, jwt_secret=SECRET, catalog_ttl_s=60)
    with serving_through(kind, endpoint, settings) as running:
        url = f"{running.url}/api/v1/models/mdl-herd/training-metrics/logs/download"
        headers = {"Authorization": f"Bearer {token}"}
        first = httpx.get(url, headers=headers, timeout=30)
        assert (first.status_code, first.content) == (200, log)
        rm(root, "models/mdl-herd/runs/run-h1/training.log")
        second = httpx.get(url, headers=headers, timeout=30)
        assert second.status_code == 404
        assert second.json()["code"] == "logs_purged"
