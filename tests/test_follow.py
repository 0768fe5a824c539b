"""Live follow over real sockets, on the local store, S3 (moto) and GCS (fake-gcs-server):
SPEC section 9. A writer in the test grows the log step by step; each step waits for the
client to have received what it wrote, never for a time."""

from __future__ import annotations

import asyncio
import gzip
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from anyio import wait_all_tasks_blocked
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamer.config import Settings
from streamer.encoders import reference_encode
from streamer.errors import InvalidQuery
from streamer.follow import Watches
from streamer.follow.wait import MAX_WAIT_S, parse_wait
from streamer.follow.watch import Snapshot, Watch
from streamer.observe import OPENAPI_DOCUMENT
from streamer.plan import parse_query
from streamer.storage import ObjectReader, Store
from tests.conftest import SECRET, Running, ServerProcess, serve_in_thread
from tests.dataset import ORG, put
from tests.emulators import BUCKET
from tests.test_observe import AccessLog, metric

pytestmark = pytest.mark.anyio

DOWNLOAD = "/api/v1/models/{}/training-metrics/logs/download"
LINES = [b"2026-03-13T12:00:%02dZ [INFO] step %d loss=0.%03d\n" % (i, i, i * 7) for i in range(60)]
GUARD_S = 60  # a hang guard, never a measure


@dataclass
class Writer:
    """A run of a model below `root`, its log grown as a training job grows it."""

    root: str
    model: str = field(default_factory=lambda: "mdl-f" + uuid.uuid4().hex[:10])
    run: str = "run-live"
    log: bytes = b""

    @property
    def folder(self) -> str:
        return f"models/{self.model}/runs/{self.run}"

    def start(self, log: bytes | None, status: str = "running") -> Writer:
        document = {"model_id": self.model, "organization_id": ORG}
        put(self.root, f"models/{self.model}/model.json", orjson.dumps(document))
        self.status(status)
        if log is not None:
            self.replace(log)
        return self

    def status(self, status: str) -> None:
        document = {"run_id": self.run, "status": status, "completed_at": None}
        put(self.root, f"{self.folder}/run.json", orjson.dumps(document))

    def append(self, data: bytes) -> None:
        """A local file grows in place; an object is uploaded again, longer."""
        if "://" in self.root:
            self.replace(self.log + data)
            return
        with open(Path(self.root, self.folder, "training.log"), "ab") as file:
            file.write(data)
        self.log += data

    def replace(self, log: bytes) -> None:
        put(self.root, f"{self.folder}/training.log", log)
        self.log = log


@pytest.fixture(params=["local", "s3", "gs"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind: str = request.param
    if kind == "local":
        return str(tmp_path)
    request.getfixturevalue("s3_endpoint" if kind == "s3" else "gcs_endpoint")
    return f"{kind}://{BUCKET}/follow-{uuid.uuid4().hex[:8]}"


def settings(root: str, **changes: Any) -> Settings:
    options: dict[str, Any] = {"catalog_ttl_s": 0, "follow_poll_s": 0.05, **changes}
    return Settings(storage_url=root, jwt_secret=SECRET, **options)


@pytest.fixture
def server(root: str) -> Iterator[Running]:
    yield from serve_in_thread(settings(root))


def url(running: Running, writer: Writer, **query: str) -> str:
    params = {"run_id": writer.run, "follow": "true", **query}
    return running.url + DOWNLOAD.format(writer.model) + "?" + str(httpx.QueryParams(params))


def encoded(log: bytes, style: str, *, final: bool) -> bytes:
    """What a follow of `log` in `style` has sent: only whole lines while the run is on."""
    if style == "txt":
        return log
    if not final:
        log = log[: log.rfind(b"\n") + 1]
    body = reference_encode(log, "json" if style == "json" else "ndjson")
    if style == "json" and not final:
        body = body[:-2] if log else b""  # the array is still open: no "\n]" yet
    return body


class Received:
    """The body of a streamed response, read up to what the test waits for."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.body = b""
        self.request_id = ""

    async def until(self, expected: bytes) -> None:
        with anyio.fail_after(GUARD_S):
            while len(self.body) < len(expected):
                self.body += await anext(self.chunks)
        assert self.body == expected

    async def rest(self) -> bytes:
        with anyio.fail_after(GUARD_S):
            async for chunk in self.chunks:
                self.body += chunk
        return self.body


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    handler = AccessLog()
    logger = logging.getLogger("streamer.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@asynccontextmanager
async def following(
    running: Running, writer: Writer, token: str, **query: str
) -> AsyncIterator[Received]:
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": uuid.uuid4().hex}
    async with (
        httpx.AsyncClient(timeout=GUARD_S) as client,
        client.stream("GET", url(running, writer, **query), headers=headers) as response,
    ):
        assert response.status_code == 200
        got = Received(response)
        got.request_id = headers["X-Request-ID"]
        yield got


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


class FailingStore(Store):
    """The local store, whose reads of logs fail once `failing` is set."""

    failing = False

    async def open(self, key: str, start: int = 0, end: int | None = None) -> ObjectReader:
        if self.failing:
            raise OSError("the disk went away")
        return await super().open(key, start, end)


async def test_a_store_failure_aborts(tmp_path: Path, token: str, access_log: AccessLog) -> None:
    root = str(tmp_path)
    writer = Writer(root).start(LINES[0])
    store = FailingStore.from_url(root)
    assert isinstance(store, FailingStore)
    for running in serve_in_thread(settings(root), store=store):
        async with following(running, writer, token) as got:
            await got.until(writer.log)
            store.failing = True
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


# Resume: cut a follow anywhere, resume it, and the joined bodies are the log exactly.


@pytest.fixture(scope="module")
def resume_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Running]]:
    root = str(tmp_path_factory.mktemp("resume"))
    generator = serve_in_thread(settings(root))
    yield root, next(generator)
    generator.close()


def receive_until(response: httpx.Response, enough: Callable[[bytes], bool]) -> bytes:
    got = b""
    for chunk in response.iter_raw():
        got += chunk
        if enough(got):
            break
    return got


def resume(
    client: httpx.Client, target: str, writer: Writer, remaining: int, ended: bool, token: str
) -> bytes:
    """The resumed body: of a run that has ended, or of one that ends once the resumed
    follow has received the `remaining` bytes the log holds."""
    headers = {"Authorization": f"Bearer {token}"}
    if ended:
        writer.status("completed")
        return client.get(target, headers=headers).content
    with client.stream("GET", target, headers=headers) as response:
        body = b""
        if not remaining:
            writer.status("completed")
        for chunk in response.iter_raw():
            body += chunk
            if len(body) >= remaining and not ended:
                ended = True
                writer.status("completed")
        return body


@given(
    first=st.integers(1, 12),
    more=st.integers(0, 12),
    ended=st.booleans(),
    data=st.data(),
)
@hsettings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_cut_txt_follow_resumes_at_the_bytes_received(
    resume_server: tuple[str, Running],
    token: str,
    first: int,
    more: int,
    ended: bool,
    data: st.DataObject,
) -> None:
    root, running = resume_server
    writer = Writer(root).start(b"".join(LINES[:first]))
    cut = data.draw(st.integers(0, len(writer.log)), label="cut")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=GUARD_S) as client:
        with client.stream("GET", url(running, writer), headers=headers) as response:
            received = receive_until(response, lambda got: len(got) >= cut)[:cut]
        writer.append(b"".join(LINES[first : first + more]))
        target = url(running, writer, offset=str(len(received)))
        rest = resume(client, target, writer, len(writer.log) - len(received), ended, token)
    assert received + rest == writer.log


@given(
    first=st.integers(1, 12),
    more=st.integers(0, 12),
    ended=st.booleans(),
    data=st.data(),
)
@hsettings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_cut_ndjson_follow_resumes_at_the_next_line(
    resume_server: tuple[str, Running],
    token: str,
    first: int,
    more: int,
    ended: bool,
    data: st.DataObject,
) -> None:
    root, running = resume_server
    writer = Writer(root).start(b"".join(LINES[:first]))
    lines = data.draw(st.integers(0, first), label="lines received")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=GUARD_S) as client:
        ndjson = url(running, writer, format="ndjson")
        with client.stream("GET", ndjson, headers=headers) as response:
            got = receive_until(response, lambda got: got.count(b"\n") >= lines)
        kept = b"".join(got.splitlines(keepends=True)[:lines])
        last = orjson.loads(kept.splitlines()[-1])["line"] if kept else 0
        writer.append(b"".join(LINES[first : first + more]))
        expected = reference_encode(writer.log, "ndjson")
        target = url(running, writer, format="ndjson", from_line=str(last + 1))
        rest = resume(client, target, writer, len(expected) - len(kept), ended, token)
    assert kept + rest == expected


# One poller per followed run, whatever the number of followers.


async def test_the_followers_of_a_run_share_each_poll() -> None:
    watch, calls, release = Watch(0.0), [], anyio.Event()

    async def poll() -> Snapshot:
        calls.append(anyio.get_current_task().id)
        await release.wait()
        return Snapshot(anyio.current_time())

    seen, got = anyio.current_time(), []

    async def follower() -> None:
        got.append(await watch.after(seen, poll))

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(follower)
            await wait_all_tasks_blocked()
            assert len(calls) == 1
            release.set()
    assert len(calls) == 1 and len(got) == 10 and all(snap is got[0] for snap in got)


async def test_a_follower_that_leaves_mid_poll_hands_the_poll_on() -> None:
    watch, calls, release = Watch(0.0), [], anyio.Event()
    scopes: dict[int, anyio.CancelScope] = {}

    async def poll() -> Snapshot:
        calls.append(anyio.get_current_task().id)
        await release.wait()
        return Snapshot(anyio.current_time())

    seen, got = anyio.current_time(), []

    async def follower() -> None:
        with anyio.CancelScope() as scope:
            scopes[anyio.get_current_task().id] = scope
            got.append(await watch.after(seen, poll))

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tasks:
            for _ in range(3):
                tasks.start_soon(follower)
            await wait_all_tasks_blocked()
            scopes[calls[0]].cancel()
            await wait_all_tasks_blocked()
            assert len(calls) == 2 and calls[1] != calls[0]
            release.set()
    assert len(got) == 2 and got[0] is got[1]


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


# Get Logs with wait=N.

LOGS = "/api/v1/models/{}/training-metrics/logs"


async def get_page(
    client: httpx.AsyncClient, running: Running, writer: Writer, token: str, **query: str
) -> httpx.Response:
    params = {"run_id": writer.run, "direction": "forward", **query}
    headers = {"Authorization": f"Bearer {token}"}
    return await client.get(running.url + LOGS.format(writer.model), params=params, headers=headers)


class SignallingWatches(Watches):
    """The server's watches, which tell the test (in another thread) when one is taken."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(interval_s)
        self.taken = threading.Event()

    @contextmanager
    def watch(self, model_id: str, run_id: str) -> Iterator[Watch]:
        self.loop = asyncio.get_running_loop()  # the server's, for close_soon()
        with super().watch(model_id, run_id) as found:
            self.taken.set()
            yield found

    def close_soon(self) -> None:
        """`close()` in the server's thread, as SIGTERM does when the listener closes."""
        self.loop.call_soon_threadsafe(self.close)


async def test_wait_answers_as_soon_as_lines_arrive(server: Running, root: str, token: str) -> None:
    writer = Writer(root).start(LINES[0])
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        first = (await get_page(client, server, writer, token)).json()
        assert [entry["offset"] for entry in first["data"]] == [0]
        answers: list[httpx.Response] = []

        async def held() -> None:
            cursor = first["next_cursor"]
            answers.append(await get_page(client, server, writer, token, cursor=cursor, wait="60"))

        watches = server.app.watches = SignallingWatches(server.app.watches.interval_s)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(held)
            assert await anyio.to_thread.run_sync(watches.taken.wait, GUARD_S)  # held
            assert not answers
            writer.append(LINES[1][:9])  # not a whole line yet: still held
            writer.append(LINES[1][9:])
    page = answers[0].json()
    assert answers[0].status_code == 200
    assert [entry["offset"] for entry in page["data"]] == [len(LINES[0])]
    assert page["next_cursor"] is not None


async def test_wait_times_out_with_the_same_cursor(server: Running, root: str, token: str) -> None:
    writer = Writer(root).start(LINES[0] + LINES[1][:5])
    async with httpx.AsyncClient(timeout=GUARD_S) as client:
        first = (await get_page(client, server, writer, token)).json()
        cursor = first["next_cursor"]
        now = (await get_page(client, server, writer, token, cursor=cursor)).json()
        waited = await get_page(client, server, writer, token, cursor=cursor, wait="1")
    assert waited.status_code == 200
    assert waited.json() == now and now["data"] == []


async def test_wait_does_not_hold_a_page_of_a_terminal_run(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(LINES[0], status="completed")
    for running in serve_in_thread(settings(str(tmp_path))):
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            first = (await get_page(client, running, writer, token)).json()
            cursor = first["next_cursor"]
            assert cursor is None
            page = await get_page(client, running, writer, token, wait="60")
        assert page.json() == first


@pytest.mark.parametrize("wait", ["61", "-1", "1.5", "", "soon", "0x1"])
def test_a_malformed_wait_is_invalid_query(wait: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_wait(b"wait=" + wait.encode())
    with pytest.raises(InvalidQuery):
        parse_wait(b"wait=1&wait=1")
    assert parse_wait(b"") == 0 and parse_wait(b"wait=60") == 60 and parse_wait(b"wait=00") == 0


def test_the_openapi_document_states_the_follow_parameters() -> None:
    document = orjson.loads(OPENAPI_DOCUMENT.read_bytes())
    parameters = document["components"]["parameters"]
    assert parameters["Wait"]["schema"]["maximum"] == MAX_WAIT_S
    for name, value in [("offset", parameters["Offset"]), ("from_line", parameters["FromLine"])]:
        top = str(value["schema"]["maximum"]).encode()
        parse_query(b"follow=1&" + name.encode() + b"=" + top)
        with pytest.raises(InvalidQuery):
            parse_query(b"follow=1&" + name.encode() + b"=" + top + b"0")
    for value in parameters["Follow"]["schema"]["enum"]:
        parse_query(b"follow=" + value.encode())
    operations = [
        op
        for item in document["paths"].values()
        for name, op in item.items()
        if name != "parameters"
    ]
    names = {
        p.get("$ref", "").rpartition("/")[2] for op in operations for p in op.get("parameters", [])
    }
    assert {"Follow", "Offset", "FromLine", "Wait"} <= names


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


async def test_follows_are_counted_in_the_metrics(server: Running, root: str, token: str) -> None:
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


async def test_shutdown_answers_a_held_page_at_once(tmp_path: Path, token: str) -> None:
    writer = Writer(str(tmp_path)).start(LINES[0])
    generator = serve_in_thread(settings(str(tmp_path)))
    running = next(generator)
    watches = running.app.watches = SignallingWatches(running.app.watches.interval_s)
    answers: list[httpx.Response] = []
    try:
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            first = (await get_page(client, running, writer, token)).json()

            async def held() -> None:
                cursor = first["next_cursor"]
                page = await get_page(client, running, writer, token, cursor=cursor, wait="60")
                answers.append(page)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(held)
                assert await anyio.to_thread.run_sync(watches.taken.wait, GUARD_S)
                watches.close_soon()
    finally:
        generator.close()
    assert answers[0].status_code == 200 and answers[0].json()["data"] == []


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
