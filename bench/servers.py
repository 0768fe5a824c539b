"""Start and stop the servers under test, each its own child process on a loopback port.

streamer (`python -m streamer serve`), the Python baselines (`python -m bench.baselines`),
nginx (non-daemon, a generated config, its own prefix and temp dirs, sendfile on) and the
S3 emulator (moto server, ranged GETs served from the stored bytes: testkit/moto_ranged.py).
A server is ready once it answers HTTP; all are stopped with SIGTERM (then SIGKILL) by
their own pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from testkit.emulators import moto_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A child process serving HTTP on 127.0.0.1:`port`."""

    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        log: Path,
        probe: str = "/",
        cwd: Path | None = None,
    ) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{name} exited at start (see {log})")
            try:
                with urllib.request.urlopen(self.url + probe, timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers: ready
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start (see {log})") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def streamer(
    storage_url: str,
    secret: str,
    log: Path,
    *,
    chunk_size: int | None = None,
    buffer_chunks: int | None = None,
    env: Mapping[str, str] | None = None,
    max_streams: int | None = 4096,
    source: Path | None = None,
) -> Server:
    """`streamer serve`; `max_streams` None keeps the default of STREAMER_MAX_STREAMS.

    `source` is a folder holding another revision's `streamer` package (bench/revision.py),
    served with this interpreter: run from there, `python -m streamer` imports that one.
    """
    port = free_port()
    settings = {"STREAMER_STORAGE_URL": storage_url, "STREAMER_JWT_SECRET": secret}
    if max_streams is not None:
        settings["STREAMER_MAX_STREAMS"] = str(max_streams)
    if chunk_size is not None:
        settings["STREAMER_CHUNK_SIZE"] = str(chunk_size)
    if buffer_chunks is not None:
        settings["STREAMER_BUFFER_CHUNKS"] = str(buffer_chunks)
    args = [sys.executable, "-m", "streamer", "serve", "--port", str(port)]
    return Server(
        "streamer",
        args,
        port,
        env={**(env or {}), **settings},
        log=log,
        probe="/healthz",
        cwd=source,
    )


def baselines(root: Path, log: Path, *, bare: bool = False) -> Server:
    """The starlette baselines, or with `bare` the bare ASGI callable alone."""
    port = free_port()
    args = [sys.executable, "-m", "bench.baselines", "--port", str(port), "--root", str(root)]
    return Server("baselines", [*args, "--bare"] if bare else args, port, log=log)


def nginx_binary() -> str | None:
    """nginx's path, or None; `BENCH_NGINX` names another binary, or `none` for none."""
    chosen = os.environ.get("BENCH_NGINX")
    if chosen:
        return None if chosen == "none" else chosen
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 5;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx(binary: str, root: Path, prefix: Path, log: Path) -> Server:
    """nginx with sendfile, one worker (streamer runs one process too), on a free port."""
    port = free_port()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root))
    args = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return Server("nginx", args, port, log=log)


def moto(log: Path) -> Server:
    port = free_port()
    return Server("moto", moto_command(port), port, log=log)
