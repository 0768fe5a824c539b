"""The followed download: what a run's log holds, then each byte appended, until the run ends.

The rules this module keeps:
- A clean end means a whole log. The body ends (the terminating chunk) only when the run's
  status is terminal and every byte of its final log was sent. Anything else that ends a
  follow (`STREAMER_FOLLOW_MAX_S`, a store failure, a log that shrank, vanished or was
  replaced by one that does not extend what was sent) raises `FollowCut`, and the server
  drops the connection without it. A client that leaves just stops the follow.
- What was sent stays a prefix. Whenever the log's version (`ObjectInfo.etag`) changes,
  with or without growth, and once more before a clean end, the first and the last up to
  `TAIL` bytes sent are read again from that version (pinned reads, the new span behind
  the last ones) and must equal what was sent; else the follow ends `replaced`, and a log
  deleted ends `gone`. Bytes between them are not read again: a change there that keeps
  both ends, the size and a longer log's prefix passes (docs/follow.md says so).
- Exact resume. `offset` (txt) is the byte of the stored log where the body starts, so the
  bytes a client received add up to the offset to resume from; `from_line` (json, ndjson)
  is the number of the first line sent, each object carrying its `line`. A line still
  without its `\\n` is encoded only once it ends or the run does.
- Bounded and idle. A follower holds one chunk and the tail; between polls it awaits the
  watch's event (`streamer.follow.watch`).
"""

from __future__ import annotations

import logging
import math

import anyio

from .. import metrics
from ..asgi import Message, Receive, Scope, Send
from ..budget import stream_bytes
from ..catalog import LogObject
from ..encoders import LineEncoder
from ..errors import RangeNotSatisfiable, StreamerError
from ..handlers.common import Service
from ..observe import annotate
from ..plan import MEDIA_TYPES, SECURITY_HEADERS, Query, content_disposition
from ..pump import StreamAborted, TruncatedSource
from ..storage import GzipReader, ObjectChanged, ObjectReader
from .watch import SHARED_SPAN, Poll, Snapshot, Watch, poller, snapshot

TAIL = 4096
logger = logging.getLogger("streamer")


class FollowCut(StreamAborted):
    """A follow ended before its run did; the connection must be dropped. `end` says why."""

    def __init__(self, end: str) -> None:
        super().__init__(f"follow cut: {end}")
        self.end = end


async def follow_log(
    service: Service,
    scope: Scope,
    query: Query,
    model_id: str,
    organization: str,
    rid: str,
    receive: Receive,
    send: Send,
) -> LogObject | None:
    """Answer a download with `follow=true`. Returns the log to send as an ordinary
    download instead (a terminal run, from its start), else None once answered."""
    now = anyio.current_time()
    first = await snapshot(service.catalog, model_id, organization, query.run_id, now)
    if first.terminal and query.offset == 0 and query.from_line == 1:
        return first.log
    # snapshot() raised for a default run (no run_id) without a log.
    run_id = first.log.run.run_id if first.log is not None else query.run_id or ""
    annotate(scope, run=run_id, follow="true")
    log = first.log
    if log is not None and not log.gzip and (log.info.size or 0) < query.offset:
        raise RangeNotSatisfiable(log.info.size or 0)
    start = {"type": "http.response.start", "status": 200, "headers": _headers(query, run_id, rid)}
    if scope["method"] == "HEAD":
        await send(start)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None
    poll = poller(service.catalog, model_id, organization, run_id)
    settings = service.settings
    # A follower holds what a download may hold while it catches up (streamer.budget).
    held = stream_bytes(
        settings.chunk_size,
        settings.buffer_chunks,
        encode=query.format != "txt",
        inflate=log is not None and log.gzip,
    )
    with service.slots.take(held), service.watches.watch(model_id, run_id) as watch:
        follower = _Follower(service, watch, poll, query, send)
        await send(start)
        metrics.FOLLOWERS_ACTIVE.inc()
        try:
            end = await follower.run(first, receive, settings.follow_max_s)
        finally:
            metrics.FOLLOWERS_ACTIVE.dec()
    annotate(scope, end=end)
    if end not in ("complete", "client_disconnect"):
        raise FollowCut(end)
    return None


def _headers(query: Query, run_id: str, rid: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", MEDIA_TYPES[query.format].encode()),
        (b"content-disposition", content_disposition(run_id, query.format).encode()),
        # The same URL is an ordinary download, maybe gzip, once the run has ended.
        (b"vary", b"Accept-Encoding"),
        *SECURITY_HEADERS,
        # nginx and its kin buffer a proxied body unless told not to: a follow is live.
        (b"x-accel-buffering", b"no"),
        (b"x-request-id", rid.encode()),
    ]


class _Follower:
    """One follow's position in the log and what it still owes the encoder."""

    def __init__(
        self, service: Service, watch: Watch, poll: Poll, query: Query, send: Send
    ) -> None:
        self.store, self.turns = service.store, service.turns
        self.watch, self.poll, self.send = watch, poll, send
        self.chunk = service.settings.chunk_size
        self.origin = self.sent = query.offset  # bytes of the stored log behind us
        self.head = b""  # the first TAIL of them sent in this response
        self.tail = b""  # the last TAIL of them sent in this response
        self.version: str | None = None  # the log's etag what was sent was checked against
        self.skip = query.from_line - 1  # lines still to drop before the first sent
        self.encoder: LineEncoder | None = None
        if query.format != "txt":
            self.encoder = LineEncoder(query.format, query.fields, first_line=query.from_line)

    async def run(self, first: Snapshot, receive: Receive, limit_s: float) -> str:
        """How the follow ended: complete, client_disconnect, limit, store_failure, shrank,
        replaced or gone."""
        end = "client_disconnect"
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_disconnect, receive, tasks.cancel_scope)
            with anyio.move_on_after(limit_s if limit_s > 0 else math.inf) as limit:
                try:
                    end = await self._follow(first)
                except Exception as exc:
                    logger.warning("follow: store read failed: %s", type(exc).__name__)
                    end = "store_failure"
            if limit.cancelled_caught:
                end = "limit"
            tasks.cancel_scope.cancel()
        return end

    async def _follow(self, snap: Snapshot) -> str:
        while True:
            if snap.error is not None:
                gone = isinstance(snap.error, StreamerError) and snap.error.status == 404
                return "gone" if gone else "store_failure"
            log = snap.log
            if log is not None and log.gzip and snap.terminal:
                await self._send_gzip(log)
                return await self._finish()
            if log is None or log.gzip:
                if self.sent > self.origin:
                    return "gone" if log is None else "replaced"
            elif (end := await self._catch_up(snap, log)) is not None:
                return end
            snap = await self.watch.after(snap.taken_at, self.poll)
            if self.watch.closed:
                return "shutdown"

    async def _catch_up(self, snap: Snapshot, log: LogObject) -> str | None:
        """Send what the log gained, once it proved to hold what was sent (checked when it
        grew, changed version or is about to end cleanly); how the follow ends, if it does."""
        terminal, size = snap.terminal, log.info.size or 0
        if size < self.sent:
            return "shrank"
        check = self.sent > self.origin and (terminal or log.info.etag != self.version)
        if size > self.sent or check:
            try:
                if not await self._send_span(snap, log.key, size):
                    return "replaced"
            except ObjectChanged:
                return None  # replaced between two pinned reads: check the next version
            except FileNotFoundError:
                return "gone"
            self.version = log.info.etag
        return await self._finish() if terminal else None

    async def _send_span(self, snap: Snapshot, key: str, size: int) -> bool:
        """Send [sent, size) of the object; False if it does not extend what was sent: its
        first and last up to `TAIL` bytes sent, read from the version the span is read
        from, differ. Small spans (the first bytes sent, the live end) are read once for
        every follower of the poll (`Watch.read`), all pinned to one version."""
        pin = self.watch.pin(snap)
        if self.sent - self.origin > len(self.tail):  # else the tail covers the head
            start = self.origin
            head = await self._shared(snap, key, start, start + len(self.head), pin)
            if head != self.head:
                return False
        back = len(self.tail)
        if size - self.sent + back <= SHARED_SPAN:
            data = await self._shared(snap, key, self.sent - back, size, pin)
            if data[:back] != self.tail:
                return False
            if (short := size - self.sent + back - len(data)) > 0:
                raise TruncatedSource(f"{short} bytes short of the object's size")
            await self._pass(data[back:])
            return True
        reader = await self.store.open(key, self.sent - back, size, pin)
        try:
            if back and await _exactly(reader, back) != self.tail:
                return False
            while self.sent < size:
                await anyio.lowlevel.checkpoint()  # a local read never suspends
                data = await reader.read(min(self.chunk, size - self.sent))
                if not data:
                    raise TruncatedSource(f"{size - self.sent} bytes short of the object's size")
                await self._pass(data)
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()
        return True

    async def _shared(
        self, snap: Snapshot, key: str, start: int, end: int, pin: dict[str, str]
    ) -> bytes:
        async def read(key: str, start: int, end: int) -> bytes:
            reader = await self.store.open(key, start, end, pin)
            try:
                return await _exactly(reader, end - start)
            finally:
                with anyio.CancelScope(shield=True):
                    await reader.aclose()

        return await self.watch.read(snap, key, start, end, read)

    async def _send_gzip(self, log: LogObject) -> None:
        """A terminal run's gzip log, inflated, from the resume point on."""
        reader = GzipReader(await self.store.open(log.key, 0, log.info.size), self.chunk)
        skip, self.sent = self.sent, 0
        try:
            while data := await reader.read(self.chunk):
                if skip:
                    cut = min(skip, len(data))
                    skip, self.sent, data = skip - cut, self.sent + cut, data[cut:]
                if data:
                    await self._pass(data)
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()

    async def _pass(self, raw: bytes) -> None:
        self.sent += len(raw)
        if len(self.head) < TAIL:
            self.head += raw[: TAIL - len(self.head)]
        self.tail = (self.tail + raw[-TAIL:])[-TAIL:]
        metrics.FOLLOW_BYTES.inc(len(raw))
        data = self._skip_lines(raw) if self.skip else raw
        if self.encoder is not None and data:
            data = self.encoder.feed(data)
        if data:
            await self.turns.wait()
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
            # Returns once the transport has drained: the next read waits (streamer.pump).
            await self.send({"type": "http.response.body", "body": b"", "more_body": True})

    def _skip_lines(self, data: bytes) -> bytes:
        count = data.count(b"\n")
        if count < self.skip:
            self.skip -= count
            return b""
        at = -1
        for _ in range(self.skip):
            at = data.index(b"\n", at + 1)
        self.skip = 0
        return data[at + 1 :]

    async def _finish(self) -> str:
        body = self.encoder.finish() if self.encoder is not None else b""
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        return "complete"


async def _exactly(reader: ObjectReader, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0 and (data := await reader.read(size)):
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
