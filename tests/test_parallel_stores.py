"""Parallel ranged reads on the real S3 and GCS emulators, through proxies that cut.

Parts of 1 MiB (the store's `part_size`), a threshold of 2 MiB and growth after 1 MiB keep
the objects small; every part is its own GET through the proxy.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
import httpx
import orjson
import pytest

from streamer.config import Settings
from streamer.demo import training_log
from streamer.storage import ObjectChanged, ParallelReader, Store
from streamer.storage.azure import AzureBackend
from streamer.storage.gcs import GcsBackend
from streamer.storage.s3 import S3Backend
from streamer.storage.store import READ_AHEAD, pool_size
from testkit.dataset import put
from testkit.emulators import BUCKET, endpoint_options, fsspec_conf
from testkit.faulty import (
    Faulty,
    assert_broken,
    download,
    serving,
    serving_through,
)
from testkit.partstores import (
    GZ_LOG,
    GZ_STORED,
    KEY,
    LOG,
    proxied,
    seeded,
    sha,
    small_parts,
)
from testkit.servers import SECRET, Running, TokenFactory
from testkit.shaping import ShapingProxy

__all__ = ["proxied", "seeded"]  # fixtures, shared with test_parallel_memory
MiB = 1024 * 1024
PATH = "/api/v1/models/mdl-parts/training-metrics/logs/download"


async def read_span(store: Store, start: int, end: int, size: int = 256 * 1024) -> bytes:
    got = bytearray()
    async with store.reading(KEY, start, end, read_size=size) as reading:
        reader = reading.source
        assert isinstance(reader, ParallelReader) and not reading.ahead
        while chunk := await reader.read(size):
            got += chunk
        assert reader.peak_in_flight > 1
    return bytes(got)


@pytest.mark.anyio
@pytest.mark.parametrize(("start", "end"), [(0, len(LOG)), (MiB - 5, 4 * MiB + 5)])
async def test_parts_come_in_order(proxied: Faulty, start: int, end: int) -> None:
    store = small_parts(proxied.store(streams=8))
    try:
        assert sha(await read_span(store, start, end)) == sha(LOG[start:end])
    finally:
        await store.aclose()
    assert store.read_ahead.used == 0
    assert proxied.proxy.connections > 1  # parts in flight together need connections


@pytest.mark.anyio
async def test_a_part_cut_once_is_resumed(proxied: Faulty) -> None:
    proxied.proxy.cut_after, proxied.proxy.cuts = 300 * 1024, 1
    store = small_parts(proxied.store(streams=8))
    try:
        assert sha(await read_span(store, 0, len(LOG))) == sha(LOG)
    finally:
        await store.aclose()
    assert proxied.proxy.cut_count == 1
    assert store.retries == 1


@pytest.mark.anyio
async def test_a_part_that_keeps_failing_aborts_the_read(proxied: Faulty) -> None:
    proxied.proxy.cut_after, proxied.proxy.cuts = 300 * 1024, 1000
    store = small_parts(proxied.store(streams=8))
    try:
        with pytest.raises(Exception) as caught:
            await read_span(store, 0, len(LOG))
    finally:
        await store.aclose()
    assert not isinstance(caught.value, FileNotFoundError | AssertionError)
    assert store.retries >= 3
    assert store.read_ahead.used == 0


@pytest.mark.anyio
async def test_an_object_replaced_during_the_read_is_not_spliced(proxied: Faulty) -> None:
    key = "models/mdl-parts/runs/run-p2/training.log"
    put(proxied.url, key, LOG)
    store = small_parts(proxied.store(streams=8))
    got = bytearray()
    try:
        async with store.reading(key, 0, len(LOG), read_size=256 * 1024) as reader:
            got += await reader.read(256 * 1024)  # the first part only is in flight
            put(proxied.url, key, LOG.upper())
            with pytest.raises(ObjectChanged):
                while chunk := await reader.read(256 * 1024):
                    got += chunk
    finally:
        await store.aclose()
    assert got == LOG[: len(got)]


@pytest.mark.anyio
async def test_a_small_span_is_one_plain_get(proxied: Faulty) -> None:
    store = small_parts(proxied.store(streams=8))
    try:
        async with store.reading(KEY, MiB, MiB + 16 * 1024) as reader:
            # One streamed GET keeps nothing ready: the pump reads it a chunk ahead.
            assert not isinstance(reader.source, ParallelReader) and reader.ahead
            assert await reader.read(MiB) == LOG[MiB : MiB + 16 * 1024]
    finally:
        await store.aclose()


@pytest.fixture
def server(proxied: Faulty) -> Iterator[Running]:
    with serving(proxied) as running:
        small_parts(running.app.store)
        yield running


def test_downloads_and_ranges_are_identical_over_parts(
    server: Running, proxied: Faulty, make_token: TokenFactory
) -> None:
    token = make_token()
    response, body = download(server.url + PATH, token)
    assert response.status_code == 200
    assert sha(body) == sha(LOG)
    response, body = download(server.url + PATH, token, Range=f"bytes={MiB - 3}-{5 * MiB + 2}")
    assert response.status_code == 206
    assert body == LOG[MiB - 3 : 5 * MiB + 3]
    assert server.app.store.read_ahead.used == 0


def test_gzip_logs_are_read_in_parts_too(
    server: Running, proxied: Faulty, make_token: TokenFactory
) -> None:
    token = make_token()
    params = {"run_id": "run-pgz"}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "GET",
        server.url + PATH,
        params=params,
        headers={**headers, "Accept-Encoding": "gzip"},
        timeout=60,
    ) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert sha(raw) == sha(GZ_STORED)
    response = httpx.get(server.url + PATH, params=params, headers=headers, timeout=60)
    assert sha(response.content) == sha(GZ_LOG)


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_a_part_that_keeps_failing_breaks_the_transfer(
    server: Running, proxied: Faulty, make_token: TokenFactory, fmt: str
) -> None:
    proxied.proxy.cut_after, proxied.proxy.cuts = 300 * 1024, 1000
    assert_broken(server.url + PATH, make_token(), fmt, LOG)


def test_pools_are_sized_from_the_streams(seeded: tuple[str, str, str]) -> None:
    kind, _, _ = seeded
    expected = pool_size(256, READ_AHEAD)
    assert expected == 256 + READ_AHEAD // (8 * MiB) + 32

    async def pool() -> Any:
        store = Store.from_url(f"{kind}://{BUCKET}/parts", streams=256)
        backend = store.backend
        assert isinstance(backend, S3Backend | GcsBackend | AzureBackend)
        try:
            if kind == "s3":
                return backend.fs.config_kwargs["max_pool_connections"]
            if kind == "az":
                return backend.fs.service_client._pipeline._transport.session.connector.limit
            await backend.fs._set_session()
            return backend.fs.session._connector.limit
        finally:
            await store.aclose()

    assert anyio.run(pool) == expected


def test_a_pool_the_operator_configured_is_kept(seeded: tuple[str, str, str]) -> None:
    kind, _, _ = seeded
    if kind == "az":
        pytest.skip("adlfs takes no pool or transport option an operator could set")

    async def pool() -> Any:
        store = Store.from_url(f"{kind}://{BUCKET}/parts", streams=256)
        backend = store.backend
        assert isinstance(backend, S3Backend | GcsBackend)
        try:
            if kind == "s3":
                return backend.fs.config_kwargs
            await backend.fs._set_session()
            return backend.fs.session._connector.limit
        finally:
            await store.aclose()

    async def configured() -> Any:
        options: dict[str, Any]
        if kind == "s3":
            options = {"config_kwargs": {"max_pool_connections": 7, "read_timeout": 3}}
        else:  # an aiohttp connector belongs to the running loop
            options = {"session_kwargs": {"connector": aiohttp.TCPConnector(limit=7)}}
        with fsspec_conf(kind, **options):
            return await pool()

    expected = {"max_pool_connections": 7, "read_timeout": 3} if kind == "s3" else 7
    assert anyio.run(configured) == expected


@pytest.mark.anyio
async def test_more_streams_than_the_default_pool_all_start(s3_endpoint: str) -> None:
    """aiobotocore's default pool has 10 connections: an 11th stream would wait for one."""
    url, key = f"s3://{BUCKET}/pool", "models/mdl-pool/runs/run-1/training.log"
    put(url, key, LOG[:MiB])
    store = Store.from_url(url, streams=16)
    first: list[bytes] = []
    try:
        with anyio.fail_after(30):
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(40):  # every stream holds its connection: none is finished
                    reader = await stack.enter_async_context(store.reading(key, 0, MiB))
                    first.append(await reader.read(64 * 1024))
    finally:
        await store.aclose()
    assert first == [LOG[: 64 * 1024]] * 40


BIG = training_log(40 * MiB, seed=9)  # five parts of the default 8 MiB
BIG_KEY = "models/mdl-parts/runs/run-pbig/training.log"


@pytest.fixture(scope="module")
def shaped(seeded: tuple[str, str, str]) -> Iterator[tuple[str, ShapingProxy]]:
    """The store behind the shaping proxy at its defaults, with a 40 MiB log."""
    kind, endpoint, _ = seeded
    root = f"{kind}://{BUCKET}/parts"
    put(root, BIG_KEY, BIG)
    put(
        root,
        "models/mdl-parts/runs/run-pbig/run.json",
        orjson.dumps({"run_id": "run-pbig", "status": "completed"}),
    )
    with ShapingProxy(endpoint) as proxy:
        yield kind, proxy


def shaped_store(shaped: tuple[str, ShapingProxy]) -> Store:
    kind, proxy = shaped
    with fsspec_conf(kind, **endpoint_options(kind, proxy.url)):
        return Store.from_url(f"{kind}://{BUCKET}/parts", streams=8)


@pytest.mark.anyio
async def test_no_request_reaches_the_store_after_the_reader_closed(
    shaped: tuple[str, ShapingProxy],
) -> None:
    _, proxy = shaped
    store = shaped_store(shaped)
    store.grow_after = MiB

    async def probe() -> int:
        """Requests of one 1-byte GET; it takes at least the proxy's latency, so requests
        sent before it began have been counted when it ends."""
        before = proxy.requests
        reader = await store.open(BIG_KEY, 0, 1)
        try:
            assert await reader.read(1) == BIG[:1]
        finally:
            await reader.aclose()
        return proxy.requests - before

    try:
        assert await probe() == 1
        async with store.reading(BIG_KEY, 0, len(BIG)) as reading:
            reader = reading.source
            assert isinstance(reader, ParallelReader)
            got = bytearray()
            while len(got) < 3 * MiB:
                got += await reader.read(MiB)
            assert reader.in_flight > 1
            await reader.aclose()
        assert got == BIG[: len(got)]
        assert store.read_ahead.used == 0
        await probe()
        assert await probe() == 1  # nothing else reached the store meanwhile
    finally:
        await store.aclose()


@pytest.fixture
def shaped_server(shaped: tuple[str, ShapingProxy]) -> Iterator[Running]:
    kind, proxy = shaped
    settings = Settings(storage_url=f"{kind}://{BUCKET}/parts", jwt_secret=SECRET)
    with serving_through(kind, proxy.url, settings) as running:
        yield running


def test_a_shaped_download_at_the_defaults_is_identical_and_a_range_reads_its_span(
    shaped_server: Running, shaped: tuple[str, ShapingProxy], make_token: TokenFactory
) -> None:
    _, proxy = shaped
    headers = {"Authorization": f"Bearer {make_token()}"}
    params = {"run_id": "run-pbig"}
    proxy.reset_counters()
    response = httpx.get(shaped_server.url + PATH, params=params, headers=headers, timeout=60)
    assert response.status_code == 200
    assert sha(response.content) == sha(BIG)
    assert proxy.requests >= 5  # a part each at least
    span = {"Range": f"bytes={20 * MiB}-{20 * MiB + 16 * 1024 - 1}"}
    proxy.reset_counters()  # the catalog is warm (its TTL): the log's bytes alone now
    response = httpx.get(
        shaped_server.url + PATH, params=params, headers={**headers, **span}, timeout=60
    )
    assert response.status_code == 206
    assert response.content == BIG[20 * MiB : 20 * MiB + 16 * 1024]
    assert 16 * 1024 < proxy.bytes_down < 64 * 1024


@pytest.mark.anyio
async def test_s3_parts_follow_the_objects_multipart_parts(s3_endpoint: str) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    data = LOG[: 12 * MiB + 3] if len(LOG) > 12 * MiB else (LOG * 2)[: 12 * MiB + 3]
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    key = "multipart/models/mdl-m/runs/run-m/training.log"
    client.upload_fileobj(io.BytesIO(data), BUCKET, key, Config=config)
    store = Store.from_url(f"s3://{BUCKET}/multipart", streams=8)
    store.parallel_min = 2 * MiB
    # Parts of the store's own size, then of two of them (as many as `part_size` holds).
    expected = {
        5 * MiB: [(MiB, 5 * MiB), (5 * MiB, 10 * MiB), (10 * MiB, len(data))],
        12 * MiB: [(MiB, 10 * MiB), (10 * MiB, len(data))],
    }
    try:
        for part_size, bounds in expected.items():
            store.part_size = part_size
            async with store.reading(key.removeprefix("multipart/"), MiB, len(data)) as reading:
                reader = reading.source
                assert isinstance(reader, ParallelReader)
                assert reader.bounds == bounds
                got = await drain(reader)
            assert got == data[MiB:]
    finally:
        await store.aclose()


async def drain(reader: ParallelReader) -> bytes:
    got = bytearray()
    while chunk := await reader.read(MiB):
        got += chunk
    return bytes(got)
