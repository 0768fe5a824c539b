"""A small response in one socket write: its head held until its body, then both at once.

The rules it keeps:
- Only a response that announces a `content-length` of at most `SMALL` bytes is held, and
  only until the application's next message. When that message is the whole body
  (`more_body` false), uvicorn's own `send` writes the head and the body into a buffer,
  and the two go out in one write; anything else releases the head first, as it was.
- A held head was never sent: a new response start replaces it (uvicorn's 500 after an
  application that failed between the two), and nothing of it reaches the client.
- The end of the response (uvicorn's `on_response`, which may answer a pipelined request
  at once) runs after the write, and a close asked for in between follows the write: the
  bytes keep their order on the connection.

This wraps uvicorn's `RequestResponseCycle.send`, and sets its `transport` and
`on_response` for the length of one call: pyproject.toml bounds uvicorn to the minor
versions this is tested on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .asgi import Message, Send

SMALL = 64 * 1024


class _Buffer:
    """Stands in for the transport while one small response is written."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        self.closing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def flush(self) -> None:
        if self.parts:
            self.transport.write(b"".join(self.parts))
        if self.closing:
            self.transport.close()


def _small(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-length":
            return value.isdigit() and int(value) <= SMALL
    return False


def one_write(cycle: Any) -> Send:
    """`cycle.send`, writing a small response's head and whole body at once."""
    send: Send = cycle.send
    held: Message | None = None

    async def coalescing_send(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            held = None
            if not cycle.response_started and _small(message):
                held = message
                return
        elif held is not None:
            start, held = held, None
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await _together(cycle, send, start, message)
                return
            await send(start)
        await send(message)

    return coalescing_send


async def _together(cycle: Any, send: Send, start: Message, body: Message) -> None:
    transport, on_response = cycle.transport, cycle.on_response
    buffer, ended = _Buffer(transport), False

    def end() -> None:
        nonlocal ended
        ended = True

    cycle.transport, cycle.on_response = buffer, end
    try:
        await send(start)
        await send(body)
    finally:
        cycle.transport, cycle.on_response = transport, on_response
        buffer.flush()
    if ended:
        on_response()
