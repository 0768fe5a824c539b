"""The download in-process: fake ASGI receive/send over a backend that counts what is read.

A range must read only its span from the store: the backend gets the span's start and
end (S3 turns them into a bounded Range header), and the pump stops at its last byte.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import anyio
import pytest

from streamer.app import Streamer
from streamer.auth import issue_token
from streamer.config import Settings
from streamer.pump import Message
from streamer.storage import Store
from testkit.dataset import big_log, put, seed
from testkit.fakes import SpyBackend
from testkit.servers import SECRET

pytestmark = pytest.mark.anyio

PATH = "/api/v1/models/mdl-big/training-metrics/logs/download"
BIG = big_log(80_000)
KEY = "models/mdl-big/runs/run-big/training.log"
# The default run of mdl-big; run-bigz (gzip) completed earlier.
RUN_JSON = b'{"status": "completed", "completed_at": "2026-03-13T11:00:00Z"}'


@pytest.fixture(params=["memory", "local"])
def spy(request: pytest.FixtureRequest, tmp_path: Path) -> SpyBackend:
    url = f"memory://streamer-{uuid.uuid4().hex}" if request.param == "memory" else str(tmp_path)
    seed(url)
    put(url, "models/mdl-big/model.json", b'{"organization_id": "org-acme"}')
    put(url, "models/mdl-big/runs/run-big/run.json", RUN_JSON)
    put(url, KEY, BIG)
    put(url, "models/mdl-big/runs/run-bigz/run.json", b'{"status": "completed"}')
    put(url, "models/mdl-big/runs/run-bigz/training.log.gz", gzip.compress(BIG))
    return SpyBackend(url)


class Exchange:
    """One request through the app: what it sent back."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.requested = False

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def call(
    store: Store,
    query: str = "",
    method: str = "GET",
    settings: Settings | None = None,
    **headers: str,
) -> Exchange:
    token = issue_token(SECRET, "alice", "org-acme", ["model:read"])
    raw = [(b"authorization", f"Bearer {token}".encode())]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "method": method,
        "path": PATH,
        "query_string": query.encode(),
        "headers": raw,
    }
    settings = settings or Settings(
        storage_url=store.url, jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=64 * 1024
    )
    app = Streamer(settings, store=store)
    exchange = Exchange()
    with anyio.fail_after(10):
        await app(scope, exchange.receive, exchange.send)
    return exchange


async def test_a_range_reads_only_its_span(spy: SpyBackend) -> None:
    start, length = 1_000_000, 16 * 1024
    got = await call(spy.store, range=f"bytes={start}-{start + length - 1}")
    assert got.status == 206
    assert got.body == BIG[start : start + length]
    assert got.headers["content-range"] == f"bytes {start}-{start + length - 1}/{len(BIG)}"
    assert got.headers["content-length"] == str(length)
    assert spy.opens == [(KEY, start, start + length)]
    assert spy.bytes_read == length


async def test_suffix_and_open_ranges_read_only_their_span(spy: SpyBackend) -> None:
    got = await call(spy.store, range="bytes=-500")
    assert (got.status, got.body) == (206, BIG[-500:])
    assert spy.opens == [(KEY, len(BIG) - 500, len(BIG))]
    assert spy.bytes_read == 500
    got = await call(spy.store, range=f"bytes={len(BIG) - 1000}-")
    assert (got.status, got.body) == (206, BIG[-1000:])
    assert spy.bytes_read == 1500


async def test_a_whole_download_reads_the_object_once(spy: SpyBackend) -> None:
    got = await call(spy.store)
    assert (got.status, got.body) == (200, BIG)
    assert got.headers["accept-ranges"] == "bytes"
    assert spy.opens == [(KEY, 0, len(BIG))]
    assert spy.bytes_read == len(BIG)


async def test_no_store_read_for_head_304_and_416(spy: SpyBackend) -> None:
    head = await call(spy.store, method="HEAD", range="bytes=0-9")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(BIG))
    not_modified = await call(spy.store, if_none_match=head.headers["etag"])
    assert (not_modified.status, not_modified.body) == (304, b"")
    unsatisfiable = await call(spy.store, range=f"bytes={len(BIG)}-")
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(BIG)}"
    assert unsatisfiable.headers["content-type"] == "application/problem+json"
    assert spy.opens == []


async def test_gzip_object_passthrough_and_decoding(spy: SpyBackend) -> None:
    stored = await spy.store.read_bytes("models/mdl-big/runs/run-bigz/training.log.gz")
    plain = await call(spy.store, "run_id=run-bigz")
    assert (plain.status, plain.body) == (200, BIG)
    assert "content-encoding" not in plain.headers
    assert "content-length" not in plain.headers
    passed = await call(spy.store, "run_id=run-bigz", accept_encoding="gzip")
    assert (passed.status, passed.body) == (200, stored)
    assert passed.headers["content-encoding"] == "gzip"
    assert passed.headers["content-length"] == str(len(stored))
    part = await call(spy.store, "run_id=run-bigz", accept_encoding="gzip", range="bytes=10-1033")
    assert (part.status, part.body) == (206, stored[10:1034])
    assert part.headers["content-range"] == f"bytes 10-1033/{len(stored)}"


async def test_on_the_fly_gzip_is_sent_chunk_by_chunk(spy: SpyBackend) -> None:
    settings = Settings(
        storage_url=spy.url, jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=64 * 1024, gzip=True
    )
    got = await call(
        spy.store, "format=ndjson&fields=datadog", settings=settings, accept_encoding="gzip"
    )
    assert got.headers["content-encoding"] == "gzip"
    assert "content-length" not in got.headers
    bodies = [m["body"] for m in got.messages[1:] if m["body"]]
    assert len(bodies) > 10  # one compressed piece per chunk read, not one at the end
    assert gzip.decompress(got.body).count(b"\n") == BIG.count(b"\n")
    assert b'"status":"INFO"' in gzip.decompress(got.body)[:200]
