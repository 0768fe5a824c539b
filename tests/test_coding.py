"""Accept-Encoding negotiation and gzip on the fly, without I/O."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.coding import Chain, GzipEncoder, accepts_gzip
from streamer.encoders import LineEncoder, reference_encode
from testkit.dataset import LOG_A2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br, zstd", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("*", True),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;Q=0", False),
        ("*, gzip;q=0", False),
        ("*;q=0", False),
        ("gzip;q=0.5, identity", False),
        ("gzip, identity;q=0.5", True),
        ("gzip;q=1.5", False),  # malformed qvalue: the element is ignored
        ("gzip;q=abc", False),
        ("gzip;level=9", True),
        ("identity;q=0", False),
        (" gzip ;\tq=0.001 ", True),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@given(st.lists(st.binary(max_size=2000), max_size=20))
def test_gzip_encoder_round_trips(chunks: list[bytes]) -> None:
    encoder = GzipEncoder()
    out = b"".join(encoder.feed(chunk) for chunk in chunks) + encoder.finish()
    assert gzip.decompress(out) == b"".join(chunks)


@given(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=10))
def test_every_chunk_decodes_as_soon_as_it_is_sent(chunks: list[bytes]) -> None:
    encoder, inflate = GzipEncoder(), zlib.decompressobj(wbits=31)
    for chunk in chunks:
        assert inflate.decompress(encoder.feed(chunk)) == chunk
    assert inflate.decompress(encoder.finish()) == b""
    assert inflate.eof


def test_chain_encodes_then_compresses() -> None:
    chain = Chain([LineEncoder("ndjson", "ecs"), GzipEncoder()])
    out = b"".join(chain.feed(LOG_A2[i : i + 7]) for i in range(0, len(LOG_A2), 7))
    out += chain.finish()
    assert gzip.decompress(out) == reference_encode(LOG_A2, "ndjson", "ecs")
