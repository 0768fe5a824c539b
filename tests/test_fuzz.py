"""The fuzzer's corpus and every failing input it ever found, replayed against both encoders.

`make sanitize` and `make fuzz` run tests/fuzz/encoder.py under AddressSanitizer and
UndefinedBehaviorSanitizer; here the same cases run in the normal build, so that a fixed
failure stays fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer import encoders
from tests.fuzz.encoder import Case, check

FUZZ = Path(__file__).parent / "fuzz"
INPUTS = sorted(
    path
    for folder in ("corpus", "regressions")
    for path in (FUZZ / folder).iterdir()
    if not path.name.startswith(".")
)


def test_there_is_a_corpus() -> None:
    assert len([path for path in INPUTS if path.parent.name == "corpus"]) >= 10


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("path", INPUTS, ids=lambda path: f"{path.parent.name}/{path.name[:16]}")
def test_replay(path: Path, native: bool) -> None:
    check(path.read_bytes(), native=native)


def test_a_case_takes_its_options_from_the_first_bytes() -> None:
    case = Case.from_bytes(b"\x07\x02\x05\x01" + b"abc\ndef")
    assert (case.style, case.fields, case.max_line) == ("ndjson", "otel", 0)
    assert case.chunks() == [b"a", b"bc\nd", b"ef"]
    assert Case.from_bytes(b"").log == b""


def test_check_finds_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """check() can fail: against a reference that drops the last line, it does."""
    monkeypatch.setattr(encoders, "reference_encode", lambda data, *_: b"[]")
    with pytest.raises(AssertionError, match="reference"):
        check(b"\x00\x00a\nb")
