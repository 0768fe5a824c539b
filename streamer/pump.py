"""Moves one object from the store to the client.

The rules this module keeps:
- Bounded memory, and little of it for a slow client. uvicorn waits for its transport to
  drain (below its low-water mark) before it writes a body, so a chunk handed to `send`
  while the client is slow would wait there, in hand, beside the one being written. The
  pump first sends an empty body, which returns once the transport has drained, and only
  then takes the next chunk: a slow client's stream holds the chunk being written and what
  was read ahead of it. A reader that waits on the network is read one chunk ahead by a
  producer task (plus `Stream.buffer_chunks - 4` queued in a bounded anyio memory object
  stream); a local file or memory, read inline, and the parallel reader, which keeps its
  own next read ready, are read in turn with the sends (`ahead=False`). Counted in
  chunks: two in hand (one in turn), a third while the transport still holds the last
  bytes of the one before; the default bound of four keeps at least one for what a
  stream costs beside its chunks (the connection, the store client's buffers, the
  allocator's waste). Below three the reads shrink instead (`read_size`): the bound is
  in bytes. uvicorn's flow control holds `send` while the client is slow, so a slow
  client slows the storage reads instead of filling memory.
- Cancel on disconnect. uvicorn's `send` returns silently once the client has gone, so a
  watcher awaits `receive()` for `http.disconnect` and cancels the producer and the
  consumer at once; the reader is closed on every path.
- One read, one send. A body of known length that fits in one read is read whole, the
  reader closed, and sent with the start in one step: no tasks, no stream, no watcher,
  since there is nothing left to stop when the client goes.
- Fair turns. Each read and each send of a chunk first passes the process's `Turns`
  (when given), so a turn of the event loop moves a few chunks, not one of every stream:
  accepts, probes and new requests wait behind a few chunks only (`streamer.turns`).
- Abort on upstream failure. Before the first byte a store error is raised to the caller,
  which still can answer with a status. After it, `StreamAborted` is raised so the server
  drops the connection: the client sees a short body or an unterminated chunked body,
  never a clean end of a truncated file. A source that ends before `length` bytes is such
  a failure too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .asgi import Message as Message
from .asgi import Receive as Receive
from .asgi import Send as Send
from .storage import ObjectReader
from .turns import Turns

Outcome = Literal["complete", "client_disconnect", "upstream_abort"]


class Transform(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class StreamAborted(Exception):
    """The response had started when the source failed; the connection must be dropped."""


class TruncatedSource(Exception):
    """The object ended before the size announced in Content-Length."""


@dataclass
class Transfer:
    """What happened to one download, for metrics and the access log."""

    outcome: Outcome = "complete"
    bytes_sent: int = 0
    started_at: float = field(default_factory=time.perf_counter)
    first_byte_at: float | None = None
    error: BaseException | None = None


def read_size(chunk_size: int, buffer_chunks: int) -> int:
    """The size of each read, so that `buffer_chunks` x `chunk_size` bytes bound a stream
    even when fewer than the three chunks always in hand are allowed."""
    if buffer_chunks >= 3:
        return chunk_size
    return max(1, chunk_size * buffer_chunks // 3)


@dataclass(frozen=True)
class Stream:
    """How one body is streamed, settled before its first byte.

    `length` is the exact number of bytes to send (Content-Length or a range); the read
    stops there, and a source that ends sooner aborts the transfer. Each read and each
    send of a chunk passes `turns` first, when given. `ahead`: read one chunk ahead of the
    sends in a producer task (for a reader whose reads wait on the network). `inline`: the
    reader's reads and close never wait (a local file, memory), so its close needs no shield.
    """

    chunk_size: int
    buffer_chunks: int
    transform: Transform | None = None
    length: int | None = None
    turns: Turns | None = None
    ahead: bool = True
    inline: bool = False


async def pump(
    reader: ObjectReader, start: Message, send: Send, receive: Receive, stream: Stream
) -> Transfer:
    """Send `start`, then the reader's bytes (through the stream's transform), then the end."""
    chunk_size = read_size(stream.chunk_size, stream.buffer_chunks)
    if stream.length is not None and stream.length <= chunk_size:
        return await _send_whole(
            reader, start, send, stream.transform, stream.length, stream.inline
        )
    transfer = Transfer()
    source = _Chunks(reader, chunk_size, stream, transfer)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_disconnect, receive, tasks.cancel_scope, transfer)
            with ExitStack() as stack:
                chunks: AsyncIterator[bytes] = source
                if stream.ahead:
                    queue, pending = anyio.create_memory_object_stream[bytes](
                        max_buffer_size=max(0, stream.buffer_chunks - 4)
                    )
                    chunks = stack.enter_context(pending)
                    tasks.start_soon(_produce, source, queue)
                await _send_chunks(chunks, start, send, stream.turns, transfer)
            if transfer.error is None:
                if transfer.first_byte_at is None:
                    await _send_start(start, send, transfer)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await source.aclose()
    if transfer.error is not None and transfer.outcome != "client_disconnect":
        if transfer.first_byte_at is None:
            raise transfer.error
        transfer.outcome = "upstream_abort"
        raise StreamAborted("the store failed after the response had started") from (transfer.error)
    return transfer


async def _send_chunks(
    chunks: AsyncIterator[bytes],
    start: Message,
    send: Send,
    turns: Turns | None,
    transfer: Transfer,
) -> None:
    """Each chunk, the start before the first; `transfer.first_byte_at` says it was sent."""
    async for chunk in chunks:
        if transfer.first_byte_at is None:
            await _send_start(start, send, transfer)
        if turns is not None:
            await turns.wait()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        transfer.bytes_sent += len(chunk)
        # Returns once the transport has drained: the next chunk waits unread.
        await send({"type": "http.response.body", "body": b"", "more_body": True})


async def _send_start(start: Message, send: Send, transfer: Transfer) -> None:
    await send(start)
    transfer.first_byte_at = time.perf_counter()


async def _send_whole(
    reader: ObjectReader,
    start: Message,
    send: Send,
    transform: Transform | None,
    length: int,
    inline: bool,
) -> Transfer:
    """The fast path of a body that fits in one read; errors are raised before the start."""
    transfer = Transfer()
    try:
        parts: list[bytes] = []
        got = 0
        while got < length:
            data = await reader.read(length - got)
            if not data:
                raise TruncatedSource(f"{length - got} bytes short of the announced size")
            parts.append(data)
            got += len(data)
    finally:
        if inline:  # a close that never waits cannot be cancelled half done
            await reader.aclose()
        else:
            with anyio.CancelScope(shield=True):
                await reader.aclose()
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    if transform is not None:
        body = transform.feed(body) + transform.finish()
    await _send_start(start, send, transfer)
    await send({"type": "http.response.body", "body": body, "more_body": False})
    transfer.bytes_sent = len(body)
    return transfer


class _Chunks:
    """The reader's bytes through the transform, chunk by chunk; a store error ends the
    iteration and is kept in `transfer.error`; the reader is closed at the end."""

    def __init__(
        self, reader: ObjectReader, chunk_size: int, stream: Stream, transfer: Transfer
    ) -> None:
        self._reader, self._chunk_size, self._transform = reader, chunk_size, stream.transform
        self._remaining, self._transfer, self._turns = stream.length, transfer, stream.turns
        self._done = self._closed = False

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            while not self._done:
                if self._remaining is not None and self._remaining <= 0:
                    self._done = True
                    break
                size = self._chunk_size
                if self._remaining is not None:
                    size = min(size, self._remaining)
                if self._turns is not None:
                    await self._turns.wait()
                # A local file's reads never suspend, nor does a send to a client that has
                # gone: the disconnect watcher must get its turn.
                await anyio.lowlevel.checkpoint()
                data = await self._reader.read(size)
                if not data:
                    if self._remaining:
                        raise TruncatedSource(
                            f"{self._remaining} bytes short of the announced size"
                        )
                    self._done = True
                    break
                if self._remaining is not None:
                    self._remaining -= len(data)
                if self._transform is not None:
                    data = self._transform.feed(data)
                if data:
                    return data
            if self._transform is not None:
                tail, self._transform = self._transform.finish(), None
                if tail:
                    return tail
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            self._done, self._transform = True, None
            self._transfer.error = exc
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._reader.aclose()


async def _produce(source: _Chunks, chunks: MemoryObjectSendStream[bytes]) -> None:
    with chunks:
        async for data in source:
            await chunks.send(data)


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope, transfer: Transfer) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            transfer.outcome = "client_disconnect"
            scope.cancel()
            return
