"""The S3 baselines: one boto3 `get_object`, its body streamed in 1 MiB reads, or
(`--transfer`) boto3's `download_fileobj` into a null sink (s3transfer at its defaults: 10
threads, 8 MiB ranged GETs).

    python -m bench.direct_s3 --endpoint URL --bucket B --key K [--transfer]

Prints one JSON object with the same figures as the HTTP client (throughput, TTFB, gaps
between reads; no TTFB or gaps for `--transfer`) and this process's own CPU seconds.
Credentials: the AWS_* variables.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from array import array

import boto3
import orjson

from .stats import summary


class NullSink:
    """A seekable file that keeps nothing: s3transfer writes each part at its offset."""

    def __init__(self) -> None:
        self.written = self._position = 0

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = offset
        return offset

    def tell(self) -> int:
        return self._position

    def write(self, data: bytes) -> int:
        self.written += len(data)
        self._position += len(data)
        return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.direct_s3")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--transfer", action="store_true", help="download_fileobj, null sink")
    args = parser.parse_args()
    if not args.endpoint.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("loopback endpoints only")
    client = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1")
    client.head_bucket(Bucket=args.bucket)  # connection and signer warmed up, as streamer is
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if args.transfer:
        sink = NullSink()
        client.download_fileobj(args.bucket, args.key, sink)
        ended = time.perf_counter()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        done = {"body_bytes": sink.written, "seconds": ended - started, "client_cpu_s": cpu}
        sys.stdout.write(orjson.dumps(done).decode() + "\n")
        return
    body = client.get_object(Bucket=args.bucket, Key=args.key)["Body"]
    gaps = array("d")
    received = 0
    first = last = 0.0
    for chunk in body.iter_chunks(args.chunk):
        now = time.perf_counter()
        if not first:
            first = now
        else:
            gaps.append(now - last)
        last = now
        received += len(chunk)
    ended = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    result: dict[str, object] = {
        "body_bytes": received,
        "seconds": ended - started,
        "ttfb_s": first - started,
        "gap_s": summary(gaps),
        "client_cpu_s": cpu,
        "client_peak_rss_mib": after.ru_maxrss / 1024,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
