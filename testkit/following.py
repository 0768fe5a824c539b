"""What the follow tests share: a run whose log the test grows step by step, the
client side of a follow, and the server's watches made observable."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from streamer.config import Settings
from streamer.encoders import reference_encode
from streamer.follow import Watches
from streamer.follow.watch import Watch
from testkit.dataset import ORG, put
from testkit.emulators import BUCKET, ENDPOINTS
from testkit.servers import SECRET, Running

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


STORES = ["local", "memory", "s3", "gs", "az"]


def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh folder of the store `request.param` names, its emulator started if need be."""
    kind: str = request.param
    if kind == "local":
        return str(tmp_path)
    if kind == "memory":
        return f"memory://follow-{uuid.uuid4().hex[:8]}"
    request.getfixturevalue(ENDPOINTS[kind])
    return f"{kind}://{BUCKET}/follow-{uuid.uuid4().hex[:8]}"


def settings(root: str, **changes: Any) -> Settings:
    options: dict[str, Any] = {"catalog_ttl_s": 0, "follow_poll_s": 0.05, **changes}
    return Settings(storage_url=root, jwt_secret=SECRET, **options)


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
