"""The ``format=json`` encoder against SPEC section 3 and against its own reference."""

from __future__ import annotations

import json
import random
import re
from itertools import pairwise

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamer.encoders import (
    FIELD_NAMES,
    NATIVE,
    Fields,
    LineEncoder,
    NativeLineEncoder,
    PythonLineEncoder,
    Style,
    parse_line,
    reference_encode,
)
from testkit.strategies import any_log, log_line

STYLES: list[Style] = ["json", "ndjson"]
# Every property holds for both implementations: the native one (streamer._speedups) and
# the pure-Python one it falls back to.
IMPLEMENTATIONS = [
    pytest.param(NativeLineEncoder, id="native"),
    pytest.param(PythonLineEncoder, id="python"),
]
Implementation = type[PythonLineEncoder]


def spec_lines(data: bytes) -> list[bytes]:
    """SPEC's line model: "\\n" ends a line, a line-ending "\\r" goes, none after a last "\\n"."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def expected(data: bytes) -> list[dict[str, object]]:
    return [parse_line(number, line) for number, line in enumerate(spec_lines(data), start=1)]


def encode(
    chunks: list[bytes],
    style: Style = "json",
    max_line: int = 1 << 20,
    implementation: Implementation = LineEncoder,
) -> bytes:
    encoder = implementation(style, max_line=max_line)
    return b"".join([encoder.feed(chunk) for chunk in chunks]) + encoder.finish()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


def decode(output: bytes, style: Style) -> list[object]:
    """Parse the output with both orjson and json, and check that they agree."""
    if style == "json":
        parsed: list[object] = orjson.loads(output)
        assert json.loads(output) == parsed
        return parsed
    assert output == b"" or output.endswith(b"\n")
    parsed = [orjson.loads(line) for line in output.splitlines()]
    assert [json.loads(line) for line in output.splitlines()] == parsed
    return parsed


@given(data=any_log, cuts=st.lists(st.integers(min_value=0), max_size=12))
@example(data=b"abc\r", cuts=[3])
@example(data=b"\xe2\x82\xac\r\n", cuts=[1, 2, 4])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("style", STYLES)
def test_any_split_gives_the_spec_output(
    style: Style, implementation: Implementation, data: bytes, cuts: list[int]
) -> None:
    whole = encode([data], style, implementation=implementation)
    assert decode(whole, style) == expected(data)
    assert whole == reference_encode(data, style)
    assert encode(split_at(data, cuts), style, implementation=implementation) == whole


@given(
    data=any_log,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    max_line=st.integers(min_value=0, max_value=40),
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("style", STYLES)
def test_long_lines_streamed_in_pieces_give_the_same_output(
    style: Style, implementation: Implementation, data: bytes, cuts: list[int], max_line: int
) -> None:
    chunks = split_at(data, cuts)
    assert encode(chunks, style, max_line, implementation) == reference_encode(data, style)


@given(data=any_log)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("style", STYLES)
def test_one_byte_at_a_time(style: Style, implementation: Implementation, data: bytes) -> None:
    one_by_one = [data[i : i + 1] for i in range(len(data))]
    whole = encode([data], style, implementation=implementation)
    assert encode(one_by_one, style, implementation=implementation) == whole
    assert encode(one_by_one, style, max_line=3, implementation=implementation) == whole


@given(line=log_line())
def test_parse_line_agrees_with_the_spec_regex_on_text(line: bytes) -> None:
    """An independent reading of SPEC: decode first, then match the SPEC's regex in ASCII mode."""
    text = line.decode("utf-8", "replace")
    shape = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})) "
        r"\[([A-Za-z]+)\](?: (.*))?",
        text,
        re.ASCII | re.DOTALL,
    )
    timestamp, level, message = shape.groups("") if shape else (None, None, text)
    want = {"line": 7, "timestamp": timestamp, "level": level, "message": message}
    assert parse_line(7, line) == want


@pytest.mark.parametrize(
    ("line", "timestamp", "level", "message"),
    [
        (
            "2026-03-13T10:00:00.123Z [INFO] Initializing distributed training cluster.",
            "2026-03-13T10:00:00.123Z",
            "INFO",
            "Initializing distributed training cluster.",
        ),
        (
            "2026-03-13t10:00:00z [warn] lower t and z",
            "2026-03-13t10:00:00z",
            "warn",
            "lower t and z",
        ),
        ("2026-03-13T10:00:00+05:30 [DEBUG] x", "2026-03-13T10:00:00+05:30", "DEBUG", "x"),
        ("2026-03-13T10:00:00.5-08:00 [E] x", "2026-03-13T10:00:00.5-08:00", "E", "x"),
        (
            "9999-99-99T99:99:99Z [INFO] no calendar check",
            "9999-99-99T99:99:99Z",
            "INFO",
            "no calendar check",
        ),
        ("2026-03-13T10:00:00Z [INFO]", "2026-03-13T10:00:00Z", "INFO", ""),
        ("2026-03-13T10:00:00Z [INFO] ", "2026-03-13T10:00:00Z", "INFO", ""),
        ("2026-03-13T10:00:00Z [INFO]  two", "2026-03-13T10:00:00Z", "INFO", " two"),
        (
            '2026-03-13T10:00:00Z [INFO] "q" \\ é \x00',
            "2026-03-13T10:00:00Z",
            "INFO",
            '"q" \\ é \x00',
        ),
        ("2026-03-13T10:00:00Z [INFO] a\rb", "2026-03-13T10:00:00Z", "INFO", "a\rb"),
    ],
)
def test_shaped_lines(line: str, timestamp: str, level: str, message: str) -> None:
    want = {"line": 1, "timestamp": timestamp, "level": level, "message": message}
    assert parse_line(1, line.encode()) == want
    assert orjson.loads(encode([line.encode() + b"\n"])) == [want]


@pytest.mark.parametrize(
    "line",
    [
        "2026-03-13T10:00:00.123Z  [INFO] two spaces",
        "2026-03-13T10:00:00.123Z[INFO] missing space",
        "2026-03-13T10:00:00.123Z [INFO]x missing space after",
        "2026-03-13T10:00:00.123Z [INF0] digit in level",
        "٢٠٢٦-03-13T10:00:00.123Z [INFO] Arabic-Indic digits",
        "2026-03-13T10:00:00.\uff11\uff12\uff13Z [INFO] full-width digits",
        "2026-03-13T10:00:00.123Z [] empty level",
        "2026-03-13T10:00:00.123Z [ÉTAT] non-ASCII letter",
        "2026-03-13T10:00:00.123Z [\uff29\uff2e\uff26\uff2f] full-width letters",
        "2026-03-13T10:00:00.123 [INFO] no zone",
        "2026-03-13T10:00:00.Z [INFO] empty fraction",
        "2026-03-13T10:00:00+0530 [INFO] zone without colon",
        "2026-03-13 10:00:00Z [INFO] space for T",
        "[INFO] no timestamp",
        " 2026-03-13T10:00:00Z [INFO] leading space",
        "2026-03-13T10:00:00Z [INFO]\r",
    ],
)
def test_other_shapes_keep_the_whole_line(line: str) -> None:
    got = parse_line(3, line.encode())
    assert got == {"line": 3, "timestamp": None, "level": None, "message": line}
    assert orjson.loads(encode([b"\n\n" + line.encode() + b"x\n"]))[2] == {
        **got,
        "message": line + "x",
    }


@pytest.mark.parametrize(
    ("data", "messages"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"\n\n", ["", ""]),
        (b"a\r\nb\r\n", ["a", "b"]),
        (b"a\rb\n", ["a\rb"]),
        (b"a\r\rb\r\r\n", ["a\r\rb\r"]),
        (b"last line", ["last line"]),
        (b"a\nlast\r", ["a", "last"]),
        (b"a\n\r", ["a", ""]),
        (b"\r", [""]),
        (b"bad \xff \xe2\x82 end\n", ["bad \ufffd \ufffd end"]),
    ],
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("style", STYLES)
def test_line_endings(
    style: Style, implementation: Implementation, data: bytes, messages: list[str]
) -> None:
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data[:-1], data[-1:]]):
        got = decode(encode(chunks, style, implementation=implementation), style)
        assert [obj["message"] for obj in got if isinstance(obj, dict)] == messages
        assert [obj["line"] for obj in got if isinstance(obj, dict)] == list(
            range(1, len(messages) + 1)
        )


def test_empty_log() -> None:
    assert encode([]) == b"[]"
    assert encode([b"", b""]) == b"[]"
    assert encode([], "ndjson") == b""
    assert reference_encode(b"") == b"[]"
    assert reference_encode(b"", "ndjson") == b""


def test_lone_cr_in_its_own_chunk_is_dropped() -> None:
    for style in STYLES:
        encoder = LineEncoder(style)
        out = encoder.feed(b"2026-03-13T10:00:00Z [INFO] done") + encoder.feed(b"\r")
        assert decode(out + encoder.finish(), style) == expected(
            b"2026-03-13T10:00:00Z [INFO] done"
        )
        # ...but kept when more of the same line follows.
        encoder = LineEncoder(style)
        out = b"".join(encoder.feed(chunk) for chunk in [b"a", b"\r", b"b", b"\r", b"\n"])
        assert decode(out + encoder.finish(), style) == expected(b"a\rb")


def test_byte_layout() -> None:
    data = b'2026-03-13T10:00:00.123Z [INFO] Start "x".\n\n'
    first = (
        b'{"line":1,"timestamp":"2026-03-13T10:00:00.123Z","level":"INFO",'
        b'"message":"Start \\"x\\"."}'
    )
    second = b'{"line":2,"timestamp":null,"level":null,"message":""}'
    assert encode([data]) == b"[\n" + first + b",\n" + second + b"\n]"
    assert encode([data], "ndjson") == first + b"\n" + second + b"\n"


def test_first_output_opens_the_array_and_partial_lines_wait() -> None:
    encoder = LineEncoder()
    assert encoder.feed(b"no newline yet") == b""
    assert encoder.feed(b" still none") == b""
    assert encoder.feed(b"\nnext").startswith(b'[\n{"line":1,')
    assert encoder.feed(b"\n").startswith(b',\n{"line":2,')
    assert encoder.finish() == b"\n]"


@pytest.mark.parametrize(
    "head",
    [b"2026-03-13T10:00:00.123Z [INFO] ", b"plain ", b"2026-03-13T10:00:00.123Z [INFO]"],
)
def test_a_long_line_is_sent_in_pieces(head: bytes) -> None:
    """Output per feed stays proportional to the chunk, however long a line is."""
    chunk_size, max_line = 4096, 16384
    data = head + 'é"\\\r'.encode() * 200_000 + b"\r\nafter\n"
    encoder = LineEncoder(max_line=max_line)
    outs = [encoder.feed(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
    outs.append(encoder.finish())
    # An escaped byte takes at most 6 bytes ("\u001f").
    assert max(map(len, outs)) <= 6 * (max_line + 2 * chunk_size)
    assert b"".join(outs) == reference_encode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"2026-03-13T10:00:00." + b"1" * 5000 + b"Z [INFO] ok\n",
        b"2026-03-13T10:00:00Z [" + b"A" * 5000 + b"]\r\n",
        b"2026-03-13T10:00:00Z [INFO]\r\n",
        b"2026-03-13T10:00:00Z [INFO]\rx\n",
        b"12:34-56+78" * 500 + b"\n",
    ],
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_long_line_whose_shape_is_still_open_is_held(
    data: bytes, implementation: Implementation
) -> None:
    for size in (1, 7):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        for max_line in (0, 10):
            assert encode(
                chunks, max_line=max_line, implementation=implementation
            ) == reference_encode(data)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("style", STYLES)
def test_large_logs_in_large_chunks(style: Style, implementation: Implementation) -> None:
    rng = random.Random(7)
    pieces = [
        b"2026-03-13T10:00:00.123Z [INFO] step ",
        b"2026-03-13t10:00:00+05:30 [warn]",
        b'"quoted" \\ ',
        "é€😀".encode(),
        b"\xff\xe2\x82",
        b"\t\x00",
        b"\r",
        b"\r\n",
        b"\n",
        b"plain ",
    ]
    data = b"".join(rng.choice(pieces) for _ in range(100_000))
    want = reference_encode(data, style)
    for size in (1 << 20, 100_003, 65_536):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert encode(chunks, style, implementation=implementation) == want


@given(data=any_log, cuts=st.lists(st.integers(min_value=0), max_size=6))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("fields", list(FIELD_NAMES))
@pytest.mark.parametrize("style", STYLES)
def test_field_names_rename_the_three_fields(
    style: Style, fields: Fields, implementation: Implementation, data: bytes, cuts: list[int]
) -> None:
    encoder = implementation(style, fields, max_line=64)
    out = b"".join(encoder.feed(chunk) for chunk in split_at(data, cuts)) + encoder.finish()
    assert out == reference_encode(data, style, fields)
    renamed = [
        dict(zip(["line", *FIELD_NAMES[fields]], item.values(), strict=True))
        for item in expected(data)
    ]
    assert decode(out, style) == renamed


def test_field_names_of_each_platform() -> None:
    line = b"2026-03-13T10:00:00Z [WARN] disk"
    assert parse_line(1, line, "ecs") == {
        "line": 1,
        "@timestamp": "2026-03-13T10:00:00Z",
        "log.level": "WARN",
        "message": "disk",
    }
    assert parse_line(1, line, "datadog") == {
        "line": 1,
        "timestamp": "2026-03-13T10:00:00Z",
        "status": "WARN",
        "message": "disk",
    }
    assert parse_line(2, b"plain", "otel") == {
        "line": 2,
        "Timestamp": None,
        "SeverityText": None,
        "Body": "plain",
    }


def test_the_native_encoder_is_built() -> None:
    """gcc and Python's headers are on every machine here: the fast path must be there."""
    assert NATIVE
    assert LineEncoder is NativeLineEncoder


@pytest.mark.parametrize(
    "bad",
    [
        b"\xed\xa0\x80",  # a surrogate
        b"\xed\x9f\xbf",  # the last code point before them (valid)
        b"\xe0\x80\xaf",  # overlong
        b"\xc0\xaf",
        b"\xc1\xbf",
        b"\xf0\x8f\xbf\xbf",
        b"\xf0\x90\x80\x80",  # U+10000 (valid)
        b"\xf4\x8f\xbf\xbf",  # U+10FFFF (valid)
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xf5\x80\x80\x80",
        b"\xff",
        b"\xe2\x82",  # cut short
        b"\xf0\x9f\x98",
        b"\xc3",
        b"\x80\xbf",
    ],
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_utf8_edge_cases_are_replaced_as_python_does(
    bad: bytes, implementation: Implementation
) -> None:
    for data in (b"a" + bad + b"b\n", bad, b"12345678" + bad, b"2026-03-13T10:00:00Z [I] " + bad):
        assert encode([data], implementation=implementation) == reference_encode(data)
