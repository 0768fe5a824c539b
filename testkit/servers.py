"""streamer on a real loopback socket: under uvicorn in a thread of this process, or as a
`streamer serve` child process; the secret its tokens are signed with; and the state of a
JWKS endpoint the tests serve.

Rules: every server binds 127.0.0.1 on a port the system picks; each is ready only once it
says so (no sleeps); whoever starts one stops it (the generators stop theirs on close).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn

from streamer.app import Streamer
from streamer.auth import issue_token
from streamer.config import Settings
from streamer.observe import Observe
from streamer.protocol import GuardedHttpToolsProtocol
from streamer.storage import Store
from testkit.dataset import ORG
from testkit.emulators import Emulator, free_port

SECRET = "test-secret-of-at-least-thirty-two-bytes!"
TokenFactory = Callable[..., str]


def make_token(
    org: str = ORG,
    permissions: tuple[str, ...] = ("model:read",),
    sub: str = "alice",
    ttl_s: int = 3600,
) -> str:
    """A token signed with SECRET: `model:read` on the dataset's organisation for an hour."""
    return issue_token(SECRET, sub, org, list(permissions), ttl_s=ttl_s)


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


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command, with `STREAMER_PORT` a free port (a test's own `--port` wins): no test
    depends on what else listens on the default port."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env={**clean, "STREAMER_PORT": str(free_port()), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
