"""Get Logs with wait=N, and the one poller per followed run that follows and waits share:
SPEC section 9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
from anyio import wait_all_tasks_blocked

from streamer.errors import InvalidQuery
from streamer.follow.wait import MAX_WAIT_S, parse_wait
from streamer.follow.watch import Snapshot, Watch
from streamer.observe.probes import OPENAPI_DOCUMENT
from streamer.plan import parse_query
from testkit.following import (
    GUARD_S,
    LINES,
    STORES,
    SignallingWatches,
    Writer,
    get_page,
    settings,
    store_root,
)
from testkit.servers import Running, serve_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORES)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_root(request, tmp_path)


@pytest.fixture
def server(root: str) -> Iterator[Running]:
    yield from serve_in_thread(settings(root))


async def test_the_followers_of_a_run_share_each_poll() -> None:
    watch, calls, release = Watch(0.0), [], anyio.Event()

    async def poll() -> Snapshot:
        calls.append(anyio.get_current_task().id)
        await release.wait()
        return Snapshot(anyio.current_time())

    seen, got = anyio.current_time(), []

    async def follower() -> None:
        got.append(await watch.after(seen, poll))

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(follower)
            await wait_all_tasks_blocked()
            assert len(calls) == 1
            release.set()
    assert len(calls) == 1 and len(got) == 10 and all(snap is got[0] for snap in got)


async def test_a_follower_that_leaves_mid_poll_hands_the_poll_on() -> None:
    watch, calls, release = Watch(0.0), [], anyio.Event()
    scopes: dict[int, anyio.CancelScope] = {}

    async def poll() -> Snapshot:
        calls.append(anyio.get_current_task().id)
        await release.wait()
        return Snapshot(anyio.current_time())

    seen, got = anyio.current_time(), []

    async def follower() -> None:
        with anyio.CancelScope() as scope:
            scopes[anyio.get_current_task().id] = scope
            got.append(await watch.after(seen, poll))

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tasks:
            for _ in range(3):
                tasks.start_soon(follower)
            await wait_all_tasks_blocked()
            scopes[calls[0]].cancel()
            await wait_all_tasks_blocked()
            assert len(calls) == 2 and calls[1] != calls[0]
            release.set()
    assert len(got) == 2 and got[0] is got[1]


async def test_wait_answers_as_soon_as_lines_arrive(server: Running, root: str, token: str) -> None:
    writer = Writer(root).start(LINES[0])
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        first = (await get_page(client, server, writer, token)).json()
        assert [entry["offset"] for entry in first["data"]] == [0]
        answers: list[httpx.Response] = []

        async def held() -> None:
            cursor = first["next_cursor"]
            answers.append(await get_page(client, server, writer, token, cursor=cursor, wait="60"))

        watches = server.app.watches = SignallingWatches(server.app.watches.interval_s)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(held)
            assert await anyio.to_thread.run_sync(watches.taken.wait, GUARD_S)  # held
            assert not answers
            writer.append(LINES[1][:9])  # not a whole line yet: still held
            writer.append(LINES[1][9:])
    page = answers[0].json()
    assert answers[0].status_code == 200
    assert [entry["offset"] for entry in page["data"]] == [len(LINES[0])]
    assert page["next_cursor"] is not None


async def test_wait_times_out_with_the_same_cursor(server: Running, root: str, token: str) -> None:
    writer = Writer(root).start(LINES[0] + LINES[1][:5])
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        first = (await get_page(client, server, writer, token)).json()
        cursor = first["next_cursor"]
        now = (await get_page(client, server, writer, token, cursor=cursor)).json()
        waited = await get_page(client, server, writer, token, cursor=cursor, wait="1")
    assert waited.status_code == 200
    assert waited.json() == now and now["data"] == []


async def test_wait_does_not_hold_a_page_of_a_terminal_run(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(LINES[0], status="completed")
    for running in serve_in_thread(settings(str(tmp_path))):
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            first = (await get_page(client, running, writer, token)).json()
            cursor = first["next_cursor"]
            assert cursor is None
            page = await get_page(client, running, writer, token, wait="60")
        assert page.json() == first


@pytest.mark.parametrize("wait", ["61", "-1", "1.5", "", "soon", "0x1"])
def test_a_malformed_wait_is_invalid_query(wait: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_wait(b"wait=" + wait.encode())
    with pytest.raises(InvalidQuery):
        parse_wait(b"wait=1&wait=1")
    assert parse_wait(b"") == 0 and parse_wait(b"wait=60") == 60 and parse_wait(b"wait=00") == 0


def test_the_openapi_document_states_the_follow_parameters() -> None:
    document = orjson.loads(OPENAPI_DOCUMENT.read_bytes())
    parameters = document["components"]["parameters"]
    assert parameters["Wait"]["schema"]["maximum"] == MAX_WAIT_S
    for name, value in [("offset", parameters["Offset"]), ("from_line", parameters["FromLine"])]:
        top = str(value["schema"]["maximum"]).encode()
        parse_query(b"follow=1&" + name.encode() + b"=" + top)
        with pytest.raises(InvalidQuery):
            parse_query(b"follow=1&" + name.encode() + b"=" + top + b"0")
    for value in parameters["Follow"]["schema"]["enum"]:
        parse_query(b"follow=" + value.encode())
    operations = [
        op
        for item in document["paths"].values()
        for name, op in item.items()
        if name != "parameters"
    ]
    names = {
        p.get("$ref", "").rpartition("/")[2] for op in operations for p in op.get("parameters", [])
    }
    assert {"Follow", "Offset", "FromLine", "Wait"} <= names


async def test_shutdown_answers_a_held_page_at_once(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(LINES[0])
    generator = serve_in_thread(settings(str(tmp_path)))
    running = next(generator)
    watches = running.app.watches = SignallingWatches(running.app.watches.interval_s)
    answers: list[httpx.Response] = []
    try:
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            first = (await get_page(client, running, writer, token)).json()

            async def held() -> None:
                cursor = first["next_cursor"]
                page = await get_page(client, running, writer, token, cursor=cursor, wait="60")
                answers.append(page)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(held)
                assert await anyio.to_thread.run_sync(watches.taken.wait, GUARD_S)
                watches.close_soon()
    finally:
        generator.close()
    assert answers[0].status_code == 200 and answers[0].json()["data"] == []
