"""Fixtures only: seeded stores (local, memory, S3, GCS), tokens, streamer on a real socket.

The parts they wrap live in testkit/ (shared with the benchmark); tests import those parts
from there, never from this file or from one another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fsspec
import hypothesis
import pytest

from streamer.config import Settings
from streamer.demo import training_log
from testkit.dataset import put_run, seed
from testkit.emulators import (
    BUCKET,
    ENDPOINTS,
    azure_options,
    azurite,
    close_azure_filesystems,
    fake_gcs,
    fsspec_conf,
    gcs_options,
    make_bucket,
    moto_server,
    s3_options,
)
from testkit.observing import AccessLog
from testkit.servers import SECRET, JWKSServer, Running, TokenFactory, serve_in_thread
from testkit.servers import make_token as _make_token

# No test holds code to a time limit (benchmarks measure, tests check): hypothesis's
# per-example deadline would fail a correct example on a loaded machine.
hypothesis.settings.register_profile("streamer", deadline=None)
hypothesis.settings.load_profile("streamer")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def make_token() -> TokenFactory:
    return _make_token


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


STORES = ["local", "memory", "s3", "gs", "az"]


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


@pytest.fixture(scope="session")
def az_endpoint() -> Iterator[str]:
    """Azurite for the whole session, with a container; fsspec's az config points at it."""
    with azurite() as endpoint, fsspec_conf("az", **azure_options(endpoint)):
        make_bucket("az")
        yield endpoint
        fsspec.get_filesystem_class("az").clear_instance_cache()
        close_azure_filesystems()


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
        request.getfixturevalue(ENDPOINTS[kind])
        root = f"{kind}://{BUCKET}/conformance"
    seed(root)
    return root


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


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    """The access-log lines written while the test runs."""
    handler = AccessLog()
    logger = logging.getLogger("streamer.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
