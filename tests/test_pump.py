"""The pump in-process, with fake ASGI receive/send and hang guards."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streamer.encoders import LineEncoder
from streamer.pump import (
    Message,
    Stream,
    StreamAborted,
    Transfer,
    TruncatedSource,
    pump,
    read_size,
)
from testkit.pumping import Client, Counted, CountedSource, Source, Transport, uvicorn_cycle

pytestmark = pytest.mark.anyio

START: Message = {"type": "http.response.start", "status": 200, "headers": []}


async def run(source: Source, client: Client, **options: Any) -> Transfer:
    """pump() with small chunks and a hang guard."""
    options = {"chunk_size": 1024, "buffer_chunks": 2, **options}
    with anyio.fail_after(5):
        return await pump(source, START, client.send, client.receive, Stream(**options))


async def test_sends_everything_then_a_clean_end() -> None:
    source, client = Source(total=10 * 1024), Client()
    transfer = await run(source, client)
    assert client.messages[0] is START
    assert client.body == b"x" * 10 * 1024
    assert client.bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert transfer.outcome == "complete" and transfer.bytes_sent == 10 * 1024
    assert source.closed


async def test_length_stops_the_read_exactly() -> None:
    source, client = Source(total=10 * 1024), Client()
    await run(source, client, chunk_size=1000, length=2500)
    assert client.body == b"x" * 2500


async def test_disconnect_stops_the_producer_and_closes_the_reader() -> None:
    source, client = Source(), Client(disconnect_after=3)
    transfer = await run(source, client)
    assert transfer.outcome == "client_disconnect"
    assert source.closed
    reads = source.reads
    await anyio.wait_all_tasks_blocked()
    assert source.reads == reads
    assert client.bodies[-1]["more_body"] is True  # never a clean end


async def test_slow_client_bounds_read_ahead() -> None:
    source, client = Source(), Client(block_after=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: run(source, client, buffer_chunks=3))
            await client.blocked.wait()
            await anyio.wait_all_tasks_blocked()
            # Everything in flight counts against buffer_chunks: the chunk at the client
            # and the one in the producer's hand (none queued with 3; see pump()).
            assert source.reads <= 3
            client.disconnect_after = 0
            client.disconnected.set()
    assert source.closed


@pytest.mark.parametrize("buffer_chunks", [1, 2, 3, 5])
async def test_slow_client_bounds_bytes_in_hand_below_three_chunks_too(buffer_chunks: int) -> None:
    # SPEC: memory per stream <= STREAMER_BUFFER_CHUNKS x STREAMER_CHUNK_SIZE. Three chunks
    # are in hand whatever the queue (two here, the third being the transport's), so with
    # fewer allowed the reads must shrink.
    chunk_size = 3000
    source, client = Source(chunk=b"x" * chunk_size), Client(block_after=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                lambda: run(source, client, chunk_size=chunk_size, buffer_chunks=buffer_chunks)
            )
            await client.blocked.wait()
            await anyio.wait_all_tasks_blocked()
            in_hand = source.bytes_read + read_size(chunk_size, buffer_chunks)
            assert in_hand <= buffer_chunks * chunk_size, (source.reads, source.bytes_read)
            client.disconnect_after = 0
            client.disconnected.set()


async def test_failure_before_the_first_byte_is_raised_to_the_caller() -> None:
    source, client = Source(fail_after=0), Client()
    with pytest.raises(ConnectionResetError):
        await run(source, client)
    assert client.messages == []
    assert source.closed


async def test_failure_after_the_first_byte_aborts() -> None:
    source, client = Source(fail_after=5), Client()
    with pytest.raises(StreamAborted) as caught:
        await run(source, client)
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert client.messages[0] is START
    assert all(m["more_body"] for m in client.bodies)
    assert source.closed


async def test_short_source_aborts() -> None:
    source, client = Source(total=3 * 1024), Client()
    with pytest.raises(StreamAborted) as caught:
        await run(source, client, length=4096)
    assert isinstance(caught.value.__cause__, TruncatedSource)
    assert all(m["more_body"] for m in client.bodies)


async def test_json_transform_aborts_without_closing_bracket() -> None:
    line = b"2026-03-13T10:00:00Z [INFO] hello\n"
    source, client = Source(chunk=line, fail_after=4), Client()
    with pytest.raises(StreamAborted):
        await run(source, client, transform=LineEncoder("json"))
    assert client.body.startswith(b"[")
    assert not client.body.rstrip().endswith(b"]")


async def test_json_transform_of_empty_source() -> None:
    source, client = Source(total=0), Client()
    await run(source, client, transform=LineEncoder("json"))
    assert client.body == b"[]"


# What a slow client costs: the pump against uvicorn's own response cycle and flow control
# (it waits for the transport to drain before it writes), over a transport that holds what
# it was given until the client takes it, as uvloop's does (a view of each body, no copy).


@pytest.mark.parametrize(
    ("ahead", "buffer_chunks", "held"),
    [(True, 4, 2), (True, 6, 4), (False, 4, 1), (False, 6, 1)],
)
async def test_a_slow_client_costs_the_server_at_most_its_bound_in_chunks(
    ahead: bool, buffer_chunks: int, held: int
) -> None:
    # SPEC 4: memory per stream <= buffer_chunks x chunk_size. Counted at the server: every
    # chunk alive. A client slower than the server leaves the pump waiting on uvicorn's
    # flow control; whenever the client has taken a whole chunk, the stream holds `held`
    # chunks: the one being written and, read ahead, one more plus the queue (the pump
    # waits for the drain before it takes the next chunk). In between, the transport still
    # holds the last bytes of the chunk before (below its low-water mark): one chunk more.
    chunk_size, chunks = 256 * 1024, 12
    Counted.alive = 0
    source = CountedSource(chunk_size, chunk_size * chunks)
    transport = Transport()
    cycle = uvicorn_cycle(transport)
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(chunk_size * chunks).encode())],
    }
    steady: list[int] = []
    done = anyio.Event()

    async def download() -> None:
        await pump(
            source,
            start,
            cycle.send,  # type: ignore[arg-type]
            Client().receive,
            Stream(chunk_size=chunk_size, buffer_chunks=buffer_chunks, ahead=ahead),
        )
        done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(download)
            while not done.is_set():
                await anyio.wait_all_tasks_blocked()
                whole = bool(transport.buffer) and len(transport.buffer[0]) <= 40_000
                transport.take(40_000)
                if whole:
                    await anyio.wait_all_tasks_blocked()
                    if not done.is_set():
                        steady.append(Counted.alive)
    assert transport.received > chunk_size * chunks  # the head and every byte
    assert max(steady) == held, steady
    assert source.peak <= held + 1 <= buffer_chunks, source.peak
