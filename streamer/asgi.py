"""The ASGI types every layer shares; this module imports nothing of streamer's.

Messages stay plain mappings rather than TypedDicts: one `send` carries every kind of
message, and uvicorn and the tests build them as dicts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class App(Protocol):
    """An ASGI 3 application."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...
