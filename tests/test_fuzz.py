"""The fuzzer's corpus and every failing input it ever found, replayed against both encoders.

`make sanitize` and `make fuzz` run tests/fuzz/encoder.py under AddressSanitizer and
UndefinedBehaviorSanitizer; here the same cases run in the normal build, so that a fixed
failure stays fixed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamer import encoders
from tests.fuzz.encoder import Case, check

ROOT = Path(__file__).parent.parent
FUZZ = ROOT / "tests" / "fuzz"
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


# (what the source says, what the broken copy says instead, what the sanitizer reports)
BUGS = [
    pytest.param(
        "joined = PyMem_Malloc(size ? (size_t)size : 1);",
        "joined = PyMem_Malloc(size > 1 ? (size_t)size - 1 : 1);",
        "AddressSanitizer: heap-buffer-overflow",
        id="heap-overflow",
    ),
    pytest.param(
        "if (n < 20) return 0;",
        "if (n < 20 || (1 << (int)n) == 3) return 0;",
        "runtime error: shift exponent",
        id="undefined-shift",
    ),
]


@pytest.mark.parametrize(("original", "broken", "report"), BUGS)
def test_make_sanitize_reports_a_bug_put_into_the_encoder(
    tmp_path: Path, original: str, broken: str, report: str
) -> None:
    """The sanitizer run of make test can fail: a copy of the C file with one bug put in
    is built and fuzzed as `make sanitize` builds and fuzzes the real one."""
    source = (ROOT / "streamer" / "_speedups.c").read_text()
    assert source.count(original) == 1
    (tmp_path / "bug.c").write_text(source.replace(original, broken))
    make = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed-test",  # never reinstall from here
        "sanitize",
        f"SANITIZE_SOURCE={tmp_path / 'bug.c'}",
        f"SANITIZE_DIR={tmp_path / 'build'}",
        f"FUZZ_ARTIFACTS={tmp_path}/",
        "SANITIZE_SECONDS=30",
    ]
    result = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert result.returncode != 0
    assert report in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(tmp_path.glob("crash-*"))  # the failing input, kept to become a regression
