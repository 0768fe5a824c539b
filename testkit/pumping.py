"""Shared by the tests: moved from tests/test_pump.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from streamer.pump import Message


class Source:
    """An endless (or failing) reader that records how far it was read and whether closed."""

    def __init__(
        self, chunk: bytes = b"x" * 1024, fail_after: int | None = None, total: int | None = None
    ):
        self.chunk, self.fail_after, self.total = chunk, fail_after, total
        self.reads = self.bytes_read = 0
        self.closed = False

    async def read(self, size: int) -> bytes:
        await anyio.lowlevel.checkpoint()
        if self.fail_after is not None and self.reads >= self.fail_after:
            raise ConnectionResetError("upstream reset")
        size = min(size, len(self.chunk))
        if self.total is not None:
            size = min(size, self.total - self.bytes_read)
        if size <= 0:
            return b""
        self.reads += 1
        self.bytes_read += size
        return self.chunk[:size]

    async def aclose(self) -> None:
        self.closed = True


class Client:
    """Fake ASGI peer: records what was sent; can block sends or disconnect."""

    def __init__(self, disconnect_after: int | None = None, block_after: int | None = None):
        self.messages: list[Message] = []
        self.disconnect_after = disconnect_after
        self.block_after = block_after
        self.disconnected = anyio.Event()
        self.blocked = anyio.Event()
        self.requested = False

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        bodies = len(self.bodies)
        if self.disconnect_after is not None and bodies >= self.disconnect_after:
            self.disconnected.set()
        if self.block_after is not None and bodies >= self.block_after:
            self.blocked.set()
            await anyio.sleep_forever()

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    @property
    def bodies(self) -> list[Any]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.bodies)


class Counted(bytes):
    """A chunk that counts itself alive, so the test sees every reference the server
    keeps: in the pump, in its queue, in uvicorn and in the transport."""

    alive = 0

    def __new__(cls, data: bytes) -> Counted:
        Counted.alive += 1
        return super().__new__(cls, data)

    def __del__(self) -> None:
        Counted.alive -= 1


class CountedSource(Source):
    def __init__(self, chunk_size: int, total: int) -> None:
        super().__init__(b"x" * chunk_size, total=total)
        self.peak = 0  # chunks alive, the new one included, at any read

    async def read(self, size: int) -> bytes:
        data = await super().read(size)
        if not data:
            return data
        chunk = Counted(data)
        self.peak = max(self.peak, Counted.alive)
        return chunk


class Transport:
    """asyncio's write-buffer flow control (64 KiB high water, a quarter of it low) over a
    buffer that holds each written object until the client has taken all of it."""

    high, low = 64 * 1024, 16 * 1024

    def __init__(self) -> None:
        self.buffer: list[memoryview] = []
        self.size = self.received = 0
        self.flow: FlowControl | None = None

    def write(self, data: bytes) -> None:
        if data:
            self.buffer.append(memoryview(data))
            self.size += len(data)
        if self.flow is not None and self.size > self.high:
            self.flow.pause_writing()

    def take(self, count: int) -> None:
        """The client reads up to `count` bytes, never past the end of one written object."""
        if self.buffer:
            head = self.buffer[0]
            count = min(count, len(head))
            if count == len(head):
                self.buffer.pop(0).release()
            else:
                self.buffer[0] = head[count:]
            self.size -= count
            self.received += count
        if self.flow is not None and self.size <= self.low:
            self.flow.resume_writing()

    def is_closing(self) -> bool:
        return False


def uvicorn_cycle(transport: Transport) -> RequestResponseCycle:
    flow = FlowControl(transport)  # type: ignore[arg-type]
    transport.flow = flow
    scope: Any = {"type": "http", "method": "GET", "path": "/", "headers": []}
    return RequestResponseCycle(
        scope=scope,
        transport=transport,  # type: ignore[arg-type]
        flow=flow,
        logger=logging.getLogger("uvicorn.error"),
        access_logger=logging.getLogger("uvicorn.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
