"""Range parsing and resolution (RFC 9110 section 14): examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.errors import RangeNotSatisfiable
from streamer.ranges import ByteRange, RangeSpec, parse_range, resolve


@pytest.mark.parametrize(
    ("header", "spec"),
    [
        ("bytes=0-499", RangeSpec(first=0, last=499)),
        ("bytes=500-", RangeSpec(first=500)),
        ("bytes=-500", RangeSpec(suffix=500)),
        ("Bytes=7-7", RangeSpec(first=7, last=7)),
        ("  bytes=1-2\t", RangeSpec(first=1, last=2)),
        ("bytes=1-2,", RangeSpec(first=1, last=2)),
        ("bytes=, 1-2 ,,", RangeSpec(first=1, last=2)),
        ("bytes=00010-0020", RangeSpec(first=10, last=20)),
        ("bytes=0-99999999999999999999999", RangeSpec(first=0, last=10**18)),  # past any end
    ],
)
def test_single_ranges(header: str, spec: RangeSpec) -> None:
    assert parse_range(header) == spec


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=5-4",  # last below first: invalid
        "bytes = 0-1",
        "bytes=0 - 1",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=\u0661-2",  # an Arabic-Indic digit is not a DIGIT
        "bytes=0-1, 4-5",  # several ranges are not served
        "bytes=0-1,-5",
        "items=0-1",
        "bytes 0-1",
        "0-1",
        "bytes=0-1;x",
        "bytes=--5",
    ],
)
def test_headers_that_are_ignored(header: str) -> None:
    assert parse_range(header) is None


def test_resolve_examples() -> None:
    assert resolve(RangeSpec(first=0, last=499), 10_000) == ByteRange(0, 500, 10_000)
    assert resolve(RangeSpec(first=9_500), 10_000) == ByteRange(9_500, 10_000, 10_000)
    assert resolve(RangeSpec(suffix=500), 10_000) == ByteRange(9_500, 10_000, 10_000)
    assert resolve(RangeSpec(suffix=50_000), 10_000) == ByteRange(0, 10_000, 10_000)
    assert resolve(RangeSpec(first=0, last=10**30), 10) == ByteRange(0, 10, 10)
    assert ByteRange(0, 500, 10_000).content_range() == "bytes 0-499/10000"


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (RangeSpec(first=10), 10),
        (RangeSpec(first=10, last=20), 10),
        (RangeSpec(first=0), 0),
        (RangeSpec(suffix=0), 10),
        (RangeSpec(suffix=0), 0),
    ],
)
def test_unsatisfiable(spec: RangeSpec, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        resolve(spec, size)
    assert raised.value.status == 416
    assert raised.value.headers == {"Content-Range": f"bytes */{size}"}


def test_suffix_of_an_empty_representation_selects_the_whole_body() -> None:
    assert resolve(RangeSpec(suffix=5), 0) is None


sizes = st.integers(min_value=0, max_value=300)
positions = st.integers(min_value=0, max_value=400)


def selected(header: str, data: bytes) -> bytes | None:
    """The bytes a 206 would carry; None for the whole body; raises for 416."""
    spec = parse_range(header)
    if spec is None:
        return None
    span = resolve(spec, len(data))
    return None if span is None else data[span.start : span.end]


@given(st.binary(max_size=300), positions, positions)
def test_int_range_is_python_slicing(data: bytes, first: int, last: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first:
        assert selected(header, data) is None
    elif first >= len(data):
        with pytest.raises(RangeNotSatisfiable):
            selected(header, data)
    else:
        assert selected(header, data) == data[first : last + 1]


@given(st.binary(max_size=300), positions)
def test_open_range_is_python_slicing(data: bytes, first: int) -> None:
    if first >= len(data):
        with pytest.raises(RangeNotSatisfiable):
            selected(f"bytes={first}-", data)
    else:
        assert selected(f"bytes={first}-", data) == data[first:]


@given(st.binary(min_size=1, max_size=300), st.integers(min_value=1, max_value=400))
def test_suffix_range_is_python_slicing(data: bytes, length: int) -> None:
    assert selected(f"bytes=-{length}", data) == data[-length:]


digits = st.builds(
    lambda zeros, number: "0" * zeros + number,
    st.sampled_from([0, 1, 5000]),
    st.one_of(
        st.integers(0, 400).map(str),
        st.sampled_from([17, 18, 19, 4300, 5000]).map(lambda n: "1" + "0" * n),
        st.sampled_from([18, 4301]).map(lambda n: "9" * n),
    ),
)


def _key(text: str) -> tuple[int, str]:
    """Orders decimal strings of any length as the numbers they write."""
    significant = text.lstrip("0")
    return len(significant), significant


def _int(text: str) -> int:
    """The number, or one past any test data's end for the longer ones."""
    return int(_key(text)[1] or "0") if _key(text)[0] <= 18 else 10**19


@given(st.binary(max_size=300), digits, st.one_of(st.none(), digits))
def test_positions_of_any_length_are_python_slicing(
    data: bytes, first: str, last: str | None
) -> None:
    # Python will not convert a string of over 4300 digits to an int; such a position is
    # still a position (past the end of any object), never a 500.
    header = f"bytes={first}-{last or ''}"
    start, stop = _int(first), None if last is None else _int(last) + 1
    if last is not None and _key(last) < _key(first):
        assert selected(header, data) is None
    elif start >= len(data):
        with pytest.raises(RangeNotSatisfiable):
            selected(header, data)
    else:
        assert selected(header, data) == data[start:stop]


@given(st.binary(min_size=1, max_size=300), digits)
def test_suffixes_of_any_length_are_python_slicing(data: bytes, length: str) -> None:
    if _int(length) == 0:
        with pytest.raises(RangeNotSatisfiable):
            selected(f"bytes=-{length}", data)
    else:
        assert selected(f"bytes=-{length}", data) == data[-_int(length) :]


@given(st.text(max_size=40), sizes)
def test_any_header_is_a_range_nothing_or_416(header: str, size: int) -> None:
    spec = parse_range(header)
    if spec is None:
        return
    try:
        span = resolve(spec, size)
    except RangeNotSatisfiable:
        return
    if span is not None:
        assert 0 <= span.start < span.end <= size == span.size
        assert span.length == span.end - span.start


@given(st.text(alphabet="bytes=0123456789-, \t", max_size=30))
def test_range_grammar_alphabet_never_crashes(header: str) -> None:
    spec = parse_range(header)
    assert spec is None or (spec.suffix is None) == (spec.first is not None)
