"""A body that fits in one read is sent in one step; it answers exactly as a streamed one.

Each request runs twice in-process: with 1 MiB reads (the log fits in one: the one-step
path) and with 1 KiB reads (the same log streamed by the pump in pieces), and the two
answers must agree in status, every header but the request id, and body.
"""

from __future__ import annotations

import gzip
import uuid

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

PATH = "/api/v1/models/mdl-small/training-metrics/logs/download"
LOG = big_log(200)[:4096]
RUN_JSON = b'{"status": "completed", "completed_at": "2026-03-13T11:00:00Z"}'


@pytest.fixture
def spy() -> SpyBackend:
    url = f"memory://streamer-{uuid.uuid4().hex}"
    seed(url)
    put(url, "models/mdl-small/model.json", b'{"organization_id": "org-acme"}')
    put(url, "models/mdl-small/runs/run-small/run.json", RUN_JSON)
    put(url, "models/mdl-small/runs/run-small/training.log", LOG)
    put(url, "models/mdl-small/runs/run-smallz/run.json", b'{"status": "completed"}')
    put(url, "models/mdl-small/runs/run-smallz/training.log.gz", gzip.compress(LOG))
    return SpyBackend(url)


class Exchange:
    def __init__(self, disconnected: bool = False) -> None:
        self.messages: list[Message] = []
        self.disconnected = disconnected

    async def receive(self) -> Message:
        if self.disconnected:
            return {"type": "http.disconnect"}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        start, *bodies = self.messages
        headers = {k.decode(): v.decode() for k, v in start["headers"] if k != b"x-request-id"}
        return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


async def call(
    store: Store,
    chunk_size: int,
    query: str = "",
    method: str = "GET",
    *,
    disconnected: bool = False,
    headers: dict[str, str] | None = None,
) -> Exchange:
    token = issue_token(SECRET, "alice", "org-acme", ["model:read"])
    raw = [(b"authorization", f"Bearer {token}".encode())]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": PATH, "query_string": query.encode()}
    scope["headers"] = raw
    settings = Settings(
        storage_url=store.url, jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=chunk_size
    )
    exchange = Exchange(disconnected)
    with anyio.fail_after(10):
        await Streamer(settings, store=store)(scope, exchange.receive, exchange.send)
    return exchange


ONE_READ, STREAMED = 1 << 20, 1024

REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("", "GET", {}),
    ("", "HEAD", {}),
    ("", "GET", {"range": "bytes=10-99"}),
    ("", "GET", {"range": "bytes=-100"}),
    ("", "GET", {"range": "bytes=4000-"}),
    ("", "GET", {"range": "bytes=0-9", "if_range": '"stale"'}),
    ("format=json", "GET", {}),
    ("format=ndjson&fields=ecs", "GET", {}),
    ("run_id=run-smallz", "GET", {}),
    ("run_id=run-smallz", "GET", {"accept_encoding": "gzip"}),
    ("run_id=run-smallz", "GET", {"accept_encoding": "gzip", "range": "bytes=5-20"}),
]


@pytest.mark.parametrize(("query", "method", "headers"), REQUESTS)
async def test_one_read_answers_as_the_stream_does(
    spy: SpyBackend, query: str, method: str, headers: dict[str, str]
) -> None:
    whole = (await call(spy.store, ONE_READ, query, method, headers=headers)).answer()
    streamed = (await call(spy.store, STREAMED, query, method, headers=headers)).answer()
    assert whole == streamed
    assert whole[0] in (200, 206)
    assert len(spy.opens) == spy.closed


async def test_a_small_body_goes_out_in_one_message_after_one_read(spy: SpyBackend) -> None:
    got = await call(spy.store, ONE_READ)
    assert [m["type"] for m in got.messages] == ["http.response.start", "http.response.body"]
    assert got.messages[1] == {"type": "http.response.body", "body": LOG, "more_body": False}
    assert got.answer()[1]["content-length"] == str(len(LOG))
    assert (spy.reads, len(spy.opens), spy.closed) == (1, 1, 1)
    streamed = await call(spy.store, STREAMED)
    assert len(streamed.messages) > 3  # the same log in 1 KiB pieces


async def test_revalidation_answers_304_with_the_same_validators(spy: SpyBackend) -> None:
    etag = (await call(spy.store, ONE_READ)).answer()[1]["etag"]
    for chunk_size in (ONE_READ, STREAMED):
        status, headers, body = (
            await call(spy.store, chunk_size, headers={"if_none_match": etag})
        ).answer()
        assert (status, body, headers["etag"]) == (304, b"", etag)
    assert len(spy.opens) == 1  # a 304 opens nothing


async def test_a_client_gone_before_the_answer_leaves_no_reader_open(spy: SpyBackend) -> None:
    got = await call(spy.store, ONE_READ, disconnected=True)
    assert got.answer()[0] == 200
    assert (len(spy.opens), spy.closed) == (1, 1)


async def test_a_short_object_is_an_upstream_error_before_the_start(spy: SpyBackend) -> None:
    spy.short_by = 100
    got = await call(spy.store, ONE_READ)
    assert got.answer()[0] == 502
    assert len(spy.opens) == spy.closed == 1
