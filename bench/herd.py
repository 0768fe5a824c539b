"""The store's own ceiling for a herd: N downloads started at once, straight to the store.

    python -m bench.herd --kind s3|gs --endpoint URL --bucket B --key K [--clients 256]

Each of `--clients` tasks, all started at once on one event loop (uvloop when installed),
asks what a new streamer download asks of the store: the object's metadata (S3: one
HeadObject through aiobotocore; GCS: one object GET through aiohttp), then a ranged GET
of the first part (streamer's part size), and takes the time to its first body byte;
with `--fill`, it then reads that many bytes of the part at once, as a new download does to fill its
client's socket buffers. Every body is held open until all are done, as running downloads
hold theirs. Prints one JSON
object: the first-byte times (`ttfb_s`: p50, p99, max, n), errors, and this process's CPU
seconds. Credentials: the AWS_* variables (S3); the GCS endpoint takes none.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson

from streamer.storage.parallel import PART_SIZE

from .stats import summary

PART = PART_SIZE  # the first part of a download
Closer = Callable[[], Awaitable[None]]
Opener = Callable[[Callable[[], None]], Awaitable[Closer]]


async def _herd(clients: int, open_one: Opener, hold_s: float) -> dict[str, Any]:
    """Start `clients` openers at once; each marks its first byte and returns a closer."""
    firsts: list[float] = []
    errors: list[str] = []
    ready: list[int] = []
    everyone = asyncio.Event()

    async def one() -> None:
        started = time.perf_counter()
        try:
            close = await open_one(lambda: firsts.append(time.perf_counter() - started))
        except Exception as exc:
            errors.append(type(exc).__name__)
            close = None
        ready.append(1)
        if len(ready) >= clients:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), hold_s)
        except TimeoutError:
            pass
        finally:
            if close is not None:
                await close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return {"clients": clients, "ttfb_s": summary(firsts), "errors": len(errors)}


async def _drain(read: Callable[[int], Awaitable[bytes]], size: int) -> None:
    while size > 0 and (data := await read(min(size, 1 << 20))):
        size -= len(data)


async def s3_herd(endpoint: str, bucket: str, key: str, clients: int, fill: int) -> dict[str, Any]:
    from aiobotocore.session import get_session
    from botocore.config import Config

    config = Config(max_pool_connections=clients + 32)
    session = get_session()
    async with session.create_client("s3", endpoint_url=endpoint, config=config) as client:
        await client.head_object(Bucket=bucket, Key=key)  # credentials, connection set up

        async def open_one(first_byte: Callable[[], None]) -> Closer:
            await client.head_object(Bucket=bucket, Key=key)
            got = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{PART - 1}")
            body = got["Body"]
            await body.read(1)
            first_byte()
            await _drain(body.read, fill)

            async def close() -> None:
                body.close()

            return close

        return await _herd(clients, open_one, 60)


async def gcs_herd(endpoint: str, bucket: str, key: str, clients: int, fill: int) -> dict[str, Any]:
    import aiohttp

    meta = f"{endpoint}/storage/v1/b/{bucket}/o/{quote(key, safe='')}"
    connector = aiohttp.TCPConnector(limit=clients + 32)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(meta) as response:
            await response.read()

        async def open_one(first_byte: Callable[[], None]) -> Closer:
            async with session.get(meta) as response:
                response.raise_for_status()
                await response.read()
            media = await session.get(
                meta, params={"alt": "media"}, headers={"Range": f"bytes=0-{PART - 1}"}
            )
            media.raise_for_status()
            await media.content.read(1)
            first_byte()
            await _drain(media.content.read, fill)

            async def close() -> None:
                media.close()

            return close

        return await _herd(clients, open_one, 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.herd", description=__doc__)
    parser.add_argument("--kind", choices=("s3", "gs"), required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument(
        "--fill", type=int, default=0, help="body bytes each then reads at once (at most 8 MiB)"
    )
    args = parser.parse_args(argv)
    herd = s3_herd if args.kind == "s3" else gcs_herd
    work = herd(args.endpoint, args.bucket, args.key, args.clients, min(args.fill, PART) - 1)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(work)
    else:
        result = uvloop.run(work)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["warm_up_requests"] = 1  # before the herd: credentials, session, a connection
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
