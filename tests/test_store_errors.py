"""An error tells the truth: a missing object is a purge only while the store works.

A store whose root (folder, bucket) is gone, that refuses our credentials, or that cannot
be reached answers 503 `store_unavailable` with Retry-After, never a 404; a queued run
without a log is `logs_not_ready`. Real servers on loopback: uvicorn, moto.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import fsspec
import httpx
import orjson
import pytest

from streamer.app import Streamer
from streamer.catalog import Catalog
from streamer.config import Settings
from streamer.errors import LogsNotReady, LogsPurged, NotFound
from streamer.handlers.common import resolve
from streamer.pump import Message
from streamer.storage import Store, StoreUnreachable
from testkit.dataset import ORG, put, put_run
from testkit.emulators import (
    BUCKET,
    ENDPOINTS,
    Emulator,
    free_port,
    fsspec_conf,
    moto_command,
    s3_options,
)
from testkit.fakes import SpyBackend
from testkit.servers import SECRET, Running, TokenFactory, serve_in_thread

LOG = b"2026-03-13T10:00:00Z [INFO] one line\n"
DOWNLOAD = "/api/v1/models/mdl-e/training-metrics/logs/download"
LOGS = "/api/v1/models/mdl-e/training-metrics/logs"


@contextmanager
def serving(url: str) -> Iterator[Running]:
    """streamer over `url`, its metadata cached (as when a store goes away under it)."""
    settings = Settings(storage_url=url, jwt_secret=SECRET, catalog_ttl_s=3600)
    yield from serve_in_thread(settings)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "store_unavailable"
    assert int(response.headers["retry-after"]) > 0


def test_a_local_root_removed_under_a_running_server_is_503_never_404(
    tmp_path: Path, make_token: TokenFactory
) -> None:
    root = tmp_path / "store"
    put_run(str(root), "mdl-e", "run-1", LOG)
    auth = {"Authorization": f"Bearer {make_token()}"}
    with serving(str(root)) as running, httpx.Client(base_url=running.url) as client:
        assert client.get(DOWNLOAD, headers=auth).content == LOG  # metadata now cached
        shutil.rmtree(root)
        assert_unavailable(client.get(DOWNLOAD, headers=auth))
        assert_unavailable(client.get(DOWNLOAD + "?run_id=run-1", headers=auth))
        assert_unavailable(client.get(LOGS, headers=auth))
        assert_unavailable(
            client.get("/api/v1/models/mdl-new/training-metrics/logs/download", headers=auth)
        )
        put_run(str(root), "mdl-e", "run-1", LOG)  # back: served again
        assert client.get(DOWNLOAD, headers=auth).content == LOG


def test_a_purge_on_a_working_local_store_is_still_404(
    tmp_path: Path, make_token: TokenFactory
) -> None:
    put_run(str(tmp_path), "mdl-e", "run-1", LOG)
    auth = {"Authorization": f"Bearer {make_token()}"}
    with serving(str(tmp_path)) as running, httpx.Client(base_url=running.url) as client:
        os.unlink(tmp_path / "models/mdl-e/runs/run-1/training.log")
        gone = client.get(DOWNLOAD, headers=auth)
    assert (gone.status_code, gone.json()["code"]) == (404, "logs_purged")


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
def test_a_bucket_removed_under_a_running_server_is_503_never_404(
    kind: str, request: pytest.FixtureRequest, make_token: TokenFactory
) -> None:
    request.getfixturevalue(ENDPOINTS[kind])
    bucket = f"gone-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem(kind, skip_instance_cache=True)
    fs.mkdir(bucket)
    put_run(f"{kind}://{bucket}/logs", "mdl-e", "run-1", LOG)
    auth = {"Authorization": f"Bearer {make_token()}"}
    with (
        serving(f"{kind}://{bucket}/logs") as running,
        httpx.Client(base_url=running.url) as client,
    ):
        assert client.get(DOWNLOAD, headers=auth).content == LOG
        fs.rm(bucket, recursive=True)
        fs.invalidate_cache()
        assert not fs.exists(bucket)
        assert_unavailable(client.get(DOWNLOAD, headers=auth))
        assert_unavailable(client.get(LOGS.replace("mdl-e", "mdl-new"), headers=auth))


@pytest.fixture(scope="module")
def moto_with_auth() -> Iterator[str]:
    """A moto S3 server that checks credentials: it knows none of ours."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    emulator = Emulator("moto", moto_command(port), f"Running on http://127.0.0.1:{port}", env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        emulator.stop()


@pytest.mark.anyio
async def test_refused_s3_credentials_are_503(
    moto_with_auth: str, make_token: TokenFactory
) -> None:
    # In-process (no lifespan): a server's start-up would refuse this store outright.
    settings = Settings(storage_url=f"s3://{BUCKET}/logs", jwt_secret=SECRET)
    token = make_token().encode()
    scope = {"type": "http", "method": "GET", "path": DOWNLOAD, "query_string": b""}
    scope["headers"] = [(b"authorization", b"Bearer " + token), (b"host", b"test")]
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    with fsspec_conf("s3", **s3_options(moto_with_auth)):
        app = Streamer(settings)
        try:
            with anyio.fail_after(60):
                await app(scope, receive, send)
        finally:
            await app.store.aclose()
    headers = dict(sent[0]["headers"])
    assert (sent[0]["status"], headers[b"retry-after"]) == (503, b"5")
    assert orjson.loads(sent[1]["body"])["code"] == "store_unavailable"


@pytest.mark.anyio
async def test_an_s3_endpoint_that_refuses_connections_is_unreachable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with fsspec_conf("s3", **s3_options(endpoint)):
        store = Store.from_url(f"s3://{BUCKET}/logs")
    try:
        with anyio.fail_after(60), pytest.raises(StoreUnreachable):
            await store.info("models/mdl-e/model.json")
    finally:
        await store.aclose()


# --- the catalog, through the fake backend --------------------------------------------------


def run_json(status: str) -> bytes:
    return orjson.dumps({"run_id": "run-1", "status": status, "completed_at": None})


@pytest.mark.anyio
@pytest.mark.parametrize("status", ["queued", "running"])
async def test_a_run_not_terminal_without_a_log_is_not_ready(status: str) -> None:
    spy = SpyBackend()
    spy.put("models/mdl-e/model.json", orjson.dumps({"organization_id": ORG}))
    spy.put("models/mdl-e/runs/run-1/run.json", run_json(status))
    catalog = Catalog(spy.store, ttl_s=0)
    with pytest.raises(LogsNotReady):
        await catalog.resolve("mdl-e", ORG, "run-1")
    spy.put("models/mdl-e/runs/run-1/training.log", LOG)
    assert (await catalog.resolve("mdl-e", ORG, "run-1")).info.size == len(LOG)


@pytest.mark.anyio
async def test_a_missing_log_is_believed_only_after_the_root_answered(tmp_path: Path) -> None:
    put_run(str(tmp_path), "mdl-e", "run-1", LOG)
    spy = SpyBackend(str(tmp_path))
    catalog = Catalog(spy.store, ttl_s=3600)
    await catalog.resolve("mdl-e", ORG, None)
    assert spy.ops("ping") == []  # the log was there: nothing to confirm
    os.unlink(tmp_path / "models/mdl-e/runs/run-1/training.log")
    with pytest.raises(LogsPurged):
        await catalog.resolve("mdl-e", ORG, None)
    assert len(spy.ops("ping")) == 1
    shutil.rmtree(tmp_path)
    with pytest.raises(StoreUnreachable, match="not a directory"):
        await catalog.resolve("mdl-e", ORG, None)


@pytest.mark.anyio
async def test_a_read_that_finds_no_object_on_a_gone_root_is_unreachable(tmp_path: Path) -> None:
    root = tmp_path / "store"
    put(str(root), "models/mdl-e/runs/run-1/training.log", LOG)
    store = Store.from_url(str(root))
    key = "models/mdl-e/runs/run-1/training.log"
    with pytest.raises(FileNotFoundError):
        await store.open(key + ".gz")
    with pytest.raises(FileNotFoundError):
        await store.read_bytes("models/mdl-e/model.json")
    shutil.rmtree(root)
    with pytest.raises(StoreUnreachable):
        await store.open(key)
    with pytest.raises(StoreUnreachable):
        await store.read_bytes(key)
    with pytest.raises(StoreUnreachable):
        await store.list_versions("models/")


@pytest.mark.anyio
async def test_a_clients_mistake_never_counts_as_a_store_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put_run(str(tmp_path), "mdl-e", "run-1", LOG)
    mistakes = [("mdl-nope", None), ("mdl e", None), ("mdl-e", "run-nope"), ("mdl-e", "run x")]
    async with Catalog(Store.from_url(str(tmp_path)), ttl_s=0) as catalog:
        with caplog.at_level(logging.WARNING):
            for model_id, run_id in mistakes:
                with pytest.raises(NotFound):
                    await resolve(catalog, model_id, ORG, run_id)
                with pytest.raises(NotFound):
                    await resolve(catalog, "mdl-e", "org-other", run_id)
    assert caplog.records == [] and catalog.refresh_failures == 0
