"""Upstream faults on real S3 and GCS emulators, through a fault-injecting TCP proxy.

A transient cut (or 503) mid-stream is resumed with a ranged read: the bytes are
identical. A cut that keeps coming back aborts the client's connection.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from streamer import metrics
from streamer.config import Settings
from streamer.demo import training_log
from streamer.storage import GzipReader, ObjectChanged, Store
from testkit.dataset import put
from testkit.emulators import ENDPOINTS, FaultProxy, endpoint_options, fsspec_conf
from testkit.faulty import Faulty, assert_broken, download, seed, serving
from testkit.faulty import faulty as proxied_store
from testkit.servers import SECRET, Running, TokenFactory

PATH = "/api/v1/models/mdl-faults/training-metrics/logs/download"
LOG = training_log(3 * 1024 * 1024)
GZ_LOG = training_log(2 * 1024 * 1024, seed=11)
CUT_AFTER = 256 * 1024
KEY = "models/mdl-faults/runs/run-f1/training.log"
GZ_KEY = "models/mdl-faults/runs/run-fgz/training.log.gz"


@pytest.fixture(scope="module", params=["s3", "gs", "az"])
def seeded(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    kind: str = request.param
    endpoint: str = request.getfixturevalue(ENDPOINTS[kind])
    logs = {
        "run-f1": ("training.log", LOG),
        "run-fgz": ("training.log.gz", gzip.compress(GZ_LOG, compresslevel=1)),
    }
    return kind, endpoint, seed(kind, "faults", "mdl-faults", logs)


@pytest.fixture
def faulty(seeded: tuple[str, str, str]) -> Iterator[Faulty]:
    with proxied_store(*seeded) as faulty:
        yield faulty


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
    assert store.retries == 1


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
    assert store.retries == 3


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
    with serving(faulty) as running:
        yield running, faulty.proxy


def retries_metric() -> float:
    for line in metrics.exposition().decode().splitlines():
        if line.startswith("streamer_upstream_retries_total "):
            return float(line.split()[1])
    raise LookupError("streamer_upstream_retries_total")


def test_client_gets_identical_bytes_after_a_transient_cut(
    faulty_server: tuple[Running, FaultProxy], make_token: TokenFactory
) -> None:
    running, proxy = faulty_server
    proxy.cut_after, proxy.cuts = CUT_AFTER, 1
    retries_before = retries_metric()
    response, body = download(running.url + PATH, make_token())
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
    assert_broken(running.url + PATH, make_token(), fmt, LOG)
    store = running.app.store
    assert store.retries == 3


def test_a_store_that_fails_before_the_first_byte_is_a_502(
    faulty: Faulty, settings_server: Callable[..., Running], make_token: TokenFactory
) -> None:
    settings = Settings(storage_url=faulty.url, jwt_secret=SECRET, catalog_ttl_s=0)
    with fsspec_conf(faulty.kind, **endpoint_options(faulty.kind, faulty.proxy.url)):
        running = settings_server(settings)
    # Every attempt is cut before a first 1 MiB chunk is complete.
    faulty.proxy.cut_after, faulty.proxy.cuts = CUT_AFTER, 1000
    headers = {"Authorization": f"Bearer {make_token()}"}
    response = httpx.get(running.url + PATH, headers=headers, timeout=60)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"
