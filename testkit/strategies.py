"""Hypothesis strategies for logs: realistic lines, mostly well-formed, with the near misses
that matter (timestamps and levels almost right, text that is not UTF-8, every line ending).

Rules: strategies only, no assertions; shared by the encoder's and the page reader's tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

digits = st.text("0123456789", min_size=2, max_size=2)
timestamps = st.builds(
    lambda date, t, clock, fraction, zone: f"{date}{t}{clock}{fraction}{zone}",
    st.sampled_from(["2026-03-13", "1999-12-31", "0000-99-99", "2026-3-13", "٢٠٢٦-03-13"]),
    st.sampled_from(["T", "t", " ", "T"]),
    st.builds(lambda h, m, s: f"{h}:{m}:{s}", digits, digits, digits),
    st.sampled_from(["", ".1", ".123", ".123456789", ".", ".1a"]),
    st.sampled_from(["Z", "z", "+05:30", "-08:00", "", "+0530", "Z "]),
)
levels = st.sampled_from(
    [
        "INFO",
        "DEBUG",
        "Warning",
        "e",
        "",
        "INFO1",
        "ÉTAT",
        "IN FO",
        "[INFO]",
        "\uff29\uff2e\uff26\uff2f",
    ]
)
messages = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(['"quoted"', "\\", "\\u0041", "\r", "\t", "\x00", "ü", "€", "😀", " "]),
        st.binary(max_size=4).map(lambda b: b.decode("latin-1")),
    ),
    max_size=5,
).map("".join)


@st.composite
def log_line(draw: st.DrawFn) -> bytes:
    timestamp, level, message = draw(timestamps), draw(levels), draw(messages)
    gap = draw(st.sampled_from([" ", " ", "  ", "", "\t"]))
    after = draw(st.sampled_from([" ", " ", "", "  ", "x"]))
    line = f"{timestamp}{gap}[{level}]{after}{message}".encode("utf-8", "surrogatepass")
    # Bytes that are not UTF-8: lone continuation bytes, cut sequences, overlongs.
    junk = draw(st.sampled_from([b"", b"", b"\xff", b"\xe2\x82", b"\x80", b"\xc0\xaf"]))
    return line + junk


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(log_line(), max_size=8))
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r\r\n"]), min_size=len(lines)))
    data = b"".join(line + end for line, end in zip(lines, endings, strict=False))
    return data + draw(st.sampled_from([b"", b"\r", b"tail", b"tail\r", b"\n"]))


any_log = st.one_of(logs(), st.binary(), st.binary(max_size=40).map(lambda b: b"\r\n" * 2 + b))
