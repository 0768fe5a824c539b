"""Throughput from S3 (moto) and GCS (fake-gcs-server): streamer next to direct reads.

    python -m bench.stores [--size 200MiB] [--repeat 3]

One run starts both emulators, writes one object of `--size` to each, then reads it with
the library alone (boto3, s3fs, gcsfs), through streamer's storage layer, and through
`streamer serve` over HTTP with a minimal socket client (httpx and curl are slower than
the server, bench/README.md#results). Every figure is the median of `--repeat` reads, in
MB/s (10^6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import fsspec
import orjson

from streamer.auth import issue_token
from streamer.demo import training_log
from streamer.storage import ObjectReader, Store
from streamer.storage.gcs import GcsBackend
from streamer.storage.readers import Ranged
from streamer.storage.s3 import S3Backend
from testkit.emulators import (
    BUCKET,
    Emulator,
    fake_gcs,
    free_port,
    fsspec_conf,
    gcs_options,
    make_bucket,
    moto_server,
    s3_options,
)

MiB = 1024 * 1024
CHUNK = MiB
SECRET = "bench-secret-of-at-least-thirty-two-bytes"
KEY = "models/mdl-bench/runs/run-bench/training.log"
BOTO3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(MiB|GiB|KiB|B)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    scale = {"KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, "B": 1, None: 1}[match.group(2)]
    return int(match.group(1)) * scale


def seed(root: str, size: int) -> None:
    fs = fsspec.filesystem(root.split("://")[0], skip_instance_cache=True)
    path = root.split("://", 1)[1]
    fs.pipe_file(f"{path}/models/mdl-bench/model.json", orjson.dumps({"organization_id": "o"}))
    run = {"run_id": "run-bench", "status": "completed", "completed_at": "2026-03-13T11:00:00Z"}
    fs.pipe_file(f"{path}/models/mdl-bench/runs/run-bench/run.json", orjson.dumps(run))
    block = training_log(MiB)[:MiB]
    with fs.open(f"{path}/{KEY}", "wb", block_size=64 * MiB) as file:
        for _ in range(size // MiB):
            file.write(block)
        file.write(block[: size % MiB])


def timed(read: Callable[[], int]) -> float:
    """MB/s of one read; checks that it read something."""
    started = time.perf_counter()
    count = read()
    elapsed = time.perf_counter() - started
    assert count > 0
    return count / elapsed / 1e6


def boto3_streamed(endpoint: str, path: str) -> int:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **BOTO3_KEYS)
    bucket, key = path.split("/", 1)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    total = sum(len(chunk) for chunk in body.iter_chunks(CHUNK))
    body.close()
    return total


async def s3fs_open_async(path: str) -> int:
    fs = fsspec.filesystem("s3", asynchronous=True, skip_instance_cache=True)
    session = await fs.set_session()
    file = await fs.open_async(path, "rb")
    total = 0
    while chunk := await file.read(CHUNK):
        total += len(chunk)
    await session.close()
    return total


async def gcsfs_cat(path: str, size: int, block: int | None) -> int:
    """gcsfs's own reads: sequential ranged `_cat_file` of `block` bytes, or one GET."""
    fs = fsspec.filesystem("gs", asynchronous=True, skip_instance_cache=True)
    total = 0
    if block is None:
        total = len(await fs._cat_file(path))
    else:
        for start in range(0, size, block):
            total += len(await fs._cat_file(path, start=start, end=min(start + block, size)))
    await fs.session.close()
    return total


async def store_read(url: str, size: int, ranged: bool = False) -> int:
    """streamer's storage layer: Store.open (streamed GET), or the generic ranged reader."""
    store = Store.from_url(url)
    if ranged:
        backend = store.backend
        assert isinstance(backend, S3Backend | GcsBackend)
        fs, path = backend.fs, backend.path(KEY)

        async def cat(first: int, stop: int) -> bytes:
            data: bytes = await fs._cat_file(path, start=first, end=stop)
            return data

        reader: ObjectReader = Ranged(cat, 0, size)
    else:
        reader = await store.open(KEY, end=size)
    total = 0
    while chunk := await reader.read(CHUNK):
        total += len(chunk)
    await reader.aclose()
    await store.aclose()
    return total


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class AfterFirst:
    """Bytes, seconds and this process's CPU seconds from the first chunk on: the body
    alone, without the time the store takes to send its first byte."""

    def __init__(self) -> None:
        self.bytes, self.started = 0, (0.0, 0.0)

    def add(self, chunk: bytes) -> None:
        if self.started == (0.0, 0.0):
            self.started = (time.perf_counter(), _cpu_s())
        else:
            self.bytes += len(chunk)

    def figures(self) -> tuple[float, float]:
        """(MB/s, CPU s/GiB) of the body after its first chunk."""
        wall, cpu = time.perf_counter() - self.started[0], _cpu_s() - self.started[1]
        assert self.bytes > 0
        return self.bytes / wall / 1e6, cpu / (self.bytes / (1024 * MiB))


def boto3_body(endpoint: str, path: str) -> tuple[float, float]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **BOTO3_KEYS)
    bucket, key = path.split("/", 1)
    client.head_bucket(Bucket=bucket)
    meter = AfterFirst()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in body.iter_chunks(CHUNK):
        meter.add(chunk)
    body.close()
    return meter.figures()


async def store_body(url: str, size: int) -> tuple[float, float]:
    store = Store.from_url(url)
    reader = await store.open(KEY, end=size)
    meter = AfterFirst()
    while chunk := await reader.read(CHUNK):
        meter.add(chunk)
    await reader.aclose()
    await store.aclose()
    return meter.figures()


def socket_download(port: int, token: str) -> int:
    """A minimal HTTP/1.1 client: one GET, the body counted into a reused buffer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        path = "/api/v1/models/mdl-bench/training-metrics/logs/download"
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            more = sock.recv(65536)
            if not more:
                raise RuntimeError("no response")
            head += more
        header, _, body = head.partition(b"\r\n\r\n")
        if not header.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(header.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length: (\d+)", header).group(1))  # type: ignore[union-attr]
        total, buffer = len(body), bytearray(4 * MiB)
        while total < length:
            got = sock.recv_into(buffer)
            if not got:
                raise RuntimeError("short body")
            total += got
        return total


def serve(url: str, kind: str, options: dict[str, Any]) -> tuple[Emulator, int]:
    port = free_port()
    env = {
        **os.environ,
        "STREAMER_STORAGE_URL": url,
        "STREAMER_JWT_SECRET": SECRET,
        f"FSSPEC_{kind.upper()}": json.dumps(options),
    }
    args = [sys.executable, "-m", "streamer", "serve", "--port", str(port)]
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        return Emulator("streamer", args, "Uvicorn running on"), port
    finally:
        os.environ.clear()
        os.environ.update(saved)


def median_row(name: str, runs: list[float]) -> str:
    figures = ", ".join(f"{r:.0f}" for r in runs)
    return f"| {name} | {statistics.median(runs):.0f} | {figures} |"


def body_rows(endpoint: str, size: int, repeat: int) -> list[str]:
    """S3 bodies after their first byte, in this process, the two readers in alternation."""
    url, path = f"s3://{BUCKET}/bench", f"{BUCKET}/bench/{KEY}"
    runs: dict[str, list[tuple[float, float]]] = {"boto3 streamed body": [], "Store.open": []}
    with fsspec_conf("s3", **s3_options(endpoint)):
        for _ in range(repeat):
            runs["boto3 streamed body"].append(boto3_body(endpoint, path))
            runs["Store.open"].append(asyncio.run(store_body(url, size)))
    return [
        f"| s3 | {name} | {statistics.median(r[0] for r in got):.0f}"
        f" | {statistics.median(r[1] for r in got):.2f} |"
        for name, got in runs.items()
    ]


def bench_store(kind: str, endpoint: str, size: int, repeat: int) -> list[str]:
    options = s3_options(endpoint) if kind == "s3" else gcs_options(endpoint)
    url = f"{kind}://{BUCKET}/bench"
    path = f"{BUCKET}/bench/{KEY}"
    rows: list[str] = []
    with fsspec_conf(kind, **options):
        make_bucket(kind)
        seed(url, size)
        cases: list[tuple[str, Callable[[], int]]] = []
        if kind == "s3":
            cases += [
                (
                    "boto3 get_object, streamed body, 1 MiB chunks",
                    lambda: boto3_streamed(endpoint, path),
                ),
                ("s3fs open_async, 1 MiB reads", lambda: asyncio.run(s3fs_open_async(path))),
            ]
        else:
            cases += [
                (
                    "gcsfs _cat_file, sequential 8 MiB ranges",
                    lambda: asyncio.run(gcsfs_cat(path, size, 8 * MiB)),
                ),
                (
                    "gcsfs _cat_file, whole object in one GET",
                    lambda: asyncio.run(gcsfs_cat(path, size, None)),
                ),
                (
                    "streamer's generic reader (sequential 1 MiB ranged _cat_file)",
                    lambda: asyncio.run(store_read(url, size, ranged=True)),
                ),
            ]
        cases.append(
            (
                "streamer Store.open (one streamed GET), 1 MiB reads",
                lambda: asyncio.run(store_read(url, size)),
            )
        )
        for name, read in cases:
            rows.append(median_row(f"{kind} | {name}", [timed(read) for _ in range(repeat)]))
        server, port = serve(url, kind, options)
        try:
            token = issue_token(SECRET, "bench", "o", ["model:read"])
            runs = [timed(lambda: socket_download(port, token)) for _ in range(repeat)]
            rows.append(median_row(f"{kind} | streamer serve over HTTP, socket client", runs))
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=200 * MiB)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with moto_server() as s3, fake_gcs() as gcs:
        rows += bench_store("s3", s3, args.size, args.repeat)
        bodies = body_rows(s3, args.size, args.repeat)
        rows += bench_store("gs", gcs, args.size, args.repeat)
    print(f"object {args.size / MiB:.0f} MiB, medians of {args.repeat}, MB/s")
    print("| store | reader | MB/s | runs |")
    print("|---|---|---|---|")
    for row in rows:
        print(row)
    print("\nS3 body after its first byte, in this process (medians):")
    print("| store | reader | MB/s | CPU s/GiB |")
    print("|---|---|---|---|")
    for row in bodies:
        print(row)


if __name__ == "__main__":
    main()
