"""What a page costs the store: counted at the engine (memory, local) and on the wire (S3,
through a counting TCP proxy). A page reads about what it returns, whatever the log's size."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from streamer.config import Settings
from streamer.pages import PagePlan
from streamer.seek import BLOCK, LogFile, read_page
from streamer.storage import Store
from tests.conftest import SECRET, Running, serve_in_thread
from tests.dataset import put_run
from tests.emulators import BUCKET, fsspec_conf
from tests.generated import LINE, put_generated, render, timestamp

PATH = "/api/v1/models/{}/training-metrics/logs"
GIB = 1 << 30


class CountingProxy:
    """A loopback TCP proxy that counts the HTTP requests sent through it and the bytes
    that come back."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def reset(self) -> None:
        with self._lock:
            self.requests = self.bytes = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream)
        peers = {client: upstream, upstream: client}
        with client, upstream, selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        selector.unregister(source)
                        peers[source].shutdown(socket.SHUT_WR)
                        continue
                    with self._lock:
                        if source is client:
                            self.requests += data.count(b" HTTP/1.1\r\n")
                        else:
                            self.bytes += len(data)
                    peers[source].sendall(data)

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()


def plan(direction: str = "backward", **kwargs: object) -> PagePlan:
    return PagePlan("mdl-costs", None, direction, 100, "default", **kwargs)  # type: ignore[arg-type]


def engine_page(
    store: Store, key: str, size: int, page_plan: PagePlan
) -> tuple[LogFile, list[str]]:
    file = LogFile(store, key, size)
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
def s3_costs(s3_endpoint: str) -> Iterator[tuple[Running, CountingProxy]]:
    root = f"s3://{BUCKET}/costs"
    put_run(root, "mdl-small", "run-s", render(0, 1 << 20))
    put_run(root, "mdl-big", "run-b", render(0, 24 << 20))
    proxy = CountingProxy(s3_endpoint)
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
    s3_costs: tuple[Running, CountingProxy], token: str
) -> None:
    running, proxy = s3_costs
    costs = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for model in ("mdl-small", "mdl-big"):
            proxy.reset()
            response = client.get(running.url + PATH.format(model))
            assert response.status_code == 200 and len(response.json()["data"]) == 100
            costs.append((proxy.requests, proxy.bytes))
    (small_requests, small_bytes), (big_requests, big_bytes) = costs
    # model.json, run.json, the object's metadata, one ranged GET of its last block.
    assert small_requests == big_requests <= 5
    assert big_bytes < 1 << 20 and abs(big_bytes - small_bytes) < 1024


def test_on_s3_a_since_page_takes_at_most_64_requests(
    s3_costs: tuple[Running, CountingProxy], token: str
) -> None:
    running, proxy = s3_costs
    number = (24 << 20) // LINE // 3
    proxy.reset()
    response = httpx.get(
        running.url + PATH.format("mdl-big"),
        params={"since": timestamp(number), "direction": "forward", "limit": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.json()["data"][0]["offset"] == number * LINE
    assert proxy.requests <= 64 and proxy.bytes < 4 << 20
