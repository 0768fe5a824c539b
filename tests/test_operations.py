"""`streamer serve` as a real process: drain on SIGTERM, the stream cap, several workers."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import orjson
import pytest

from testkit.dataset import LOG_A2
from testkit.observing import metric
from testkit.servers import SECRET, ServerProcess

PATH = "/api/v1/models/{}/training-metrics/logs/download"
ROUTE = "/api/v1/models/{model_id}/training-metrics/logs/download"


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll `condition` until it holds; fail after `timeout_s` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def status(server: ServerProcess, path: str) -> int:
    try:
        return httpx.get(server.url + path, timeout=10).status_code
    except httpx.TransportError:
        return 0


def refused(server: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


class Download:
    """A download on its own connection, read only as far as the test says."""

    def __init__(self, server: ServerProcess, token: str, model: str = "mdl-big") -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.connection.request(
            "GET", PATH.format(model), headers={"Authorization": f"Bearer {token}"}
        )
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., ServerProcess]]:
    with ExitStack() as stack:

        def start(root: str, *args: str) -> ServerProcess:
            env = {"STREAMER_STORAGE_URL": root, "STREAMER_JWT_SECRET": SECRET}
            server = ServerProcess(list(args), env)
            stack.callback(server.stop)
            return server

        yield start


def access_lines(server: ServerProcess) -> list[dict[str, object]]:
    # A copy first: the reader thread appends to the deque meanwhile.
    return [orjson.loads(line) for line in list(server.lines) if line.startswith('{"time"')]


def test_sigterm_drains_then_lets_running_downloads_finish(
    big_store: tuple[str, bytes], processes: Callable[..., ServerProcess], token: str
) -> None:
    root, log = big_store
    server = processes(root, "--drain-delay-s", "600", "--grace-s", "600")
    download = Download(server, token)
    try:
        assert download.status == 200
        head = download.response.read(64 * 1024)
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: status(server, "/readyz") == 503, "/readyz to fail")
        # During the drain delay new requests are still served.
        assert status(server, "/healthz") == 200
        other = httpx.get(
            server.url + PATH.format("mdl-alpha"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert (other.status_code, other.content) == (200, LOG_A2)
        # A second SIGTERM ends the delay: the listener closes, the running download goes on.
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(server), "the listener to close")
        rest = download.response.read()
        assert hashlib.sha256(head + rest).digest() == hashlib.sha256(log).digest()
    finally:
        download.close()
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    server.stop()
    outcomes = [line["outcome"] for line in access_lines(server) if line["model"] == "mdl-big"]
    assert outcomes == ["complete"]


def test_downloads_still_running_after_the_grace_are_aborted(
    big_store: tuple[str, bytes], processes: Callable[..., ServerProcess], token: str
) -> None:
    root, log = big_store
    server = processes(root, "--grace-s", "1")
    download = Download(server, token)
    try:
        assert download.status == 200
        assert int(download.response.headers["content-length"]) == len(log)
        download.response.read(64 * 1024)
        server.process.send_signal(signal.SIGTERM)
        # The client reads nothing more until the server says it gave up on the download.
        wait_until(
            lambda: any("shutdown grace ran out" in line for line in server.lines), "the abort"
        )
        with pytest.raises(http.client.IncompleteRead):
            download.response.read()
    finally:
        download.close()
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    server.stop()
    outcomes = [line["outcome"] for line in access_lines(server) if line["model"] == "mdl-big"]
    assert outcomes == ["aborted"]
    assert any("shutdown grace ran out" in line for line in server.lines)
    assert not any("Traceback" in line for line in server.lines)


def test_overload_is_503_with_retry_after_after_auth_and_404(
    big_store: tuple[str, bytes],
    processes: Callable[..., ServerProcess],
    token: str,
) -> None:
    root, _ = big_store
    server = processes(root, "--max-streams", "1")
    url = server.url + PATH.format("mdl-alpha")
    auth = {"Authorization": f"Bearer {token}"}
    held = Download(server, token)  # reads one chunk, then holds the only slot
    try:
        assert held.status == 200
        held.response.read(64 * 1024)
        busy = httpx.get(url, headers=auth, timeout=10)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert busy.headers["content-type"] == "application/problem+json"
        assert busy.json()["code"] == "overloaded"
        # A bad token and an unknown model still get their own answers.
        assert httpx.get(url, timeout=10).status_code == 401
        unknown = httpx.get(server.url + PATH.format("mdl-nope"), headers=auth, timeout=10)
        assert unknown.status_code == 404
        assert status(server, "/readyz") == 200
    finally:
        held.close()
    overloaded = 1
    while (answer := httpx.get(url, headers=auth, timeout=10)).status_code == 503:
        overloaded += 1  # the slot frees once the server has seen the client leave
        assert overloaded < 500, "the slot was never released"
    assert answer.content == LOG_A2
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "streamer_requests_total", route=ROUTE, status="503") == overloaded


def test_two_workers_share_their_metrics(
    big_store: tuple[str, bytes], processes: Callable[..., ServerProcess], token: str
) -> None:
    root, _ = big_store
    server = processes(root, "--workers", "2", "--max-streams", "1")
    # The supervisor binds before its workers listen: wait for both to have started.
    wait_until(
        lambda: sum("Application startup complete" in line for line in server.lines) == 2,
        "two workers",
    )
    auth = {"Authorization": f"Bearer {token}"}
    # With one slot per worker, a second held download must land on the other worker.
    held = [Download(server, token)]
    overloaded = 0
    try:
        assert held[0].status == 200
        while True:
            attempt = Download(server, token)
            if attempt.status == 200:
                held.append(attempt)
                break
            attempt.response.read()
            attempt.close()
            overloaded += 1
            assert overloaded < 500, "the second worker never took a download"
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert metric(text, "streamer_active_streams") == 2
    finally:
        for download in held:
            download.close()
    small = 12
    for _ in range(small):
        response = httpx.get(server.url + PATH.format("mdl-alpha"), headers=auth, timeout=10)
        assert response.status_code in (200, 503)
        overloaded += response.status_code == 503

    def settled() -> bool:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return metric(text, "streamer_active_streams") == 0 and metric(
            text, "streamer_requests_total", route=ROUTE
        ) == (small + 2 + overloaded)

    wait_until(settled, "both workers' counts to add up")
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "streamer_requests_total", route=ROUTE, status="503") == overloaded
    assert metric(text, "streamer_client_disconnects_total") == 2

    def workers() -> set[object]:
        return {line["worker"] for line in access_lines(server) if line["model"] == "mdl-big"}

    wait_until(lambda: len(workers()) == 2, "access-log lines from both workers")


def worker_pids(server: ServerProcess, count: int) -> list[int]:
    """The pids of `count` workers, once each has finished its startup."""
    wait_until(
        lambda: sum("Application startup complete" in line for line in server.lines) >= count,
        f"{count} workers",
    )
    found = [re.search(r"Started server process \[(\d+)\]", line) for line in server.lines]
    return [int(match[1]) for match in found if match]


def test_drain_with_two_workers(
    big_store: tuple[str, bytes], processes: Callable[..., ServerProcess], token: str
) -> None:
    root, log = big_store
    server = processes(root, "--workers", "2", "--drain-delay-s", "600", "--grace-s", "600")
    workers = worker_pids(server, 2)
    download = Download(server, token)
    try:
        assert download.status == 200
        head = download.response.read(64 * 1024)
        server.process.send_signal(signal.SIGTERM)  # the supervisor forwards it to each worker
        for _ in range(4):  # either worker may answer: each must be draining
            wait_until(lambda: status(server, "/readyz") == 503, "/readyz to fail")
        assert status(server, PATH.format("mdl-alpha")) == 401  # still served
        for pid in workers:  # a second SIGTERM, straight to the workers, ends the delay
            os.kill(pid, signal.SIGTERM)
        # The supervisor holds the listening socket until it exits, so connections are
        # not refused yet; the workers stop accepting them.
        wait_until(
            lambda: sum("Shutting down" in line for line in server.lines) == 2, "the workers"
        )
        rest = download.response.read()
        assert hashlib.sha256(head + rest).digest() == hashlib.sha256(log).digest()
    finally:
        download.close()
    assert server.process.wait(60) == 0


def test_a_killed_worker_stops_counting_in_live_gauges(
    big_store: tuple[str, bytes], processes: Callable[..., ServerProcess], token: str
) -> None:
    root, _ = big_store
    server = processes(root, "--workers", "2", "--max-streams", "1")
    worker_pids(server, 2)
    held = [Download(server, token)]
    try:
        while len(held) < 2:  # one download per worker, as above
            attempt = Download(server, token)
            if attempt.status == 200:
                held.append(attempt)
            else:
                attempt.response.read()
                attempt.close()

        def active() -> float:
            text = httpx.get(server.url + "/metrics", timeout=10).text
            return metric(text, "streamer_active_streams")

        assert active() == 2

        def scraper() -> list[object]:
            return [line["worker"] for line in access_lines(server) if line["route"] == "/metrics"]

        wait_until(lambda: bool(scraper()), "the scrape's access-log line")
        os.kill(int(str(scraper()[0])), signal.SIGKILL)  # a worker holding one stream
        wait_until(lambda: active() == 1, "the dead worker's stream to drop out")
    finally:
        for download in held:
            download.close()


def test_serve_refuses_a_websocket_upgrade_with_a_problem_and_no_error(
    processes: Callable[..., ServerProcess], local_store: str
) -> None:
    server = processes(local_store)
    upgrade = (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(upgrade.encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(body)["code"] == "malformed_request"
    httpx.get(server.url + "/healthz", headers={"X-Request-ID": "after-upgrade"}, timeout=10)
    wait_until(lambda: any("after-upgrade" in line for line in server.lines), "the access line")
    assert not [line for line in server.lines if "ERROR" in line or "Traceback" in line]
