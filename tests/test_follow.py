"""Live follow of the download over real sockets, on the local store, S3 (moto) and GCS
(fake-gcs-server): SPEC section 9. A writer in the test grows the log step by step; each
step waits for the client to have received what it wrote, never for a time."""

from __future__ import annotations

import gzip
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from streamer.errors import InvalidQuery
from streamer.plan import parse_query
from streamer.storage import ObjectReader
from testkit.dataset import put
from testkit.fakes import SpyBackend
from testkit.following import (
    DOWNLOAD,
    GUARD_S,
    LINES,
    STORES,
    Writer,
    encoded,
    following,
    settings,
    store_root,
    url,
)
from testkit.observing import AccessLog, metric
from testkit.servers import SECRET, Running, ServerProcess, serve_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORES)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_root(request, tmp_path)


@pytest.fixture
def server(root: str) -> Iterator[Running]:
    yield from serve_in_thread(settings(root))


@pytest.mark.parametrize("style", ["txt", "ndjson", "json"])
async def test_follow_ends_cleanly_only_when_the_run_ends(
    server: Running, root: str, token: str, style: str, access_log: AccessLog
) -> None:
    writer = Writer(root).start(None)  # no log yet: the follow waits for it
    async with following(server, writer, token, format=style) as got:
        assert "content-length" not in got.response.headers
        assert got.response.headers["transfer-encoding"] == "chunked"
        for step in (LINES[0] + LINES[1], LINES[2][:10], LINES[2][10:] + LINES[3]):
            writer.append(step)
            await got.until(encoded(writer.log, style, final=False))
        writer.append(LINES[4][:-1])  # a last line without its "\n"
        writer.status("completed")
        assert await got.rest() == encoded(writer.log, style, final=True)
    line = access_log.wait(request_id=got.request_id)
    assert (line["follow"], line["end"], line["outcome"]) == (True, "complete", "complete")


async def test_a_terminal_run_is_an_ordinary_download(
    server: Running, root: str, token: str
) -> None:
    writer = Writer(root).start(b"".join(LINES[:3]), status="failed")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        response = await client.get(url(server, writer), headers=headers)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(writer.log))
    assert response.content == writer.log


@pytest.mark.parametrize(
    ("change", "end"),
    [
        pytest.param(lambda log: log[:-5], "shrank", id="shrank"),
        pytest.param(lambda log: b"X" + log[1:] + LINES[9], "replaced", id="replaced-longer"),
        pytest.param(lambda log: log[:-2] + b"?\n" + LINES[9], "replaced", id="replaced-tail"),
    ],
)
async def test_a_log_that_does_not_extend_what_was_sent_aborts(
    server: Running,
    root: str,
    token: str,
    change: Callable[[bytes], bytes],
    end: str,
    access_log: AccessLog,
) -> None:
    writer = Writer(root).start(b"".join(LINES[:3]))
    async with following(server, writer, token) as got:
        await got.until(writer.log)
        writer.replace(change(writer.log))
        with pytest.raises(httpx.RemoteProtocolError):
            await got.rest()
    assert got.body == b"".join(LINES[:3])
    line = access_log.wait(request_id=got.request_id)
    assert (line["follow"], line["end"], line["outcome"]) == (True, end, "aborted")


async def test_the_follow_limit_aborts(root: str, token: str, access_log: AccessLog) -> None:
    writer = Writer(root).start(LINES[0])
    for running in serve_in_thread(settings(root, follow_max_s=0.2)):
        async with following(running, writer, token) as got:
            with pytest.raises(httpx.RemoteProtocolError):
                await got.rest()
        assert writer.log.startswith(got.body)
        line = access_log.wait(request_id=got.request_id)
        assert (line["end"], line["outcome"]) == ("limit", "aborted")


class FailingBackend(SpyBackend):
    """The local store, whose reads of logs fail once `failing` is set."""

    failing = False

    async def open(
        self, key: str, start: int, end: int | None, pin: dict[str, str]
    ) -> ObjectReader:
        if self.failing:
            raise OSError("the disk went away")
        return await super().open(key, start, end, pin)


async def test_a_store_failure_aborts(tmp_path: Path, token: str, access_log: AccessLog) -> None:
    root = str(tmp_path)
    writer = Writer(root).start(LINES[0])
    backend = FailingBackend(root)
    store = backend.store
    for running in serve_in_thread(settings(root), store=store):
        async with following(running, writer, token) as got:
            await got.until(writer.log)
            backend.failing = True
            writer.append(LINES[1])
            with pytest.raises(httpx.RemoteProtocolError):
                await got.rest()
        line = access_log.wait(request_id=got.request_id)
        assert (line["end"], line["outcome"]) == ("store_failure", "upstream_abort")


@pytest.mark.parametrize(
    ("query", "follow", "offset", "from_line"),
    [
        (b"", False, 0, 1),
        (b"follow=true", True, 0, 1),
        (b"follow=1", True, 0, 1),
        (b"follow=false", False, 0, 1),
        (b"follow=0", False, 0, 1),
        (b"follow=true&offset=0012", True, 12, 1),
        (b"follow=1&format=ndjson&from_line=7", True, 0, 7),
        # Each applies only with follow and to its formats; elsewhere it is ignored.
        (b"offset=5&from_line=2", False, 0, 1),
        (b"follow=true&format=ndjson&offset=5", True, 0, 1),
        (b"follow=true&from_line=2", True, 0, 1),
    ],
)
def test_follow_parameters(query: bytes, follow: bool, offset: int, from_line: int) -> None:
    parsed = parse_query(query)
    assert (parsed.follow, parsed.offset, parsed.from_line) == (follow, offset, from_line)


@pytest.mark.parametrize(
    "query",
    [
        b"follow=yes",
        b"follow=",
        b"follow=true&follow=true",
        b"follow=true&offset=-1",
        b"offset=1e3",
        b"follow=true&format=json&from_line=0",
        b"from_line=x",
        b"follow=true&format=json&from_line=1&from_line=2",
    ],
)
def test_malformed_follow_parameters_are_invalid_query(query: bytes) -> None:
    with pytest.raises(InvalidQuery):
        parse_query(query)


async def test_a_malformed_follow_is_a_400(server: Running, token: str, root: str) -> None:
    writer = Writer(root).start(LINES[0])
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        response = await client.get(url(server, writer, follow="maybe"), headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_query"


async def test_followers_take_stream_slots(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(LINES[0])
    for running in serve_in_thread(settings(str(tmp_path), max_streams=1)):
        async with following(running, writer, token) as got:
            await got.until(writer.log)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(timeout=GUARD_S) as client:
                second = await client.get(url(running, writer), headers=headers)
            assert (second.status_code, second.json()["code"]) == (503, "overloaded")
            writer.status("completed")
            assert await got.rest() == writer.log


def test_shutdown_cuts_follows_as_the_listener_closes(tmp_path: Path, token: str) -> None:
    """With a grace far longer than the test's guard: the follow ends with the listener."""
    writer = Writer(str(tmp_path)).start(LINES[0])
    env = {
        "STREAMER_STORAGE_URL": str(tmp_path),
        "STREAMER_JWT_SECRET": SECRET,
        "STREAMER_FOLLOW_POLL_S": "0.05",
    }
    server = ServerProcess(["--grace-s", "600"], env)
    try:
        target = server.url + DOWNLOAD.format(writer.model)
        params = {"run_id": writer.run, "follow": "true"}
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(timeout=GUARD_S) as client,
            client.stream("GET", target, params=params, headers=headers) as response,
        ):
            chunks = response.iter_raw()
            assert next(chunks) == writer.log
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        assert server.process.wait(GUARD_S) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    lines = [orjson.loads(line) for line in server.lines if line.startswith('{"time"')]
    followed = [line for line in lines if line.get("follow")]
    assert [(line["end"], line["outcome"]) for line in followed] == [("shutdown", "aborted")]
    assert not any("Traceback" in line for line in server.lines)


async def test_follows_are_counted_in_the_metrics(
    server: Running, root: str, token: str, access_log: AccessLog
) -> None:
    writer = Writer(root).start(LINES[0])
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        before = (await client.get(server.url + "/metrics")).text
        async with following(server, writer, token) as got:
            await got.until(writer.log)
            writer.append(LINES[1])
            await got.until(writer.log)
            during = (await client.get(server.url + "/metrics")).text
            writer.status("completed")
            await got.rest()
        access_log.wait(request_id=got.request_id)  # logged once the follow has unwound
        after = (await client.get(server.url + "/metrics")).text

    def delta(text: str, name: str) -> float:
        return metric(text, name) - metric(before, name)

    assert delta(during, "streamer_followers_active") == 1
    assert delta(after, "streamer_followers_active") == 0
    assert delta(after, "streamer_follow_bytes_total") == len(writer.log)
    assert delta(after, "streamer_follow_polls_total") >= 1  # the append was found by a poll


async def test_a_gzip_log_is_sent_inflated_once_the_run_ends(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(None)
    log = b"".join(LINES[:5])
    put(writer.root, f"{writer.folder}/training.log.gz", gzip.compress(log))
    for running in serve_in_thread(settings(str(tmp_path))):
        async with following(running, writer, token, offset="3") as got:
            writer.status("completed")
            assert await got.rest() == log[3:]


async def test_head_of_a_follow_and_a_run_that_ends_without_a_log(
    tmp_path: Path, token: str, access_log: AccessLog
) -> None:
    writer = Writer(str(tmp_path)).start(None)
    headers = {"Authorization": f"Bearer {token}"}
    generator = serve_in_thread(settings(str(tmp_path)))
    running = next(generator)
    try:
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            head = await client.head(url(running, writer, format="ndjson"), headers=headers)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-type"] == "application/x-ndjson"
            async with following(running, writer, token) as got:
                writer.status("failed")  # and no log ever: nothing can be a whole log
                with pytest.raises(httpx.RemoteProtocolError):
                    await got.rest()
            line = access_log.wait(request_id=got.request_id)
            assert (line["end"], line["outcome"]) == ("gone", "aborted")
    finally:
        generator.close()
