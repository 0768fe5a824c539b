"""Shared fixtures: seeded stores (local, memory, S3, GCS), tokens, streamer on a real socket."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import uvicorn

from streamer.app import Streamer
from streamer.auth import issue_token
from streamer.config import Settings
from streamer.demo import training_log
from streamer.observe import Observe
from streamer.protocol import GuardedHttpToolsProtocol
from streamer.storage import Store
from tests.dataset import ORG, put_run, seed
from tests.emulators import (
    BUCKET,
    Emulator,
    fake_gcs,
    free_port,
    fsspec_conf,
    gcs_options,
    make_bucket,
    moto_server,
    s3_options,
)

# No test holds code to a time limit (benchmarks measure, tests check): hypothesis's
# per-example deadline would fail a correct example on a loaded machine.
hypothesis.settings.register_profile("streamer", deadline=None)
hypothesis.settings.load_profile("streamer")

SECRET = "test-secret-of-at-least-thirty-two-bytes!"
TokenFactory = Callable[..., str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def make_token() -> TokenFactory:
    def make(
        org: str = ORG,
        permissions: tuple[str, ...] = ("model:read",),
        sub: str = "alice",
        ttl_s: int = 3600,
    ) -> str:
        return issue_token(SECRET, sub, org, list(permissions), ttl_s=ttl_s)

    return make


@pytest.fixture(scope="session")
def token(make_token: TokenFactory) -> str:
    return make_token()


@pytest.fixture(scope="session")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("store")
    seed(str(root))
    return str(root)


BIG_LOG_MIB = 48


@pytest.fixture(scope="session")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """The fixture store plus mdl-big/run-big, a log far larger than any socket buffer."""
    root = tmp_path_factory.mktemp("big-store")
    seed(str(root))
    log = training_log(1024 * 1024) * BIG_LOG_MIB
    put_run(str(root), "mdl-big", "run-big", log)
    return str(root), log


STORES = ["local", "memory", "s3", "gs"]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server for the whole session, with a bucket; fsspec's s3 config points at it."""
    with moto_server() as endpoint, fsspec_conf("s3", **s3_options(endpoint)):
        make_bucket("s3")
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """fake-gcs-server for the whole session, with a bucket; fsspec's gs config points at it."""
    with fake_gcs() as endpoint, fsspec_conf("gs", **gcs_options(endpoint)):
        make_bucket("gs")
        yield endpoint


@pytest.fixture(scope="session", params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """The conformance fixture store, seeded in each kind of store in turn."""
    kind: str = request.param
    if kind == "local":
        root: str = request.getfixturevalue("local_store")
        return root
    if kind == "memory":
        root = "memory://conformance"
    else:
        request.getfixturevalue("s3_endpoint" if kind == "s3" else "gcs_endpoint")
        root = f"{kind}://{BUCKET}/conformance"
    seed(root)
    return root


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass
class Running:
    url: str
    app: Streamer


def serve_in_thread(
    settings: Settings,
    wrap: Callable[[Observe], Any] | None = None,
    http: type[asyncio.Protocol] = GuardedHttpToolsProtocol,
    store: Store | None = None,
) -> Generator[Running, None, None]:
    """streamer under uvicorn, in a thread of this process, on a real loopback socket,
    with the HTTP protocol `serve` uses (or `http`).

    `wrap` may put ASGI middleware (a recorder, say) around the app; `store` replaces the
    one that the settings name (a store that records its calls, say).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = Streamer(settings, store)
    served = Observe(app) if wrap is None else wrap(Observe(app))
    config = uvicorn.Config(served, log_level="warning", access_log=False, lifespan="on", http=http)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not server.ready.wait(30):
            raise RuntimeError("streamer did not start")
        host, port = sock.getsockname()
        yield Running(f"http://{host}:{port}", app)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def base_settings(local_store: str) -> Settings:
    return Settings(storage_url=local_store, jwt_secret=SECRET, catalog_ttl_s=0)


@pytest.fixture(scope="session")
def server(store_url: str) -> Iterator[Running]:
    """streamer over each kind of store: every test that uses it runs once per store."""
    yield from serve_in_thread(Settings(storage_url=store_url, jwt_secret=SECRET, catalog_ttl_s=0))


@pytest.fixture
def settings_server() -> Iterator[Callable[..., Running]]:
    """Start a server with its own settings; stopped at the end of the test."""
    stack: list[Generator[Running, None, None]] = []

    def start(settings: Settings, **changes: Any) -> Running:
        generator = serve_in_thread(replace(settings, **changes))
        stack.append(generator)
        return next(generator)

    yield start
    for generator in reversed(stack):
        generator.close()


class ServerProcess(Emulator):
    """`streamer serve` as a child process; ready once uvicorn says it is running."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "streamer", "serve", "--port", str(self.port), *args]
        super().__init__(
            "streamer serve",
            command,
            "Uvicorn running on",
            env={**os.environ, **env},
            keep_lines=None,  # the tests read its access log
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise LookupError(field)


@dataclass
class JWKSServer:
    httpd: ThreadingHTTPServer
    url: str
    document: bytes = b"{}"
    status: int = 200
    # When set, requests wait for it before answering (a fetch held open on demand).
    gate: threading.Event | None = None
    hits: int = 0
    paths: list[str] = field(default_factory=list)  # the path of each request
    arrived: threading.Event = field(default_factory=threading.Event)  # set at each request


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    state: list[JWKSServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state[0]
            server.hits += 1
            server.paths.append(self.path)
            server.arrived.set()
            if server.gate is not None:
                server.gate.wait(30)
            self.send_response(server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(server.document)))
            self.end_headers()
            self.wfile.write(server.document)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(JWKSServer(httpd, f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
