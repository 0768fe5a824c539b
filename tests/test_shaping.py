"""The network model (testkit/shaping.py) and the ranged moto launcher (testkit/moto_ranged.py).

Through the shaping proxy every byte arrives unchanged, requests are counted exactly, and
the proxy's own records show that no response started before its latency and that no
connection got ahead of its pacing. moto serves a small range of a large object without
reading the object.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import pytest

from testkit.emulators import BUCKET, S3_CREDENTIALS, gcs_options, s3_options, start_moto
from testkit.shaping import BANDWIDTH, BURST, LATENCY_S, RequestHeads, ShapingProxy

KIB = 1024
MIB = 1024 * KIB
# Not a power of two, so that a range read at the wrong offset shows.
BLOCK = os.urandom(MIB + 7)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["key"],
        aws_secret_access_key=S3_CREDENTIALS["secret"],
    )


def get(client: Any, key: str, range_: str | None = None) -> bytes:
    extra = {"Range": range_} if range_ else {}
    body: bytes = client.get_object(Bucket=BUCKET, Key=key, **extra)["Body"].read()
    return body


# Request boundaries, found without I/O.

PUT = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\n!!"
GET = b"GET /b/k HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"


@pytest.mark.parametrize("step", [1, 2, 3, 5, 1000])
def test_request_heads_are_found_however_the_stream_is_cut(step: int) -> None:
    # The PUT's body holds a blank line of its own: only the Content-Length says it is body.
    stream = GET + PUT + GET + b"\r\n" + GET
    heads = RequestHeads()
    counts = [heads.feed(stream[i : i + step]) for i in range(0, len(stream), step)]
    assert sum(counts) == 4
    assert not heads.opaque


def test_a_chunked_request_body_makes_the_stream_opaque() -> None:
    chunked = b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    heads = RequestHeads()
    assert heads.feed(GET + chunked + GET) == 2
    assert heads.opaque
    assert heads.feed(GET) == 0


def test_a_bad_content_length_makes_the_stream_opaque() -> None:
    heads = RequestHeads()
    assert heads.feed(b"PUT /b HTTP/1.1\r\nContent-Length: ten\r\n\r\n" + GET) == 1
    assert heads.opaque


def test_the_defaults_model_s3_in_region() -> None:
    assert (LATENCY_S, BANDWIDTH, BURST) == (0.020, 80_000_000, 256 * KIB)


# Through the proxy, on the emulators.


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def stored(s3_endpoint: str) -> tuple[str, bytes]:
    """A 4 MiB object, written straight to moto."""
    key, data = "shaping/object.bin", BLOCK * 4
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=data)
    return key, data


def test_boto3_reads_through_the_proxy_are_byte_identical(
    proxy: ShapingProxy, stored: tuple[str, bytes]
) -> None:
    key, data = stored
    client = s3_client(proxy.url)
    assert sha256(get(client, key)) == sha256(data)
    spans = [(0, 16 * KIB), (MIB - 3, 2 * MIB + 5), (len(data) - 100, len(data))]
    proxy.reset_counters()
    for start, end in spans:
        body = get(client, key, f"bytes={start}-{end - 1}")
        assert sha256(body) == sha256(data[start:end])
    assert proxy.requests == len(spans)


def test_uploads_through_the_proxy_are_byte_identical(
    proxy: ShapingProxy, s3_endpoint: str
) -> None:
    data = BLOCK * 3
    s3_client(proxy.url).put_object(Bucket=BUCKET, Key="shaping/uploaded.bin", Body=data)
    assert proxy.requests == 1
    assert sha256(get(s3_client(s3_endpoint), "shaping/uploaded.bin")) == sha256(data)


def test_s3fs_reads_through_the_proxy_are_byte_identical(
    proxy: ShapingProxy, stored: tuple[str, bytes]
) -> None:
    key, data = stored
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_options(proxy.url))
    assert sha256(fs.cat_file(f"{BUCKET}/{key}")) == sha256(data)
    part = fs.cat_file(f"{BUCKET}/{key}", start=3 * MIB + 1, end=3 * MIB + 65 * KIB)
    assert sha256(part) == sha256(data[3 * MIB + 1 : 3 * MIB + 65 * KIB])
    with fs.open(f"{BUCKET}/{key}", "rb", block_size=MIB) as f:
        assert sha256(f.read()) == sha256(data)


@pytest.fixture(scope="module")
def gcs_stored(gcs_endpoint: str) -> tuple[str, bytes]:
    """A 2 MiB object in fake-gcs-server, which keeps connections open between requests
    (moto's server closes each after its response)."""
    path, data = f"{BUCKET}/shaping/object.bin", BLOCK * 2
    fsspec.filesystem("gs", skip_instance_cache=True, **gcs_options(gcs_endpoint)).pipe(path, data)
    return path, data


def test_a_kept_alive_connection_carries_every_request_intact(
    gcs_endpoint: str, gcs_stored: tuple[str, bytes]
) -> None:
    path, data = gcs_stored
    with ShapingProxy(gcs_endpoint) as proxy:
        fs = fsspec.filesystem("gs", skip_instance_cache=True, **gcs_options(proxy.url))
        assert sha256(fs.cat_file(path)) == sha256(data)
        spans = [(5, MIB + 9), (0, 1), (len(data) - 16 * KIB, len(data))]
        proxy.reset_counters()
        for start, end in spans:
            assert sha256(fs.cat_file(path, start=start, end=end)) == sha256(data[start:end])
        assert proxy.requests == len(spans)
        # No new connection: the three requests went over the first read's.
        assert proxy.connections == 0


def test_moto_answers_a_range_it_does_not_serve_with_the_whole_object(
    s3_endpoint: str, stored: tuple[str, bytes]
) -> None:
    key, data = stored
    client = s3_client(s3_endpoint)
    for range_ in ("bytes=0-1,5-6", "bytes=9-3", "bytes=x"):
        assert sha256(get(client, key, range_)) == sha256(data)


def test_a_small_range_costs_only_its_bytes(proxy: ShapingProxy, stored: tuple[str, bytes]) -> None:
    key, data = stored
    body = get(s3_client(proxy.url), key, f"bytes={2 * MIB}-{2 * MIB + 16 * KIB - 1}")
    assert body == data[2 * MIB : 2 * MIB + 16 * KIB]
    assert proxy.requests == 1
    assert 16 * KIB < proxy.bytes_down < 20 * KIB


def test_no_response_starts_before_the_latency(
    s3_endpoint: str, stored: tuple[str, bytes], gcs_endpoint: str, gcs_stored: tuple[str, bytes]
) -> None:
    key, data = stored
    with ShapingProxy(s3_endpoint, latency_s=0.05, bandwidth=float("inf")) as proxy:
        client = s3_client(proxy.url)
        for n in range(3):
            assert (
                get(client, key, f"bytes={n * KIB}-{n * KIB + 99}") == data[n * KIB : n * KIB + 100]
            )
        assert proxy.requests == 3
        assert proxy.min_delay_s >= 0.05
    path, data = gcs_stored
    with ShapingProxy(gcs_endpoint, latency_s=0.05, bandwidth=float("inf")) as proxy:
        fs = fsspec.filesystem("gs", skip_instance_cache=True, **gcs_options(proxy.url))
        for n in range(5):
            assert (
                fs.cat_file(path, start=n * KIB, end=n * KIB + 100) == data[n * KIB : n * KIB + 100]
            )
        assert proxy.requests == 5
        assert proxy.connections == 1
        assert proxy.min_delay_s >= 0.05


def test_an_unshaped_proxy_adds_no_latency_of_its_own(
    stored: tuple[str, bytes], s3_endpoint: str
) -> None:
    # The record the latency test relies on measures: without latency it is not inflated.
    key, _ = stored
    with ShapingProxy(s3_endpoint, latency_s=0, bandwidth=float("inf")) as proxy:
        client = s3_client(proxy.url)
        get(client, key, "bytes=0-9")
        get(client, key, "bytes=0-9")
        assert proxy.requests == 2
        assert 0 < proxy.min_delay_s < 0.05


def test_no_connection_gets_ahead_of_its_pacing(
    s3_endpoint: str, stored: tuple[str, bytes]
) -> None:
    key, data = stored
    with ShapingProxy(s3_endpoint, latency_s=0, bandwidth=8_000_000, burst=32 * KIB) as proxy:
        client = s3_client(proxy.url)
        assert sha256(get(client, key)) == sha256(data)
        assert sha256(get(client, key, f"bytes={MIB}-")) == sha256(data[MIB:])
        assert proxy.bytes_down > 2 * len(data) - MIB
        # Float rounding of the running bound is far below one byte.
        assert proxy.pacing_excess < 1


# moto through testkit/moto_ranged.py


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.mark.slow
def test_moto_serves_a_small_range_of_a_large_object_without_reading_it() -> None:
    size = 256 * MIB
    emulator, endpoint = start_moto()
    try:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        data = BLOCK * (size // len(BLOCK))
        client.put_object(Bucket=BUCKET, Key="large.bin", Body=data)
        pid = emulator.process.pid
        before = _status(pid)["VmRSS"]
        # Reset the peak, so that VmHWM is the peak of the ranged GET alone.
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        start = 200 * MIB + 3
        body = get(client, "large.bin", f"bytes={start}-{start + 16 * KIB - 1}")
        assert body == data[start : start + 16 * KIB]
        assert _status(pid)["VmHWM"] - before < size // 4
    finally:
        emulator.stop()
