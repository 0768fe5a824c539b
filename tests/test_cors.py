"""CORS (streamer/cors.py) over a real socket: `streamer serve` with and without
STREAMER_CORS_ORIGINS, asked as a browser asks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.cors import SAFE_HEADERS, allowed_headers
from testkit.dataset import LOG_A2
from testkit.servers import SECRET, ServerProcess

PANEL = "http://panel.example:8443"
OTHER = "http://evil.example"
LOGS = "/api/v1/models/mdl-alpha/training-metrics/logs"
DOWNLOAD = LOGS + "/download?run_id=run-a2"
EXPOSED = {"content-disposition", "content-range", "etag", "x-request-id", "retry-after"}


def start(local_store: str, origins: str | None) -> ServerProcess:
    env = {"STREAMER_STORAGE_URL": local_store, "STREAMER_JWT_SECRET": SECRET}
    if origins is not None:
        env["STREAMER_CORS_ORIGINS"] = origins
    return ServerProcess([], env)


@pytest.fixture(scope="module")
def cors_server(local_store: str) -> Iterator[ServerProcess]:
    server = start(local_store, f"https://other.example, {PANEL}")
    try:
        yield server
    finally:
        assert server.stop() in (0, -15)


def preflight(url: str, origin: str, method: str = "GET", headers: str = "") -> httpx.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return httpx.options(url, headers=asked, timeout=10)


def cors_headers(response: httpx.Response) -> set[str]:
    return {name for name in response.headers if name.startswith("access-control-")}


@pytest.mark.parametrize("path", [LOGS, DOWNLOAD, "/api/v1/no/such/route"])
def test_a_preflight_from_an_allowed_origin_is_answered_without_a_token(
    cors_server: ServerProcess, path: str
) -> None:
    asked = "authorization,range,x-request-id,if-none-match,x-evil,cookie"
    response = preflight(cors_server.url + path, PANEL, headers=asked)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == PANEL
    assert response.headers["vary"] == "Origin"
    assert response.headers["access-control-allow-methods"] == "GET, HEAD"
    allowed = response.headers["access-control-allow-headers"]
    assert allowed == "Authorization, Range, X-Request-ID, If-None-Match"
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["x-request-id"]


def test_a_preflight_that_asks_no_header_still_allows_authorization(
    cors_server: ServerProcess,
) -> None:
    response = preflight(cors_server.url + LOGS, PANEL, method="HEAD")
    assert response.status_code == 204
    assert response.headers["access-control-allow-headers"] == "Authorization"


def test_answers_to_an_allowed_origin_carry_cors_headers(
    cors_server: ServerProcess, token: str
) -> None:
    origin = {"Origin": PANEL}
    bearer = {**origin, "Authorization": f"Bearer {token}"}
    answers = {
        "download": httpx.get(cors_server.url + DOWNLOAD, headers=bearer, timeout=10),
        "range": httpx.get(
            cors_server.url + DOWNLOAD, headers={**bearer, "Range": "bytes=0-9"}, timeout=10
        ),
        "page": httpx.get(cors_server.url + LOGS, headers=bearer, timeout=10),
        "head": httpx.head(cors_server.url + DOWNLOAD, headers=bearer, timeout=10),
        "no token": httpx.get(cors_server.url + DOWNLOAD, headers=origin, timeout=10),
        "not found": httpx.get(
            cors_server.url + LOGS.replace("alpha", "nope"), headers=bearer, timeout=10
        ),
        "not a preflight": httpx.options(cors_server.url + LOGS, headers=origin, timeout=10),
    }
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "download": 200,
        "range": 206,
        "page": 200,
        "head": 200,
        "no token": 401,
        "not found": 404,
        "not a preflight": 405,
    }
    assert answers["download"].content == LOG_A2
    assert answers["range"].content == LOG_A2[:10]
    for name, response in answers.items():
        assert response.headers["access-control-allow-origin"] == PANEL, name
        exposed = {
            h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
        }
        assert exposed >= EXPOSED, name
        assert "Origin" in [v.strip() for v in response.headers["vary"].split(",")], name
        assert response.headers.get_list("access-control-allow-origin") == [PANEL], name
    # A Vary the answer already had keeps its value beside Origin.
    assert answers["download"].headers["vary"] == "Accept-Encoding, Origin"
    assert answers["not a preflight"].headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("origin", [OTHER, "null", PANEL + "/", "https://panel.example:8443"])
def test_other_origins_get_no_cors_headers(
    cors_server: ServerProcess, token: str, origin: str
) -> None:
    refused = preflight(cors_server.url + LOGS, origin, headers="authorization")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert not cors_headers(refused)
    answer = httpx.get(
        cors_server.url + LOGS,
        headers={"Origin": origin, "Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert not cors_headers(answer)


def test_paths_outside_the_api_get_no_cors_headers(cors_server: ServerProcess) -> None:
    for path in ("/healthz", "/openapi.json", "/metrics"):
        answer = httpx.get(cors_server.url + path, headers={"Origin": PANEL}, timeout=10)
        assert answer.status_code == 200
        assert not cors_headers(answer), path
    refused = preflight(cors_server.url + "/openapi.json", PANEL)
    assert refused.status_code == 405
    assert not cors_headers(refused)


def test_a_preflight_is_counted_like_any_request(cors_server: ServerProcess) -> None:
    asked = {"Origin": PANEL, "Access-Control-Request-Method": "GET", "X-Request-ID": "cors-1"}
    assert httpx.options(cors_server.url + LOGS, headers=asked, timeout=10).status_code == 204
    metrics = httpx.get(cors_server.url + "/metrics", timeout=10).text
    route = "/api/v1/models/{model_id}/training-metrics/logs"
    assert f'streamer_requests_total{{format="none",route="{route}",status="204"}}' in metrics


def test_without_the_setting_an_options_stays_405(local_store: str) -> None:
    server = start(local_store, None)
    try:
        refused = preflight(server.url + LOGS, PANEL, headers="authorization")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        assert not cors_headers(refused)
        answer = httpx.get(server.url + LOGS, headers={"Origin": PANEL}, timeout=10)
        assert answer.status_code == 401
        assert not cors_headers(answer)
    finally:
        assert server.stop() in (0, -15)


@given(st.lists(st.one_of(st.sampled_from([*SAFE_HEADERS, "Range", " cookie", ""]), st.text())))
def test_a_preflight_allows_no_header_outside_the_safe_list(asked: list[str]) -> None:
    names = allowed_headers(",".join(asked)).decode().split(", ")
    assert names[0] == "Authorization"
    assert set(names) <= {"Authorization", *SAFE_HEADERS.values()}
    assert len(names) == len(set(names))
    wanted = {name.strip().lower() for name in asked}
    assert {name.lower() for name in names[1:]} == wanted & set(SAFE_HEADERS)
