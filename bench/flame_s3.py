"""Where a large S3 download's time goes: py-spy samples of `streamer serve` on shaped S3.

    python -m bench.flame_s3 [--size 1GiB] [--rate 100] [--out DIR]

- moto (testkit/moto_ranged.py) behind the shaping proxy (bench/proxy.py, in its own
  process, at the network model's defaults), seeded as bench/remote.py seeds it (boto3
  `upload_file`, so a multipart object of 8 MiB parts); `streamer serve` at its defaults
  on that store, as bench/remote.py serves it.
- One download of the whole log by the raw-socket client (bench.client) while py-spy
  samples the server from the first byte of the request to the last of the answer; the
  samples are written as collapsed stacks (`DIR/s3-<size>.txt`) and summarised as
  bench/flame.py does, with the MB/s of the download under the profiler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from streamer.auth import issue_token
    from testkit.emulators import moto_server

    from .client import fetch
    from .flame import read_stacks, summary
    from .harness import parse_size, size_name
    from .logs import MODEL, ORG, run_id, seed_store
    from .proxy import ProxyProcess
    from .remote import CREDENTIALS, DOWNLOAD, SECRET, _seed_s3, _streamer

    parser = argparse.ArgumentParser(prog="python -m bench.flame_s3")
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"s3-{size_name(size).replace(' ', '')}.txt"
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="bench-flame-s3-") as scratch:
        root = Path(scratch) / "store"
        seed_store(root, [size])
        with moto_server() as moto:
            _seed_s3(moto, root, size)
            with (
                ProxyProcess(moto) as proxy,
                _streamer("s3", proxy.url, Path(scratch) / "streamer.log") as server,
            ):
                url = server.url + DOWNLOAD.format(model=MODEL, run=run_id(size))
                flags = ["--rate", str(args.rate), "--format", "raw", "--output", str(out)]
                spy = subprocess.Popen(
                    [pyspy, "record", "-p", str(server.pid), *flags],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    got = fetch(url, token, timeout=900)
                finally:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its samples, then exits
                    spy.wait(60)
    if got.status != 200 or got.body_bytes != size:
        print(f"status {got.status}, {got.body_bytes} bytes", file=sys.stderr)
        return 1
    print(f"{size / got.seconds / 1e6:.0f} MB/s under the profiler; stacks in {out}")
    print("\n".join(summary(read_stacks(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
