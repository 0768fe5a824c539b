"""A model on S3 or GCS whose store is reached through a FaultProxy, and a server on it:
the parts the fault tests and the parallel-read tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from streamer.config import Settings
from streamer.storage import Store
from testkit.dataset import put
from testkit.emulators import BUCKET, FaultProxy, endpoint_options, fsspec_conf
from testkit.servers import SECRET, Running, serve_in_thread


@dataclass
class Faulty:
    """A store URL whose endpoint goes through `proxy`."""

    kind: str
    url: str
    proxy: FaultProxy

    def store(self, *, streams: int | None = None, **options: Any) -> Store:
        # The endpoint is read from fsspec's config when the filesystem is made.
        with fsspec_conf(self.kind, **endpoint_options(self.kind, self.proxy.url), **options):
            return Store.from_url(self.url, streams=streams)


def seed(kind: str, folder: str, model: str, logs: dict[str, tuple[str, bytes]]) -> str:
    """`model` in `folder` of the bucket, with a run a log for each item of `logs`
    (run_id: (file name, stored bytes)); the first run is completed, the others not. The
    store's URL."""
    root = f"{kind}://{BUCKET}/{folder}"
    put(root, f"models/{model}/model.json", orjson.dumps({"organization_id": "org-acme"}))
    for index, (run_id, (name, stored)) in enumerate(logs.items()):
        completed = "2026-03-13T11:00:00Z" if index == 0 else None
        document = {"run_id": run_id, "status": "completed", "completed_at": completed}
        put(root, f"models/{model}/runs/{run_id}/run.json", orjson.dumps(document))
        put(root, f"models/{model}/runs/{run_id}/{name}", stored)
    return root


@contextmanager
def faulty(kind: str, endpoint: str, url: str) -> Iterator[Faulty]:
    proxy = FaultProxy(endpoint)
    try:
        yield Faulty(kind, url, proxy)
    finally:
        proxy.close()


@contextmanager
def serving_through(kind: str, endpoint: str, settings: Settings) -> Iterator[Running]:
    """streamer with `settings`, its store reached at `endpoint`."""
    with fsspec_conf(kind, **endpoint_options(kind, endpoint)):
        servers = serve_in_thread(settings)
        running = next(servers)
    try:
        yield running
    finally:
        servers.close()


@contextmanager
def serving(faulty: Faulty) -> Iterator[Running]:
    """streamer on the proxied store, with chunks smaller than a cut, so that the response
    has started when the store fails."""
    settings = Settings(
        storage_url=faulty.url, jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=64 * 1024
    )
    with serving_through(faulty.kind, faulty.proxy.url, settings) as running:
        yield running


def download(
    url: str, token: str, params: dict[str, str] | None = None, **headers: str
) -> tuple[httpx.Response, bytes]:
    """The response and the bytes received; raises what httpx raises on a broken body."""
    received = bytearray()
    with httpx.stream(
        "GET",
        url,
        params=params,
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=60,
    ) as response:
        for chunk in response.iter_raw():
            received += chunk
    return response, bytes(received)


def assert_broken(url: str, token: str, fmt: str, log: bytes) -> None:
    """A download of `log` as `fmt` breaks off after some bytes and before the end; a txt
    one still announced the whole length, and what came is the log's start."""
    received = bytearray()
    headers = {"Authorization": f"Bearer {token}"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", url, params={"format": fmt}, headers=headers, timeout=60) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert 0 < len(received) < len(log)
    if fmt == "txt":
        assert int(response.headers["content-length"]) == len(log)
        assert bytes(received) == log[: len(received)]
    else:
        assert received.startswith(b"[") and not received.rstrip().endswith(b"]")
