"""The ranged moto launcher (testkit/moto_ranged.py) answers per-part calls as S3 does.

HeadObject and GetObject with `PartNumber` on a multipart object give the part's length,
range and the object's part count, and GetObject the part's bytes, without moto reading
the whole object; ranged reads of the same object stay exact.
"""

from __future__ import annotations

import io
import os
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from testkit.emulators import BUCKET, S3_CREDENTIALS

MIB = 1 << 20
PART = 5 * MIB  # S3's least part size
# Three full parts and a short fourth; random, so that a part read at the wrong offset shows.
DATA = os.urandom(3 * PART + 12345)
KEY = "multipart/parts/object.bin"


@pytest.fixture(scope="module")
def client(s3_endpoint: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["key"],
        aws_secret_access_key=S3_CREDENTIALS["secret"],
    )
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    client.upload_fileobj(io.BytesIO(DATA), BUCKET, KEY, Config=config)
    return client


def test_head_object_with_a_part_number_gives_the_part_and_the_count(client: Any) -> None:
    head = client.head_object(Bucket=BUCKET, Key=KEY, PartNumber=1)
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == PART
    assert head["PartsCount"] == 4
    assert head["ContentRange"] == f"bytes 0-{PART - 1}/{len(DATA)}"
    last = client.head_object(Bucket=BUCKET, Key=KEY, PartNumber=4)
    assert last["ContentLength"] == 12345
    assert last["ContentRange"] == f"bytes {3 * PART}-{len(DATA) - 1}/{len(DATA)}"
    whole = client.head_object(Bucket=BUCKET, Key=KEY)
    assert whole["ContentLength"] == len(DATA)


@pytest.mark.parametrize("number", [1, 2, 4])
def test_get_object_with_a_part_number_gives_the_parts_bytes(client: Any, number: int) -> None:
    got = client.get_object(Bucket=BUCKET, Key=KEY, PartNumber=number)
    start = (number - 1) * PART
    expected = DATA[start : start + PART]
    assert got["PartsCount"] == 4
    assert got["ContentLength"] == len(expected)
    assert got["Body"].read() == expected


def test_a_part_number_past_the_last_is_refused(client: Any) -> None:
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.head_object(Bucket=BUCKET, Key=KEY, PartNumber=5)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 416)


def test_ranges_across_parts_stay_exact(client: Any) -> None:
    span = f"bytes={PART - 100}-{PART + 99}"
    body = client.get_object(Bucket=BUCKET, Key=KEY, Range=span)["Body"].read()
    assert body == DATA[PART - 100 : PART + 100]
    whole = client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert whole == DATA
