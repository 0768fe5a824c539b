"""What an expensive Get Logs page may cost the process: the loop stays free while a gzip
log inflates, a gzip log is inflated once for all its pages, expensive pages take a
bounded pool of slots (503 beyond), and local copies stay within their disk bound."""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from streamer.catalog import LogObject, Run
from streamer.config import Settings
from streamer.errors import Overloaded
from streamer.logs import inflated, scan
from streamer.logs.inflated import InflatedLogs
from streamer.storage import ObjectInfo, Store
from testkit.dataset import put, put_run
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.wire import assert_problem

PATH = "/api/v1/models/{}/training-metrics/logs"
LINE = b"2026-03-13T10:00:00Z [INFO] the same line, again and again\n"
BIG = LINE * ((64 << 20) // len(LINE))  # 64 MiB inflated, about 200 KiB of gzip
SMALL = b"".join(b"2026-03-13T10:00:%02dZ [INFO] line %d\n" % (n % 60, n) for n in range(500))
HANG_GUARD_S = 60  # only against a hang: the order is checked with events, not times


def put_gz_run(root: str, model: str, run: str, log: bytes) -> None:
    put_run(root, model, run, b"")
    folder = f"models/{model}/runs/{run}"
    Path(root, folder, "training.log").unlink()
    put(root, f"{folder}/training.log.gz", gzip.compress(log, compresslevel=1))


@pytest.fixture(scope="module")
def costs_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("costs"))
    put_gz_run(root, "mdl-big", "run-big", BIG)
    for model in ("mdl-gz-a", "mdl-gz-b", "mdl-gz-c"):
        put_gz_run(root, model, "run-1", SMALL)
    put_run(root, "mdl-plain", "run-1", SMALL)
    put_run(root, "mdl-scan", "run-1", b"2026-03-13T09:00:00Z [ERROR] the first\n" + BIG[: 4 << 20])
    return root


@pytest.fixture
def serve(costs_root: str) -> Iterator[Callable[[int], Running]]:
    """A fresh server (its own slots and copies) with `scan_slots` slots."""
    running: list[Iterator[Running]] = []

    def start(scan_slots: int) -> Running:
        settings = Settings(
            storage_url=costs_root, jwt_secret=SECRET, catalog_ttl_s=0, scan_slots=scan_slots
        )
        servers = serve_in_thread(settings)
        running.append(servers)
        return next(servers)

    yield start
    for servers in running:
        for _ in servers:
            pass


def get(server: Running, token: str, model: str, **params: str | int) -> httpx.Response:
    with httpx.Client(timeout=HANG_GUARD_S) as client:
        return client.get(
            server.url + PATH.format(model),
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )


class Gate:
    """Holds calls of `module.name` (inflation slices by default: the work a worker thread
    does) until released; counts arrivals. `at_call` 0 holds every call."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        at_call: int = 1,
        module: object = inflated,
        name: str = "_inflate_slice",
    ) -> None:
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()
        self._calls = 0
        self._lock = threading.Lock()
        real = getattr(module, name)

        def gated(*args: object) -> object:
            with self._lock:
                self._calls += 1
                held = self._calls == at_call or at_call == 0
            if held:
                self.arrived.release()
                assert self.release.wait(HANG_GUARD_S)
            return real(*args)

        monkeypatch.setattr(module, name, gated)

    def wait(self) -> None:
        assert self.arrived.acquire(timeout=HANG_GUARD_S)


def test_healthz_answers_while_a_gzip_page_inflates(
    serve: Callable[[int], Running], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(4)
    # Held halfway through the 64 MiB, inside the worker thread that inflates: had the
    # inflating run on the event loop, the loop would be held here and /healthz would hang.
    gate = Gate(monkeypatch, at_call=len(BIG) // inflated.SLICE // 2)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(get, server, token, "mdl-big", limit=3)
        gate.wait()
        with httpx.Client(timeout=HANG_GUARD_S) as client:
            assert client.get(server.url + "/healthz").status_code == 200
        assert not pending.done()
        gate.release.set()
        response = pending.result(HANG_GUARD_S)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["offset"] for item in data] == [len(BIG) - n * len(LINE) for n in (3, 2, 1)]


def test_healthz_answers_while_a_filtered_page_scans(
    serve: Callable[[int], Running], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(4)
    # Held in the second block of the scan: parsing and matching run in a worker thread.
    gate = Gate(monkeypatch, at_call=2, module=scan, name="_backward_block")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(get, server, token, "mdl-scan", level="ERROR")
        gate.wait()
        with httpx.Client(timeout=HANG_GUARD_S) as client:
            assert client.get(server.url + "/healthz").status_code == 200
        assert not pending.done()
        gate.release.set()
        response = pending.result(HANG_GUARD_S)
    assert response.status_code == 200, response.text
    assert [item["message"] for item in response.json()["data"]] == ["the first"]


@pytest.mark.anyio
async def test_one_block_is_parsed_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing holds the GIL: two pages' blocks take turns, not two threads."""
    gate = Gate(monkeypatch, at_call=0, module=scan, name="parse_block")
    block = SMALL * 200  # large enough for a worker thread
    parsed: list[int] = []

    async def parse(base: int) -> None:
        parsed.append(len(await scan.parse_lines(block, base)))

    with anyio.fail_after(HANG_GUARD_S):
        async with anyio.create_task_group() as group:
            for base in (0, 1):
                group.start_soon(parse, base)
            await anyio.to_thread.run_sync(gate.wait)  # the first is in its thread
            await anyio.wait_all_tasks_blocked()
            assert scan.parsing().statistics().tasks_waiting == 1  # the second waits its turn
            assert gate.arrived.acquire(blocking=False) is False
            gate.release.set()
    assert parsed == [500 * 200] * 2


def test_the_pages_of_a_gzip_log_share_one_inflation(
    serve: Callable[[int], Running], token: str
) -> None:
    server = serve(4)
    copies = server.app.logs.copies
    first = get(server, token, "mdl-gz-a", limit=200)
    assert first.status_code == 200 and copies.inflations == 1
    cursor = first.json()["next_cursor"]
    second = get(server, token, "mdl-gz-a", limit=200, cursor=cursor)
    third = get(server, token, "mdl-gz-a", level="INFO", contains="line 4")
    assert second.status_code == third.status_code == 200
    assert [item["offset"] for item in second.json()["data"]][-1] < first.json()["data"][0][
        "offset"
    ]
    assert copies.inflations == 1
    assert get(server, token, "mdl-gz-b", limit=1).status_code == 200
    assert copies.inflations == 2


def test_pages_beyond_the_scan_slots_are_refused_before_reading(
    serve: Callable[[int], Running], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(2)
    gate = Gate(monkeypatch, at_call=0)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(get, server, token, model) for model in ("mdl-gz-a", "mdl-gz-b")]
        gate.wait()
        gate.wait()  # both slots are taken, each by a page inflating its log
        for model, params in [("mdl-gz-c", {}), ("mdl-plain", {"level": "ERROR"})]:
            refused = get(server, token, model, **params)
            assert_problem(refused, 503, "overloaded")
            assert int(refused.headers["retry-after"]) >= 1
        # A page that neither scans nor inflates takes no slot.
        assert get(server, token, "mdl-plain", limit=5).status_code == 200
        gate.release.set()
        assert all(page.result(HANG_GUARD_S).status_code == 200 for page in held)
    copies = server.app.logs.copies
    assert copies.inflations == 2  # the refused gzip page read nothing
    assert get(server, token, "mdl-plain", level="ERROR").status_code == 200


def test_the_copies_are_removed_at_shutdown(costs_root: str, token: str) -> None:
    settings = Settings(storage_url=costs_root, jwt_secret=SECRET, catalog_ttl_s=0)
    servers = serve_in_thread(settings)
    server = next(servers)
    folder = server.app.logs.copies.folder
    assert get(server, token, "mdl-gz-a", limit=1).status_code == 200
    assert files(folder) == 1
    servers.close()  # the lifespan's shutdown runs before the server's thread ends
    assert not os.path.exists(folder)


def gz_log(store_root: str, name: str, data: bytes) -> LogObject:
    put(store_root, name, gzip.compress(data))
    size = Path(store_root, name).stat().st_size
    run = Run("run-1", "completed", None, None, None)
    return LogObject("mdl-x", run, name, True, ObjectInfo(size, name, datetime.now(UTC)))


def files(folder: str) -> int:
    return len(os.listdir(folder))


def test_copies_stay_within_their_disk_bound(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path))
    logs = [gz_log(str(tmp_path), f"{n}.log.gz", SMALL * (n + 1)) for n in range(3)]

    async def main() -> None:
        small = len(SMALL)
        # Room for the slice being made and for copies of 3 x SMALL, less one byte.
        copies = InflatedLogs(disk_bytes=inflated.SLICE + 3 * small - 1)
        for log in logs[:2]:
            async with copies.open(store, log) as copy:
                assert await copy.read(0, copy.size) == SMALL * (int(log.key[0]) + 1)
        assert copies.used <= copies.disk_bytes and files(copies.folder) == 2
        # A third copy makes room by removing the least recently used one.
        async with copies.open(store, logs[0]):
            pass
        async with copies.open(store, logs[2]):
            assert copies.inflations == 3 and files(copies.folder) == 2
        async with copies.open(store, logs[0]):
            assert copies.inflations == 3  # kept: it was used last
        # While every copy is being read, none can go: a new one is refused, and leaves nothing.
        async with copies.open(store, logs[0]), copies.open(store, logs[2]):
            with pytest.raises(Overloaded):
                async with copies.open(store, logs[1]):
                    pass
        assert copies.used <= copies.disk_bytes and files(copies.folder) == 2

    anyio.run(main)


def test_a_log_of_unknown_size_and_version_is_copied_for_its_page_alone(tmp_path: Path) -> None:
    put(str(tmp_path), "plain.log", SMALL)
    run = Run("run-1", "completed", None, None, None)
    log = LogObject("mdl-x", run, "plain.log", False, ObjectInfo(None, None, None))

    async def main() -> None:
        copies = InflatedLogs()
        store = Store.from_url(str(tmp_path))
        for _ in range(2):
            async with copies.open(store, log) as copy:
                assert copy.size == len(SMALL) and await copy.read(10, 20) == SMALL[10:20]
            # Nothing tells a later version from this one: the copy is not kept.
            assert files(copies.folder) == 0 and copies.used == 0
        assert copies.inflations == 2

    anyio.run(main)


def test_a_truncated_gzip_log_is_an_error_and_leaves_no_copy(tmp_path: Path) -> None:
    whole = gz_log(str(tmp_path), "0.log.gz", SMALL)
    data = Path(tmp_path, "0.log.gz").read_bytes()
    put(str(tmp_path), "0.log.gz", data[: len(data) // 2])
    info = ObjectInfo(len(data) // 2, "half", None)
    log = LogObject("mdl-x", whole.run, whole.key, True, info)

    async def main() -> None:
        copies = InflatedLogs()
        with pytest.raises(zlib.error):
            async with copies.open(Store.from_url(str(tmp_path)), log):
                pass
        assert files(copies.folder) == 0 and copies.used == 0

    anyio.run(main)
