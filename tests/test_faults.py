"""Upstream faults on real S3 and GCS emulators, through a fault-injecting TCP proxy.

A transient cut (or 503) mid-stream is resumed with a ranged read: the bytes are
identical. A cut that keeps coming back aborts the client's connection.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from streamer import metrics
from streamer.config import Settings
from streamer.demo import training_log
from streamer.storage import GzipReader, ObjectChanged, Store
from tests.conftest import SECRET, Running, TokenFactory, serve_in_thread
from tests.dataset import put
from tests.emulators import BUCKET, FaultProxy, fsspec_conf

PATH = "/api/v1/models/mdl-faults/training-metrics/logs/download"
LOG = training_log(3 * 1024 * 1024)
GZ_LOG = training_log(2 * 1024 * 1024, seed=11)
CUT_AFTER = 256 * 1024
KEY = "models/mdl-faults/runs/run-f1/training.log"
GZ_KEY = "models/mdl-faults/runs/run-fgz/training.log.gz"


@dataclass
class Faulty:
    """A store URL whose endpoint goes through `proxy`."""

    kind: str
    url: str
    proxy: FaultProxy

    def store(self, **options: Any) -> Store:
        # The endpoint is read from fsspec's config when the filesystem is made.
        with fsspec_conf(self.kind, endpoint_url=self.proxy.url, **options):
            return Store.from_url(self.url)


@pytest.fixture(scope="module", params=["s3", "gs"])
def seeded(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind: str = request.param
    endpoint: str = request.getfixturevalue("s3_endpoint" if kind == "s3" else "gcs_endpoint")
    root = f"{kind}://{BUCKET}/faults"
    put(root, "models/mdl-faults/model.json", orjson.dumps({"organization_id": "org-acme"}))
    for run_id, completed in (("run-f1", "2026-03-13T11:00:00Z"), ("run-fgz", None)):
        document = {"run_id": run_id, "status": "completed", "completed_at": completed}
        put(root, f"models/mdl-faults/runs/{run_id}/run.json", orjson.dumps(document))
    put(root, KEY, LOG)
    put(root, GZ_KEY, gzip.compress(GZ_LOG, compresslevel=1))
    return kind, endpoint


@pytest.fixture
def faulty(seeded: tuple[str, str]) -> Iterator[Faulty]:
    kind, endpoint = seeded
    proxy = FaultProxy(endpoint)
    try:
        yield Faulty(kind, f"{kind}://{BUCKET}/faults", proxy)
    finally:
        proxy.close()


async def read_all(store: Store, key: str, end: int | None, size: int = 1 << 20) -> bytes:
    reader = await store.open(key, end=end)
    parts = []
    try:
        while chunk := await reader.read(size):
            parts.append(chunk)
    finally:
        await reader.aclose()
    return b"".join(parts)


@pytest.mark.anyio
async def test_a_cut_mid_stream_is_resumed(faulty: Faulty) -> None:
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1
    store = faulty.store()
    try:
        assert await read_all(store, KEY, len(LOG)) == LOG
    finally:
        await store.aclose()
    assert faulty.proxy.cut_count == 1
    assert (store.retries, store.upstream_errors) == (1, 1)


@pytest.mark.anyio
async def test_a_stalled_stream_is_resumed(faulty: Faulty) -> None:
    faulty.proxy.stall_after, faulty.proxy.stalls = CUT_AFTER, 1
    # The libraries' own read timeouts, shortened: s3fs's botocore config, gcsfs's requests.
    if faulty.kind == "s3":
        store = faulty.store(config_kwargs={"read_timeout": 1})
    else:
        store = faulty.store(requests_timeout=1)
    try:
        assert await read_all(store, KEY, len(LOG)) == LOG
    finally:
        await store.aclose()
    assert faulty.proxy.stall_count == 1
    assert store.retries == 1


@pytest.mark.anyio
async def test_a_503_after_a_cut_is_retried(faulty: Faulty) -> None:
    faulty.proxy.cut_after, faulty.proxy.cuts, faulty.proxy.fail_after_cut = CUT_AFTER, 1, 1
    store = faulty.store()
    try:
        assert await read_all(store, KEY, len(LOG)) == LOG
    finally:
        await store.aclose()
    assert (faulty.proxy.cut_count, faulty.proxy.failed_count) == (1, 1)
    # botocore retries a 503 itself; gcsfs's session does not, so ours does.
    assert store.retries == (1 if faulty.kind == "s3" else 2)


@pytest.mark.anyio
async def test_an_object_replaced_during_a_resumed_read_is_not_spliced(faulty: Faulty) -> None:
    key = "models/mdl-faults/runs/run-f2/training.log"
    put(faulty.url, key, LOG)
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1
    store = faulty.store()
    reader = await store.open(key, end=len(LOG))
    try:
        first = await reader.read(64 * 1024)
        assert first == LOG[: len(first)]
        # The cut has happened or will; the reopen then finds another object.
        put(faulty.url, key, LOG.upper())
        with pytest.raises(ObjectChanged):
            while await reader.read(64 * 1024):
                pass
    finally:
        await reader.aclose()
        await store.aclose()


@pytest.mark.anyio
async def test_persistent_cuts_raise(faulty: Faulty) -> None:
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1000
    store = faulty.store()
    try:
        with pytest.raises(Exception) as caught:
            await read_all(store, KEY, len(LOG))
    finally:
        await store.aclose()
    assert not isinstance(caught.value, FileNotFoundError)
    assert (store.retries, store.upstream_errors) == (3, 4)


@pytest.mark.anyio
async def test_gzip_over_a_cut_stream_decompresses_in_bounded_reads(faulty: Faulty) -> None:
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1
    store = faulty.store()
    info = await store.info(GZ_KEY)
    assert info is not None
    reader = GzipReader(await store.open(GZ_KEY, end=info.size), 64 * 1024)
    digest, total, largest = hashlib.sha256(), 0, 0
    try:
        while chunk := await reader.read(64 * 1024):
            digest.update(chunk)
            total += len(chunk)
            largest = max(largest, len(chunk))
    finally:
        await reader.aclose()
        await store.aclose()
    assert (digest.hexdigest(), total) == (hashlib.sha256(GZ_LOG).hexdigest(), len(GZ_LOG))
    assert largest <= 64 * 1024
    assert store.retries == 1


@pytest.fixture
def faulty_server(faulty: Faulty) -> Iterator[tuple[Running, FaultProxy]]:
    # Chunks smaller than the cut, so that the response has started when the store fails.
    settings = Settings(
        storage_url=faulty.url, jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=64 * 1024
    )
    with fsspec_conf(faulty.kind, endpoint_url=faulty.proxy.url):
        servers = serve_in_thread(settings)
        running = next(servers)
    try:
        yield running, faulty.proxy
    finally:
        servers.close()


def retries_metric() -> float:
    for line in metrics.exposition().decode().splitlines():
        if line.startswith("streamer_upstream_retries_total "):
            return float(line.split()[1])
    raise LookupError("streamer_upstream_retries_total")


def download(running: Running, token: str, **params: str) -> tuple[httpx.Response, bytes]:
    """The response and the bytes received; raises what httpx raises on a broken body."""
    received = bytearray()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "GET", running.url + PATH, params=params, headers=headers, timeout=60
    ) as response:
        for chunk in response.iter_raw():
            received += chunk
    return response, bytes(received)


def test_client_gets_identical_bytes_after_a_transient_cut(
    faulty_server: tuple[Running, FaultProxy], make_token: TokenFactory
) -> None:
    running, proxy = faulty_server
    proxy.cut_after, proxy.cuts = CUT_AFTER, 1
    retries_before = retries_metric()
    response, body = download(running, make_token())
    assert response.status_code == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(LOG).hexdigest()
    assert proxy.cut_count == 1
    assert running.app.store.retries == 1
    assert retries_metric() == retries_before + 1


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_persistent_cuts_break_the_client_transfer(
    faulty_server: tuple[Running, FaultProxy], make_token: TokenFactory, fmt: str
) -> None:
    running, proxy = faulty_server
    proxy.cut_after, proxy.cuts = CUT_AFTER, 1000
    received = bytearray()
    headers = {"Authorization": f"Bearer {make_token()}"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "GET", running.url + PATH, params={"format": fmt}, headers=headers, timeout=60
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert 0 < len(received) < len(LOG)
    if fmt == "txt":
        assert int(response.headers["content-length"]) == len(LOG)
        assert bytes(received) == LOG[: len(received)]
    else:
        assert received.startswith(b"[") and not received.rstrip().endswith(b"]")
    store = running.app.store
    assert (store.retries, store.upstream_errors) == (3, 4)


def test_a_store_that_fails_before_the_first_byte_is_a_502(
    faulty: Faulty, settings_server: Callable[..., Running], make_token: TokenFactory
) -> None:
    settings = Settings(storage_url=faulty.url, jwt_secret=SECRET, catalog_ttl_s=0)
    with fsspec_conf(faulty.kind, endpoint_url=faulty.proxy.url):
        running = settings_server(settings)
    # Every attempt is cut before a first 1 MiB chunk is complete.
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1000
    headers = {"Authorization": f"Bearer {make_token()}"}
    response = httpx.get(running.url + PATH, headers=headers, timeout=60)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"
