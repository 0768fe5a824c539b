"""Fair turns of the event loop for the work that moves bytes.

One turn of the event loop runs every task that is ready. With hundreds of streams
ready at once, each reading or sending a chunk of a MiB, a turn lasts as long as all of
those chunks take together, and a new connection, a probe or the first byte of a new
download waits for two or three such turns. `Turns` caps the chunk operations a turn
runs: the pump passes it before each read and each send of a chunk; past `size` passes
in a turn, a pass waits for a later turn, first come first served. It never holds
anything while waiting: a stream paused by a slow client takes no one's place.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """At most about `size` passes per turn of the event loop (a waiter let through in
    one turn runs in the next, beside that turn's own first passes)."""

    size = 16

    def __init__(self, size: int | None = None) -> None:
        self.size = size or self.size
        self._passed = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False

    async def wait(self) -> None:
        """Return at once while this turn has passes left and no one waits; else queue."""
        if self._passed < self.size and not self._waiting:
            self._passed += 1
            self._arm()
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._arm()
        await future  # a cancelled waiter's future is cancelled too, and skipped

    def _arm(self) -> None:
        """Start counting afresh on the next turn."""
        if not self._armed:
            self._armed = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._armed = False
        self._passed = 0
        while self._waiting and self._passed < self.size:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                self._passed += 1
        if self._passed:
            self._arm()
