"""Differential fuzzing of the native line-to-JSON encoder against the pure-Python reference.

One input of bytes is one case: its first bytes choose the style, the field names, the
``max_line`` and where the chunks split; the rest is the log (see `Case.from_bytes`). A case
passes when `NativeLineEncoder` (or, asked, `PythonLineEncoder`) fed those chunks gives exactly
`reference_encode` of the whole log. A case with bit 6 of byte 0 set calls the native
``encode_lines(head, block, start, stop, first, ends_in_newline, templates)`` directly
instead, with bounds out of range too, against a model of its docstring.

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

import orjson

# Names only: streamer.encoders is imported once the native module to test is in place.
STYLES = ("json", "ndjson")
FIELDS = ("default", "ecs", "datadog", "otel")
MAX_LINES = (0, 1, 3, 8, 40, 1 << 20)
MAX_CUTS = 15


@dataclass(frozen=True)
class Case:
    style: str
    fields: str
    max_line: int
    direct: bool
    ends_in_newline: bool
    params: bytes
    log: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Case:
        """Byte 0: style (bit 0), field names (bits 1-2), max_line (bits 3-5, mod 6), a
        direct call of ``encode_lines`` (bit 6) and its ``ends_in_newline`` (bit 7); byte 1:
        how many parameter bytes follow (mod 16); the rest is the log."""
        options = data[0] if data else 0
        count = (data[1] if len(data) > 1 else 0) % (MAX_CUTS + 1)
        return cls(
            style=STYLES[options & 1],
            fields=FIELDS[(options >> 1) & 3],
            max_line=MAX_LINES[(options >> 3 & 7) % len(MAX_LINES)],
            direct=bool(options & 0x40),
            ends_in_newline=bool(options & 0x80),
            params=data[2 : 2 + count],
            log=data[2 + count :],
        )

    def chunks(self) -> list[bytes]:
        """The log cut where the parameter bytes say (each a position mod its length + 1)."""
        cuts = sorted(cut % (len(self.log) + 1) for cut in self.params)
        bounds = [0, *cuts, len(self.log)]
        return [self.log[start:end] for start, end in pairwise(bounds)]


def check(data: bytes, native: bool = True) -> None:
    """Raise `AssertionError` unless the encoder gives the reference output for this case."""
    from streamer.encoders import NativeLineEncoder, PythonLineEncoder, reference_encode

    case = Case.from_bytes(data)
    if case.direct and native:
        check_encode_lines(case)
        return
    implementation = NativeLineEncoder if native else PythonLineEncoder
    encoder = implementation(case.style, case.fields, max_line=case.max_line)  # type: ignore[arg-type]
    got = b"".join([encoder.feed(chunk) for chunk in case.chunks()]) + encoder.finish()
    want = reference_encode(case.log, case.style, case.fields)  # type: ignore[arg-type]
    if got != want:
        raise AssertionError(f"{case}: encoder gave {got!r}, reference {want!r}")


def check_encode_lines(case: Case) -> None:
    """``_speedups.encode_lines`` called directly, bounds out of range included, against a
    model of its docstring built on `parse_line`."""
    from streamer import _speedups
    from streamer.encoders import parse_line

    p = case.params + bytes(4)
    cut = p[0] % (len(case.log) + 1)
    head, block = case.log[:cut].replace(b"\n", b""), case.log[cut:]  # head: one line's start
    start, stop, first = p[1] - 4, p[2] - 4, p[3] * 0x1_0001_0001
    arguments = (head, block, start, stop, first)
    if not 0 <= start <= stop <= len(block):
        try:
            _speedups.encode_lines(*arguments, False, templates(case.style, case.fields))
        except ValueError:
            return
        raise AssertionError(f"{case}: bounds {start}, {stop} of {len(block)} were taken")
    text = head + block[start:stop]
    ends = case.ends_in_newline and text.endswith(b"\n")
    lines = text[: len(text) - ends].split(b"\n")
    last = len(lines) - 1
    lines = [
        line[:-1] if (i < last or ends) and line.endswith(b"\r") else line
        for i, line in enumerate(lines)
    ]
    separator, newline = (b",\n", b"") if case.style == "json" else (b"", b"\n")
    want = b"".join(
        separator + orjson.dumps(parse_line(first + i, line, case.fields)) + newline  # type: ignore[arg-type]
        for i, line in enumerate(lines)
    )
    got = _speedups.encode_lines(*arguments, ends, templates(case.style, case.fields))
    if got != (want, len(lines)):
        raise AssertionError(f"{case}: encode_lines gave {got!r}, model {want!r}")


def templates(style: str, fields: str) -> tuple[bytes, ...]:
    """The six templates of ``encode_lines``, from its docstring."""
    from streamer.encoders import FIELD_NAMES

    timestamp, level, message = (name.encode() for name in FIELD_NAMES[fields])  # type: ignore[index]
    return (
        b',\n{"line":' if style == "json" else b'{"line":',
        b',"' + timestamp + b'":"',
        b'","' + level + b'":"',
        b'","' + message + b'":"',
        b',"' + timestamp + b'":null,"' + level + b'":null,"' + message + b'":"',
        b'"}' if style == "json" else b'"}\n',
    )


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
    atheris.Setup(
        [sys.argv[0], *libfuzzer_args, f"-max_total_time={args.seconds}", *args.corpus],
        check,
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
