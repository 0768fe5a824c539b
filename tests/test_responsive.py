"""Responsive while saturated: probes and new downloads answer while streams hold the loop.

Real uvicorn on a loopback port. Some clients ask for a large log and read nothing (their
streams wait on flow control, holding chunks), others download it over and over as fast
as they can; meanwhile probes and a small download must answer, whole and correct. The
test checks that they answer, never how fast: the benchmark measures that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from streamer.config import Settings
from testkit.dataset import LOG_A1, put_run
from testkit.servers import SECRET, Running, serve_in_thread
from testkit.wire import connect, read_response, read_to_close

BIG = "/api/v1/models/mdl-big/training-metrics/logs/download?run_id=run-big"
SMALL = "/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a1"


@pytest.fixture(scope="module")
def busy_server(big_store: tuple[str, bytes]) -> Iterator[Running]:
    yield from serve_in_thread(Settings(storage_url=big_store[0], jwt_secret=SECRET))


def request(path: str, token: str | None = None, method: str = "GET") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


def test_probes_and_a_new_download_answer_while_streams_hold_the_loop(
    busy_server: Running, token: str
) -> None:
    stalled = [connect(busy_server) for _ in range(4)]
    stop = threading.Event()
    received: list[int] = []
    flowing = threading.Event()

    def download_over_and_over() -> None:
        with httpx.Client(base_url=busy_server.url, timeout=30) as client:
            while not stop.is_set():
                with client.stream("GET", BIG, headers={"Authorization": f"Bearer {token}"}) as r:
                    for part in r.iter_raw():
                        received.append(len(part))
                        flowing.set()
                        if stop.is_set():
                            break

    busy = [threading.Thread(target=download_over_and_over) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(request(BIG, token))
            assert sock.recv(1).startswith(b"H")  # answered, then left unread
        for thread in busy:
            thread.start()
        assert flowing.wait(30)  # bytes are moving
        for _ in range(5):
            for path, body in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
                with connect(busy_server) as sock:
                    sock.sendall(request(path))
                    status, headers, got = read_response(sock)
                assert (status, got) == (b"HTTP/1.1 200 OK", body)
                assert headers["x-request-id"]
            with connect(busy_server) as sock:
                sock.sendall(request(SMALL, token))
                status, _, got = read_response(sock)
            assert (status, got) == (b"HTTP/1.1 200 OK", LOG_A1)
    finally:
        stop.set()
        for thread in busy:
            thread.join(60)
        for sock in stalled:
            sock.close()
    assert sum(received) > 0  # the busy clients were served all along


def responses(
    data: bytes, bodiless: tuple[bool, ...] = ()
) -> list[tuple[bytes, dict[str, str], bytes]]:
    """Every response in `data`, each with a Content-Length; those marked `bodiless` (the
    answers to HEAD) have no body."""
    out: list[tuple[bytes, dict[str, str], bytes]] = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {
            name.decode().lower(): value.decode().strip()
            for name, _, value in (line.partition(b":") for line in lines)
        }
        length = int(headers["content-length"])
        if len(out) < len(bodiless) and bodiless[len(out)]:
            length = 0
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def test_probes_on_one_connection_answer_in_order_and_http_1_0_closes(
    busy_server: Running,
) -> None:
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with connect(busy_server) as sock:
        sock.sendall(request("/healthz") + request("/readyz", method="HEAD") + last)
        answers = responses(read_to_close(sock), bodiless=(False, True))
    assert [(status, body) for status, _, body in answers] == [
        (b"HTTP/1.1 200 OK", b"ok\n"),
        (b"HTTP/1.1 200 OK", b""),
        (b"HTTP/1.1 200 OK", b"ok\n"),
    ]
    assert answers[1][1]["content-length"] == "6"  # what GET would say: "ready\n"
    assert answers[2][1]["connection"] == "close"
    with connect(busy_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        (status, headers, body), *more = responses(read_to_close(sock))
    assert (status, headers["connection"], body, more) == (b"HTTP/1.1 200 OK", "close", b"ok\n", [])


def test_a_probe_that_is_not_get_or_head_still_reaches_the_middleware(
    busy_server: Running,
) -> None:
    with connect(busy_server) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        status, headers, body = read_response(sock)
    assert status.startswith(b"HTTP/1.1 405") and headers["allow"] == "GET, HEAD"
    assert orjson.loads(body)["code"] == "method_not_allowed"


def test_a_purge_is_seen_at_once_with_tokens_and_metadata_cached(
    tmp_path: Path, token: str
) -> None:
    root = tmp_path / "store"
    put_run(str(root), "mdl-gone", "run-1", LOG_A1)
    settings = Settings(storage_url=str(root), jwt_secret=SECRET, catalog_ttl_s=3600)
    url = "/api/v1/models/mdl-gone/training-metrics/logs/download"
    for running in serve_in_thread(settings):
        with httpx.Client(base_url=running.url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {token}"}
            assert client.get(url, headers=auth).content == LOG_A1
            assert client.get(url, headers=auth).content == LOG_A1
            (root / "models/mdl-gone/runs/run-1/training.log").unlink()
            gone = client.get(url, headers=auth)
        assert (gone.status_code, gone.json()["code"]) == (404, "logs_purged")
