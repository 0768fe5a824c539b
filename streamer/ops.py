"""Operations: graceful drain on SIGTERM, readiness, and the cap on concurrent streams.

Drain. uvicorn's own SIGTERM handler closes the listener at once. Each worker, at the end
of its lifespan startup (in its main thread, after uvicorn has installed its handlers),
wraps that handler: SIGTERM marks the process draining (`/readyz` answers 503) and hands
the signal on to uvicorn only `drain_delay_s` later. uvicorn then closes the listener and
gives running requests `timeout_graceful_shutdown` (STREAMER_GRACE_S) before cancelling
them, which aborts their connections. This works the same with one process and with
uvicorn's multiprocess supervisor, which forwards SIGTERM to every worker. A second
SIGTERM skips the rest of the delay.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

import anyio

from .auth import Authenticator
from .budget import Budget
from .errors import Overloaded
from .storage import Store

logger = logging.getLogger("uvicorn.error")

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    """Whether this process is draining, and the SIGTERM hook that starts it."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.draining = False
        # Called as the listener closes: what runs until its end rather than its grace.
        self.on_close: list[Callable[[], object]] = []
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> bool:
        """Wrap the running server's SIGTERM handler; False where that cannot be done."""
        if threading.current_thread() is not threading.main_thread():
            return False  # an embedded server (tests): signals belong to the host
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        loop = asyncio.get_running_loop()
        previous_handler: Handler = previous

        def handler(sig: int, frame: FrameType | None) -> None:
            for hook in self.on_close:
                hook()
            previous_handler(sig, frame)

        def arm(sig: int) -> None:
            self._timer = loop.call_later(self.delay_s, handler, sig, None)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            first, self.draining = not self.draining, True
            if first and self.delay_s > 0:
                logger.info("SIGTERM: draining; the listener closes in %g s", self.delay_s)
                loop.call_soon_threadsafe(arm, sig)
                return
            if self._timer is not None:
                self._timer.cancel()
            logger.info("SIGTERM: closing the listener")
            handler(sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True


class Service(Protocol):
    """What readiness asks of the service: its keys and its store."""

    @property
    def auth(self) -> Authenticator: ...

    @property
    def store(self) -> Store: ...


class Readiness:
    """`/readyz`: keys loaded, store reachable (checked at most every `cache_s`), not draining."""

    def __init__(
        self, app: Service, drain: Drain, cache_s: float = 2.0, timeout_s: float = 2.0
    ) -> None:
        self.app = app
        self.drain = drain
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._store_ok = False
        self._checked_at: float | None = None
        self._lock = anyio.Lock()

    def known(self) -> tuple[bool, str] | None:
        """The answer when it needs no store check now (cached, or decided without); else None."""
        if self.drain.draining:
            return False, "draining"
        if not self.app.auth.ready:
            return False, "keys not loaded"
        if self._stale():
            return None
        return (True, "ready") if self._store_ok else (False, "store unreachable")

    async def check(self) -> tuple[bool, str]:
        if (answer := self.known()) is not None:
            return answer
        if self._stale():
            async with self._lock:
                if self._stale():
                    await self._ping()
        return (True, "ready") if self._store_ok else (False, "store unreachable")

    def _stale(self) -> bool:
        return self._checked_at is None or time.monotonic() - self._checked_at >= self.cache_s

    async def _ping(self) -> None:
        try:
            with anyio.fail_after(self.timeout_s):
                await self.app.store.ping()
        except Exception as exc:
            if self._store_ok or self._checked_at is None:
                logger.warning("readiness: store unreachable (%s)", type(exc).__name__)
            self._store_ok = False
        else:
            self._store_ok = True
        self._checked_at = time.monotonic()


class StreamSlots:
    """At most `limit` downloads at once in this process, each holding its bytes of the
    memory `budget`; beyond either, 503 overloaded."""

    def __init__(self, limit: int, budget: Budget | None = None, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.budget = budget if budget is not None else Budget(None, retry_after_s)
        self.retry_after_s = retry_after_s
        self.active = 0

    @contextmanager
    def take(self, size: int = 0) -> Iterator[None]:
        """A slot and `size` bytes of the budget for the block."""
        if self.active >= self.limit:
            raise Overloaded(self.retry_after_s)
        with self.budget.reserve(size):
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1
