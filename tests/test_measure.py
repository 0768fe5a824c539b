"""The metrics middleware in-process: what it counts when a transport fails, and the
counters that their owners push as things happen."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from streamer import metrics
from streamer.app import Streamer
from streamer.config import Settings
from streamer.observe import Observe, annotate
from streamer.observe.measure import Measure
from streamer.pump import Message
from streamer.storage import RetryingReader
from testkit.flaky import DATA, Counts, Flaky, read_all
from testkit.observing import ROUTE, AccessLog, metric
from testkit.servers import SECRET


class LeavingApp(Streamer):
    """Starts a download whose transport fails, then answers as the app would: a 502."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        annotate(scope, route=ROUTE, endpoint="download")
        headers = [(b"x-request-id", b"leaving")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        except OSError:
            annotate(scope, code="upstream_error")
            await send({"type": "http.response.start", "status": 502, "headers": headers})


@pytest.mark.anyio
async def test_a_transport_failure_is_never_a_store_failure(
    tmp_path: Path, access_log: AccessLog
) -> None:
    app = Observe(LeavingApp(Settings(storage_url=str(tmp_path), jwt_secret=SECRET)))
    scope = {"type": "http", "method": "GET", "path": "/elsewhere", "headers": []}

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("reset by peer")

    def upstream_errors() -> float:
        return metric(metrics.exposition().decode(), "streamer_upstream_errors_total")

    before = upstream_errors()
    with anyio.fail_after(10):
        await app(scope, receive, send)
    line = access_log.wait(request_id="leaving")
    # The route the app recorded, not one matched again from the path; the first status.
    assert (line["route"], line["status"], line["code"]) == (ROUTE, 200, None)
    assert line["outcome"] == "client_disconnect"
    assert upstream_errors() == before
    assert metric(metrics.exposition().decode(), "streamer_active_streams") == 0


@pytest.mark.anyio
async def test_the_store_pushes_its_retries_when_it_makes_them() -> None:
    flaky, counts = Flaky(break_after=3000, breaks=2), Counts()
    before = metric(metrics.exposition().decode(), "streamer_upstream_retries_total")
    reader = RetryingReader(flaky.open_at, 0, counts, retries=3, backoff_s=0)
    assert await read_all(reader) == DATA
    after = metric(metrics.exposition().decode(), "streamer_upstream_retries_total")
    assert after - before == counts.retries == 2


class Writes(io.RawIOBase):
    """An unbuffered stream's raw end: each write it is handed, kept whole."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.anyio
async def test_lines_of_requests_that_end_together_leave_in_one_write() -> None:
    raw = Writes()
    handler = logging.StreamHandler(io.TextIOWrapper(raw, write_through=True))  # type: ignore[type-var]
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("streamer.access")
    kept = logger.handlers[:]
    logger.handlers[:] = [handler]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        raise AssertionError("unused")

    async def send(message: Message) -> None:
        pass

    measure = Measure(app)
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    try:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(measure, dict(scope), receive, send)
        # The batch's write was queued on the loop when its first line came: first in turn.
        written = asyncio.Event()
        asyncio.get_running_loop().call_soon(written.set)
        await written.wait()
    finally:
        logger.handlers[:] = kept
    assert len(raw.writes) == 1
    lines = [orjson.loads(line) for line in raw.writes[0].splitlines()]
    assert [(line["status"], line["outcome"]) for line in lines] == [(204, "complete")] * 3
