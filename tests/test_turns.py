"""streamer.turns: at most about `size` passes per turn of the event loop, in order."""

from __future__ import annotations

import asyncio
from collections import Counter

import anyio
import pytest

from streamer.turns import Turns

pytestmark = pytest.mark.anyio


class Ticker:
    """Counts the turns of the event loop: one callback per turn, rescheduled each time."""

    def __init__(self) -> None:
        self.turn = 0
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.turn += 1
        if self._running:
            self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._running = False


async def test_each_turn_lets_at_most_twice_size_through_and_everyone_passes() -> None:
    turns, ticker = Turns(size=3), Ticker()
    passed: list[tuple[int, int]] = []  # (task, turn)

    async def stream(number: int) -> None:
        for _ in range(4):
            await turns.wait()
            passed.append((number, ticker.turn))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for number in range(20):
                tasks.start_soon(stream, number)
    ticker.stop()
    assert Counter(number for number, _ in passed) == dict.fromkeys(range(20), 4)
    per_turn = Counter(turn for _, turn in passed)
    assert max(per_turn.values()) <= 2 * 3
    assert len(per_turn) >= 4 * 20 // 6


async def test_waiters_pass_first_come_first_served() -> None:
    turns = Turns(size=1)
    order: list[int] = []

    async def one(number: int) -> None:
        await turns.wait()
        order.append(number)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for number in range(8):
                tasks.start_soon(one, number)
    assert order == list(range(8))


async def test_a_cancelled_waiter_takes_no_one_s_place() -> None:
    turns = Turns(size=1)
    passed: list[int] = []
    scopes: list[anyio.CancelScope] = []

    async def one(number: int) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await turns.wait()
            passed.append(number)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for number in range(4):
                tasks.start_soon(one, number)
            await anyio.lowlevel.checkpoint()  # 0 passes; 1, 2 and 3 wait, in that order
            scopes[1].cancel()
    assert passed == [0, 2, 3]


async def test_one_stream_alone_never_waits() -> None:
    turns, ticker = Turns(size=2), Ticker()
    start = ticker.turn
    for _ in range(2):
        await turns.wait()
    assert ticker.turn == start  # both passes in the same turn, without yielding
    ticker.stop()
