"""RetryingReader in-process: resumes at the right offset, counts, gives up, never hides."""

from __future__ import annotations

import pytest

from streamer.storage import RetryingReader
from testkit.flaky import DATA, Counts, Flaky, Reader, read_all

pytestmark = pytest.mark.anyio


async def test_transient_faults_resume_at_the_current_offset() -> None:
    flaky, counts = Flaky(break_after=3000, breaks=2), Counts()
    reader = RetryingReader(flaky.open_at, 100, counts, retries=3, backoff_s=0)
    assert await read_all(reader) == DATA[100:]
    assert flaky.offsets == [100, 3100, 6100]
    assert counts.retries == 2
    assert flaky.closed == 3


async def test_a_persistent_fault_is_raised_after_the_retries() -> None:
    flaky, counts = Flaky(break_after=1000, breaks=100), Counts()
    reader = RetryingReader(flaky.open_at, 0, counts, retries=3, backoff_s=0)
    received = bytearray()
    with pytest.raises(ConnectionResetError):
        while chunk := await reader.read(4096):
            received += chunk
    assert bytes(received) == DATA[: len(received)]
    assert len(received) == 4000
    assert counts.retries == 3
    assert flaky.closed == 4


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), PermissionError("denied")])
async def test_permanent_errors_are_not_retried(error: Exception) -> None:
    flaky, counts = Flaky(break_after=0, breaks=1, error=error), Counts()
    reader = RetryingReader(flaky.open_at, 0, counts, retries=3, backoff_s=0)
    with pytest.raises(type(error)):
        await reader.read(10)
    assert (counts.retries, flaky.offsets) == (0, [0])


async def test_a_failing_open_is_retried() -> None:
    counts, attempts = Counts(), []

    async def open_at(offset: int) -> Reader:
        attempts.append(offset)
        if len(attempts) < 3:
            raise TimeoutError("connect timeout")
        return Reader(Flaky(break_after=0, breaks=0), offset)

    reader = RetryingReader(open_at, 5, counts, retries=3, backoff_s=0)
    assert await read_all(reader) == DATA[5:]
    assert attempts == [5, 5, 5]
    assert counts.retries == 2
