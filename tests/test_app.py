"""The whole app in-process (fake ASGI peer) and over a socket, when things go wrong."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from streamer.app import Streamer
from streamer.config import Settings
from streamer.metrics import REGISTRY
from streamer.observe import Observe
from streamer.pump import Message, StreamAborted
from streamer.storage import Store
from testkit.dataset import put_run
from testkit.fakes import SpyBackend
from testkit.servers import SECRET, Running, TokenFactory, serve_in_thread

PATH = "/api/v1/models/mdl-big/training-metrics/logs/download"
CHUNK = 64 * 1024
LOG_LINE = b"2026-03-13T10:00:00Z [INFO] a line of the log\n"
LOG_SIZE = len(LOG_LINE) * 100_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with one 4.6 MB log; returns the log's path."""
    root = tmp_path_factory.mktemp("big")
    put_run(str(root), "mdl-big", "run-1", LOG_LINE * (LOG_SIZE // len(LOG_LINE)))
    return root / "models/mdl-big/runs/run-1/training.log"


def settings_for(log: Path) -> Settings:
    root = log.parents[4]  # <root>/models/<model>/runs/<run>/training.log
    return Settings(storage_url=str(root), jwt_secret=SECRET, chunk_size=CHUNK)


def breaking(log: Path, after: int) -> Store:
    """The store of `log`, whose readers fail (connection reset) after `after` reads."""
    spy = SpyBackend(str(log.parents[4]))
    spy.break_after = after
    return spy.store


def open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


class Peer:
    """A client that reads `keep` body messages and then goes away."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.messages: list[Message] = []
        self.gone = anyio.Event()
        self.asked = False

    async def receive(self) -> Message:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if sum(m["type"] == "http.response.body" for m in self.messages) >= self.keep:
            self.gone.set()


def scope(token: str, query: bytes = b"") -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": PATH,
        "query_string": query,
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }


@pytest.mark.anyio
@pytest.mark.parametrize("query", [b"", b"format=json"])
async def test_disconnect_mid_stream_closes_the_file(
    big_store: Path, token: str, query: bytes
) -> None:
    app = Streamer(settings_for(big_store))
    peer = Peer(keep=3)
    with anyio.fail_after(10):
        await app(scope(token, query), peer.receive, peer.send)
    bodies = [m for m in peer.messages if m["type"] == "http.response.body"]
    assert peer.messages[0]["status"] == 200
    assert all(m.get("more_body") for m in bodies)  # never a clean end
    assert sum(len(m["body"]) for m in bodies) < LOG_SIZE
    assert open_fds_to(big_store) == 0


@pytest.mark.anyio
async def test_store_failure_mid_stream_raises_to_the_server(big_store: Path, token: str) -> None:
    app = Streamer(settings_for(big_store), store=breaking(big_store, after=2))
    peer = Peer(keep=10**9)
    with anyio.fail_after(10), pytest.raises(StreamAborted):
        await app(scope(token), peer.receive, peer.send)
    assert peer.messages[0]["status"] == 200
    assert open_fds_to(big_store) == 0


@pytest.mark.anyio
async def test_store_failure_before_the_first_byte_is_a_502(big_store: Path, token: str) -> None:
    app = Streamer(settings_for(big_store), store=breaking(big_store, after=0))
    peer = Peer(keep=10**9)
    with anyio.fail_after(10):
        await app(scope(token), peer.receive, peer.send)
    assert peer.messages[0]["status"] == 502
    assert b"upstream_error" in peer.messages[1]["body"]
    assert b"store went away" not in peer.messages[1]["body"]


@pytest.mark.parametrize(
    ("broken", "query"),
    [
        ("models/mdl-loop/model.json", ""),
        ("models/mdl-loop/runs/run-1/run.json", "?run_id=run-1"),
        ("models/mdl-loop/runs/run-1/run.json", ""),
        ("models/mdl-loop/runs/run-1/training.log", "?run_id=run-1"),
    ],
)
def test_store_failure_while_resolving_is_a_502_problem(
    tmp_path: Path,
    make_token: TokenFactory,
    settings_server: Callable[..., Running],
    broken: str,
    query: str,
) -> None:
    # A key the store cannot read for a reason other than absence (here a symlink loop:
    # ELOOP) is the store failing, not a missing run, and never a bare 500.
    put_run(str(tmp_path), "mdl-loop", "run-1", LOG_LINE)
    (tmp_path / broken).unlink()
    (tmp_path / broken).symlink_to(tmp_path / broken)
    running = settings_server(Settings(storage_url=str(tmp_path), jwt_secret=SECRET))
    response = httpx.get(
        f"{running.url}/api/v1/models/mdl-loop/training-metrics/logs/download{query}",
        headers={"Authorization": f"Bearer {make_token()}", "X-Request-ID": "loop-1"},
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "loop-1"
    problem = response.json()
    assert problem["code"] == "upstream_error" and problem["request_id"] == "loop-1"
    assert "symbolic" not in response.text and str(tmp_path) not in response.text


@pytest.mark.parametrize("query", ["", "?format=json"])
def test_store_failure_mid_stream_breaks_the_connection(
    big_store: Path, make_token: TokenFactory, query: str
) -> None:
    headers = {"Authorization": f"Bearer {make_token()}"}
    received = bytearray()
    store = breaking(big_store, after=5)
    with contextmanager(serve_in_thread)(settings_for(big_store), store=store) as running:
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("GET", running.url + PATH + query, headers=headers) as response:
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    received += chunk
    assert 0 < len(received) < LOG_SIZE
    if query:
        assert not received.rstrip().endswith(b"]")


def refresh_failures() -> float:
    return REGISTRY.get_sample_value("streamer_catalog_refresh_failures_total") or 0.0


@pytest.mark.anyio
async def test_the_lifespan_runs_the_catalog_refreshes_in_the_background(
    tmp_path: Path, token: str
) -> None:
    put_run(str(tmp_path), "mdl-big", "run-1", LOG_LINE)
    spy = SpyBackend(str(tmp_path))
    # Expired as soon as loaded: every request finds the default run's metadata stale.
    settings = Settings(storage_url=str(tmp_path), jwt_secret=SECRET, catalog_ttl_s=1e-9)
    app = Observe(Streamer(settings, store=spy.store))
    to_app, lifespan_inbox = anyio.create_memory_object_stream[Message](2)
    from_app: list[str] = []
    answered = anyio.Event()

    async def lifespan_send(message: Message) -> None:
        from_app.append(message["type"])
        answered.set()

    async def download() -> int:
        peer = Peer(keep=10**9)
        await app(scope(token), peer.receive, peer.send)
        status: int = peer.messages[0]["status"]
        return status

    with anyio.fail_after(10), to_app, lifespan_inbox:
        async with anyio.create_task_group() as group:
            group.start_soon(app, {"type": "lifespan"}, lifespan_inbox.receive, lifespan_send)
            await to_app.send({"type": "lifespan.startup"})
            await answered.wait()
            assert from_app == ["lifespan.startup.complete"]
            assert await download() == 200
            failed = refresh_failures()
            spy.fail_listing = OSError("store down")
            assert await download() == 200  # served while the refresh fails
            await anyio.wait_all_tasks_blocked()
            assert await download() == 200
            assert refresh_failures() > failed  # counted, for /metrics
            await anyio.wait_all_tasks_blocked()
            spy.fail_listing = None
            spy.listing_gate = anyio.Event()  # never set: the refresh stays held
            assert await download() == 200  # served while the refresh waits
            await anyio.wait_all_tasks_blocked()
            assert len(spy.listings()) == 4
            answered = anyio.Event()
            await to_app.send({"type": "lifespan.shutdown"})
            await answered.wait()  # the held refresh was cancelled, not awaited
    assert from_app == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.anyio
async def test_a_started_server_freezes_what_start_up_loaded(tmp_path: Path) -> None:
    """Full collections must not traverse start-up's objects again (they stop the loop)."""
    gc.unfreeze()
    settings = Settings(storage_url=str(tmp_path), jwt_secret=SECRET)
    app = Streamer(settings)
    to_app, inbox = anyio.create_memory_object_stream[Message](2)
    from_app: list[str] = []

    async def send(message: Message) -> None:
        from_app.append(message["type"])

    with anyio.fail_after(10), to_app, inbox:
        async with anyio.create_task_group() as group:
            group.start_soon(app, {"type": "lifespan"}, inbox.receive, send)
            await to_app.send({"type": "lifespan.startup"})
            await to_app.send({"type": "lifespan.shutdown"})
    assert from_app == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # What the process had loaded: at least the app and the modules it imports.
    assert gc.get_freeze_count() > 1000
    assert not gc.is_tracked(app) or app not in gc.get_objects()
