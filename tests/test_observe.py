"""Probes, metrics and the access log: in-process middleware and a server on a real socket."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from streamer import metrics
from streamer.app import Streamer
from streamer.config import Settings
from streamer.errors import Overloaded
from streamer.observe import Observe
from streamer.ops import Drain, Readiness, StreamSlots
from streamer.pump import Message, StreamAborted
from testkit.dataset import LOG_A2, seed
from testkit.observing import AccessLog, metric, scrape
from testkit.servers import SECRET, Running

PATH = "/api/v1/models/{}/training-metrics/logs/download"
ROUTE = "/api/v1/models/{model_id}/training-metrics/logs/download"
METRIC_NAMES = (
    "streamer_requests_total",
    "streamer_bytes_sent_total",
    "streamer_active_streams",
    "streamer_ttfb_seconds",
    "streamer_stream_duration_seconds",
    "streamer_upstream_errors_total",
    "streamer_upstream_retries_total",
    "streamer_catalog_refresh_failures_total",
    "streamer_client_disconnects_total",
)


# Probes and /metrics on a real socket.


def test_probes_need_no_token(server: Running) -> None:
    for path, body in [("/healthz", "ok\n"), ("/readyz", "ready\n")]:
        response = httpx.get(server.url + path, timeout=10)
        assert (response.status_code, response.text) == (200, body)
        assert response.headers["x-request-id"]
        head = httpx.head(server.url + path, timeout=10)
        assert (head.status_code, head.content) == (200, b"")
    response = httpx.post(server.url + "/healthz", timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_metrics_exposes_every_named_metric(server: Running) -> None:
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    for name in METRIC_NAMES:
        assert f"\n# TYPE {name} " in text, name


def test_requests_are_counted_by_route_template(
    server: Running, token: str, access_log: AccessLog
) -> None:
    before = scrape(server.url)
    ok = httpx.get(
        server.url + PATH.format("mdl-alpha"),
        params={"format": "json"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert ok.status_code == 200
    assert httpx.get(server.url + PATH.format("mdl-alpha"), timeout=10).status_code == 401
    assert httpx.get(server.url + "/no/such/path", timeout=10).status_code == 404
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("streamer_requests_total", route=ROUTE, status="200", format="json") == 1
    assert delta("streamer_requests_total", route=ROUTE, status="401", format="none") == 1
    assert delta("streamer_requests_total", route="unmatched", status="404") == 1
    assert "mdl-alpha" not in after
    assert delta("streamer_ttfb_seconds_count") == 1
    assert delta("streamer_stream_duration_seconds_count") == 1
    assert delta("streamer_bytes_sent_total") >= len(ok.content)
    assert metric(after, "streamer_active_streams") == 0


def test_one_access_log_line_per_request_without_the_token(
    server: Running, token: str, access_log: AccessLog
) -> None:
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "log-test-1"}
    response = httpx.get(server.url + PATH.format("mdl-alpha"), headers=headers, timeout=10)
    assert response.content == LOG_A2
    line = access_log.wait(request_id="log-test-1")
    assert line == {
        **line,
        "method": "GET",
        "route": ROUTE,
        "subject": "alice",
        "organization": "org-acme",
        "model": "mdl-alpha",
        "run": "run-a2",
        "format": "txt",
        "status": 200,
        "bytes": len(LOG_A2),
        "outcome": "complete",
    }
    assert line["duration_s"] >= 0
    bad = {"Authorization": f"Bearer {token}x", "X-Request-ID": "log-test-2"}
    httpx.get(server.url + PATH.format("mdl-alpha"), headers=bad, timeout=10)
    refused = access_log.wait(request_id="log-test-2")
    assert (refused["status"], refused["subject"], refused["outcome"]) == (401, None, "complete")
    odd = {"Authorization": f"Bearer {token}", "X-Request-ID": "log-test-3"}
    httpx.get(server.url + PATH.format("mdl-" + "x" * 5000), headers=odd, timeout=10)
    missing = access_log.wait(request_id="log-test-3")
    # Not of the catalog's shape (too long): the client's path is not copied into the log.
    assert (missing["status"], missing["model"]) == (404, None)
    ids = [line["request_id"] for line in access_log.lines]
    assert (ids.count("log-test-1"), ids.count("log-test-2")) == (1, 1)
    assert all(token not in raw for raw in access_log.raw)


def test_client_disconnect_is_logged_and_counted(
    big_store: tuple[str, bytes],
    settings_server: Callable[..., Running],
    token: str,
    access_log: AccessLog,
) -> None:
    root, _ = big_store
    running = settings_server(Settings(storage_url=root, jwt_secret=SECRET))
    before = scrape(running.url)
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "leaves-early"}
    with httpx.stream(
        "GET", running.url + PATH.format("mdl-big"), headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    line = access_log.wait(request_id="leaves-early")
    assert line["outcome"] == "client_disconnect"
    after = scrape(running.url)
    assert (
        metric(after, "streamer_client_disconnects_total")
        - metric(before, "streamer_client_disconnects_total")
        == 1
    )
    assert metric(after, "streamer_active_streams") == 0
    # The client left: its doing, not the store's.
    upstream = "streamer_upstream_errors_total"
    assert metric(after, upstream) == metric(before, upstream)


def test_every_download_that_streams_a_body_is_counted(
    server: Running, token: str, access_log: AccessLog
) -> None:
    """200 and 206 stream a body; a HEAD or a 304 does not."""
    auth = {"Authorization": f"Bearer {token}"}
    url = server.url + PATH.format("mdl-alpha")
    before = scrape(server.url)
    part = httpx.get(url, headers={**auth, "Range": "bytes=0-9"}, timeout=10)
    assert (part.status_code, part.content) == (206, LOG_A2[:10])
    assert httpx.get(url, headers=auth, timeout=10).status_code == 200
    assert httpx.head(url, headers=auth, timeout=10).status_code == 200
    after = scrape(server.url)

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    assert delta("streamer_ttfb_seconds_count") == 2
    assert delta("streamer_stream_duration_seconds_count") == 2
    assert metric(after, "streamer_active_streams") == 0


def test_access_log_lines_carry_the_problem_code(
    server: Running, token: str, access_log: AccessLog
) -> None:
    cases = [
        ("code-1", PATH.format("mdl-alpha"), {}, 401, "missing_token"),
        ("code-2", "/no/such/path", {}, 404, "not_found"),
        ("code-3", PATH.format("mdl-nope"), {"Authorization": f"Bearer {token}"}, 404, None),
    ]
    for rid, path, headers, status, _ in cases:
        response = httpx.get(server.url + path, headers={**headers, "X-Request-ID": rid})
        assert response.status_code == status
    assert access_log.wait(request_id="code-1")["code"] == "missing_token"
    assert access_log.wait(request_id="code-2")["code"] == "not_found"
    assert access_log.wait(request_id="code-3")["code"] == "model_not_found"
    httpx.post(server.url + "/healthz", headers={"X-Request-ID": "code-4"}, timeout=10)
    line = access_log.wait(request_id="code-4")
    assert (line["status"], line["code"], line["route"]) == (405, "method_not_allowed", "/healthz")
    httpx.get(server.url + "/healthz", headers={"X-Request-ID": "code-5"}, timeout=10)
    line = access_log.wait(request_id="code-5")
    assert (line["status"], line["code"], line["route"]) == (200, None, "/healthz")


# The middleware in-process, with apps that fail on purpose.


class FailingApp(Streamer):
    def __init__(self, settings: Settings, status: int, abort: bool) -> None:
        super().__init__(settings)
        self.status, self.abort = status, abort

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"x-request-id", b"failing")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": self.abort})
        if self.abort:
            raise StreamAborted("the store failed")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "abort", "outcome"), [(200, True, "upstream_abort"), (502, False, "complete")]
)
async def test_upstream_failures_are_counted(
    tmp_path: Path, access_log: AccessLog, status: int, abort: bool, outcome: str
) -> None:
    app = Observe(FailingApp(Settings(storage_url=str(tmp_path), jwt_secret=SECRET), status, abort))
    scope = {"type": "http", "method": "GET", "path": PATH.format("mdl-x"), "headers": []}
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    def upstream_errors() -> float:
        return metric(metrics.exposition().decode(), "streamer_upstream_errors_total")

    before = upstream_errors()
    with anyio.fail_after(10):
        if abort:
            with pytest.raises(StreamAborted):
                await app(scope, receive, send)
        else:
            await app(scope, receive, send)
    assert upstream_errors() == before + 1
    assert access_log.wait(request_id="failing")["outcome"] == outcome


# Readiness and the stream cap as units.


@pytest.mark.anyio
async def test_readiness_caches_the_store_check(tmp_path: Path) -> None:
    root = tmp_path / "store"
    seed(str(root))
    app = Streamer(Settings(storage_url=str(root), jwt_secret=SECRET))
    cached = Readiness(app, Drain(0), cache_s=3600)
    fresh = Readiness(app, Drain(0), cache_s=0)
    assert await cached.check() == (True, "ready")
    assert await fresh.check() == (True, "ready")
    root.rename(tmp_path / "gone")
    assert await cached.check() == (True, "ready")  # within the cache time: no store call
    assert await fresh.check() == (False, "store unreachable")
    cached.drain.draining = True
    assert await cached.check() == (False, "draining")


@pytest.mark.anyio
async def test_readiness_needs_the_keys_loaded(tmp_path: Path) -> None:
    seed(str(tmp_path))
    settings = Settings(storage_url=str(tmp_path), jwks_url=str(tmp_path / "jwks.json"))
    app = Streamer(settings)  # the JWKS is fetched at startup, which has not run
    assert await Readiness(app, Drain(0)).check() == (False, "keys not loaded")


def test_stream_slots_refuse_beyond_the_limit() -> None:
    slots = StreamSlots(2, retry_after_s=3)
    with slots.take(), slots.take():
        with pytest.raises(Overloaded) as refused:
            with slots.take():
                pass
        assert refused.value.headers == {"Retry-After": "3"}
        assert (refused.value.status, refused.value.code) == (503, "overloaded")
    with slots.take():
        assert slots.active == 1
    assert slots.active == 0


def test_drain_does_nothing_outside_the_main_thread() -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(Drain(5).install()))
    thread.start()
    thread.join(10)
    assert result == [False]
