"""Differential fuzzing of the native line-to-JSON encoder against the pure-Python reference.

One input of bytes is one case: its first bytes choose the style, the field names, the
``max_line`` and where the chunks split; the rest is the log (see `Case.from_bytes`). A case
passes when `LineEncoder` (native by default) fed those chunks gives exactly
`reference_encode` of the whole log.

Run as ``python -m tests.fuzz.encoder [--native PATH] [--seconds N] CORPUS...``: with
atheris installed, libFuzzer mutates the corpus (coverage-guided over the Python code; the C
code is compiled by gcc, which gives libFuzzer no coverage of it) and adds what it finds to
the first corpus folder; a failing input is written as ``crash-<sha1>`` into the current
folder (or ``-artifact_prefix``). ``--native`` loads a build of ``streamer/_speedups.c``
other than the installed one (the sanitizer build of ``make sanitize``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import get_args

STYLES = ("json", "ndjson")
MAX_LINES = (0, 1, 3, 8, 40, 1 << 20)
MAX_CUTS = 15


@dataclass(frozen=True)
class Case:
    style: str
    fields: str
    max_line: int
    cuts: tuple[int, ...]
    log: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Case:
        """Byte 0: style (bit 0), field names (bits 1-2), max_line (bits 3-5, mod 6);
        byte 1: the number of cuts (mod 16); then one byte per cut (a position, mod the
        log's length + 1); the rest is the log."""
        from streamer.encoders import Fields

        options = data[0] if data else 0
        count = (data[1] if len(data) > 1 else 0) % (MAX_CUTS + 1)
        raw_cuts, log = data[2 : 2 + count], data[2 + count :]
        names = get_args(Fields)
        return cls(
            style=STYLES[options & 1],
            fields=names[(options >> 1) & 3],
            max_line=MAX_LINES[(options >> 3 & 7) % len(MAX_LINES)],
            cuts=tuple(sorted(cut % (len(log) + 1) for cut in raw_cuts)),
            log=log,
        )

    def chunks(self) -> list[bytes]:
        bounds = [0, *self.cuts, len(self.log)]
        return [self.log[start:end] for start, end in pairwise(bounds)]


def check(data: bytes, native: bool = True) -> None:
    """Raise `AssertionError` unless the encoder gives the reference output for this case."""
    from streamer.encoders import LineEncoder, reference_encode

    case = Case.from_bytes(data)
    encoder = LineEncoder(case.style, case.fields, max_line=case.max_line, native=native)  # type: ignore[arg-type]
    got = b"".join([encoder.feed(chunk) for chunk in case.chunks()]) + encoder.finish()
    want = reference_encode(case.log, case.style, case.fields)  # type: ignore[arg-type]
    if got != want:
        raise AssertionError(f"{case}: encoder gave {got!r}, reference {want!r}")


def load_native(path: str) -> None:
    """Make `path`, a build of streamer/_speedups.c, the module that streamer.encoders uses."""
    if "streamer.encoders" in sys.modules:
        raise RuntimeError("load the native module before importing streamer.encoders")
    spec = importlib.util.spec_from_file_location("streamer._speedups", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} is not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["streamer._speedups"] = module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.encoder", description=__doc__)
    parser.add_argument("--native", help="a build of streamer/_speedups.c to test instead")
    parser.add_argument("--seconds", type=int, default=30, help="how long to fuzz")
    parser.add_argument("corpus", nargs="+", help="corpus folders; the first one grows")
    args, libfuzzer_args = parser.parse_known_args(argv)
    import atheris

    if args.native:
        load_native(args.native)
    with atheris.instrument_imports(include=["streamer.encoders"]):
        from streamer import encoders
    if not encoders.NATIVE:
        print("fuzz: streamer._speedups is not built", file=sys.stderr)
        return 1
    for folder in args.corpus:
        for path in sorted(Path(folder).iterdir()):
            check(path.read_bytes())  # the corpus itself must pass before any mutation
    atheris.Setup(
        [sys.argv[0], *libfuzzer_args, f"-max_total_time={args.seconds}", *args.corpus],
        check,
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
