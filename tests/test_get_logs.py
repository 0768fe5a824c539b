"""Get Logs over real sockets, on the local, memory, S3 and GCS stores: SPEC section 6."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from streamer.catalog import Catalog, LogObject
from streamer.config import Settings
from streamer.cursors import Cursor, CursorCodec, Walk, cursor_keys
from streamer.encoders import FIELD_NAMES
from streamer.errors import LogsNotReady, LogsPurged
from streamer.handlers import logs as handlers_logs
from streamer.handlers.common import resolve as catalog_resolve
from streamer.lines import Line
from streamer.logs import scan
from testkit.dataset import LOG_A2, LOG_GZ, OTHER_ORG, put, put_run
from testkit.reference import reference_lines, reference_page_lines, timed_log
from testkit.servers import SECRET, Running, TokenFactory, serve_in_thread
from testkit.wire import assert_problem

PATH = "/api/v1/models/{}/training-metrics/logs"
ALIAS = "/api/v1/models/{}/training/metrics/logs"
PAGES_LOG = timed_log(400)
LIVE_LOG = b"2026-03-13T12:00:00Z [INFO] one\n2026-03-13T12:00:01Z [INFO] tw"
LONG_LOG = b"2026-03-13T12:00:00Z [INFO] " + "é".encode() * 40_000 + b"\nshort\n"


@pytest.fixture(scope="session")
def pages_store(store_url: str) -> str:
    """The fixture store and mdl-pages: completed, live, long-lined, replaced, growing runs."""
    put_run(store_url, "mdl-pages", "run-p", PAGES_LOG)
    folder = "models/mdl-pages/runs"
    for run_id, status, log in [
        ("run-live", "running", LIVE_LOG),
        ("run-long", "completed", LONG_LOG),
        ("run-replaced", "failed", PAGES_LOG),
        ("run-grow", "running", LIVE_LOG),
        ("run-finish", "running", LIVE_LOG),
        ("run-shrink", "running", LIVE_LOG),
    ]:
        run = b'{"status": "%s", "completed_at": "2026-01-01T00:00:00Z"}' % status.encode()
        put(store_url, f"{folder}/{run_id}/run.json", run)
        put(store_url, f"{folder}/{run_id}/training.log", log)
    put(store_url, f"{folder}/run-queued/run.json", b'{"status": "queued"}')
    return store_url


@pytest.fixture(scope="session")
def logs_server(pages_store: str) -> Iterator[Running]:
    settings = Settings(storage_url=pages_store, jwt_secret=SECRET, catalog_ttl_s=0)
    yield from serve_in_thread(settings)


# One client for the module: a new httpx client per request costs 0.2 s (its TLS context).
CLIENT = httpx.Client(timeout=60)


# Closed at the end of the session: pytest groups tests by the store they run on, so this
# module's tests do not all run in one stretch.
@pytest.fixture(scope="session", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    CLIENT.close()


def page(
    server: Running,
    token: str | None,
    model: str = "mdl-pages",
    method: str = "GET",
    path: str = PATH,
    **params: str | int,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return CLIENT.request(method, server.url + path.format(model), params=params, headers=headers)


def entries(lines: list[Line], fields: str = "default") -> list[dict[str, object]]:
    timestamp, level, message = FIELD_NAMES[fields]  # type: ignore[index]
    return [
        {"offset": x.offset, timestamp: x.timestamp, level: x.level, message: x.message}
        for x in lines
    ]


def walk(
    server: Running, token: str, model: str = "mdl-pages", **params: str | int
) -> tuple[list[dict[str, object]], int]:
    """Every entry of a walk in file order, and how many pages it took."""
    backward = params.get("direction", "backward") == "backward"
    pages: list[list[dict[str, object]]] = []
    cursor: str | None = None
    while True:
        query = dict(params) if cursor is None else {"cursor": cursor, "limit": params["limit"]}
        response = page(server, token, model, **{k: str(v) for k, v in query.items()})
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= int(params["limit"])
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 1000
    ordered = pages[::-1] if backward else pages
    return [item for items in ordered for item in items], len(pages)


# Routing and the order of checks.


def test_routing_comes_first(logs_server: Running) -> None:
    assert_problem(page(logs_server, None, path="/api/v1/models/{}/logs"), 404, "not_found")
    response = page(logs_server, None, method="POST")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


def test_the_order_of_checks(logs_server: Running, make_token: TokenFactory) -> None:
    weak = make_token(permissions=("model:write",))
    assert_problem(page(logs_server, None, limit=0), 401, "missing_token")
    assert_problem(page(logs_server, "x.y.z", cursor="bad"), 401, "invalid_token")
    assert_problem(page(logs_server, weak, limit=0), 400, "invalid_query")
    assert_problem(page(logs_server, weak, cursor="bad"), 400, "invalid_cursor")
    assert_problem(page(logs_server, weak, fields="xml"), 400, "invalid_fields")
    assert_problem(page(logs_server, weak), 403, "insufficient_scope")
    # invalid_cursor is decided from the request and the cursor, before any 404.
    token = make_token()
    cursor = page(logs_server, token, limit=1).json()["next_cursor"]
    assert_problem(page(logs_server, token, "mdl-nope", cursor=cursor), 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"limit": "1001"}, "limit"),
        ({"direction": "up"}, "direction"),
        ({"since": "2026-03-13"}, "since"),
        ({"until": "soon"}, "until"),
        ({"level": "WARN,"}, "level"),
        ({"contains": ""}, "contains"),
        ({"since": "2026-03-13T10:00:01Z", "until": "2026-03-13T10:00:00Z"}, "since"),
    ],
)
def test_invalid_queries_name_the_parameter(
    logs_server: Running, token: str, query: dict[str, str], name: str
) -> None:
    body = assert_problem(page(logs_server, token, **query), 400, "invalid_query")
    assert name in str(body["detail"])
    url = logs_server.url + PATH.format("mdl-pages") + "?limit=5&limit=5"
    repeated = CLIENT.get(url, headers={"Authorization": f"Bearer {token}"})
    assert "limit" in str(assert_problem(repeated, 400, "invalid_query")["detail"])


def test_the_catalog_rules(logs_server: Running, token: str) -> None:
    assert_problem(page(logs_server, token, "mdl-beta"), 404, "model_not_found")
    assert_problem(page(logs_server, token, "mdl-nope"), 404, "model_not_found")
    assert_problem(page(logs_server, token, "mdl-alpha", run_id="run-nope"), 404, "run_not_found")
    assert_problem(page(logs_server, token, "mdl-alpha", run_id=""), 404, "run_not_found")
    assert_problem(page(logs_server, token, "mdl-pending"), 404, "no_completed_run")
    expired = page(logs_server, token, "mdl-alpha", run_id="run-expired")
    assert_problem(expired, 404, "logs_expired")
    assert_problem(page(logs_server, token, "mdl-alpha", run_id="run-purged"), 404, "logs_purged")
    assert_problem(page(logs_server, token, "mdl-defexp"), 404, "logs_expired")
    assert_problem(page(logs_server, token, "mdl-defpurged"), 404, "logs_purged")


def test_a_cursor_never_opens_another_tenants_log(
    logs_server: Running, make_token: TokenFactory
) -> None:
    # Signed with the service's own key and naming the other tenant's model and run: the
    # catalog still answers for the caller's token.
    codec = CursorCodec(cursor_keys(None, SECRET))
    theirs = codec.encode(Cursor(Walk("mdl-beta", "run-b1", "forward"), "", 0))
    response = page(logs_server, make_token(), "mdl-beta", cursor=theirs)
    assert_problem(response, 404, "model_not_found")
    assert page(logs_server, make_token(org=OTHER_ORG), "mdl-beta", cursor=theirs).status_code in (
        200,
        400,  # made on another version: refused, but only once the caller may see the log
    )


# 200: the envelope.


@pytest.mark.parametrize("path", [PATH, ALIAS])
def test_the_last_page_of_the_default_run(logs_server: Running, token: str, path: str) -> None:
    response = page(logs_server, token, "mdl-alpha", path=path, format="xml", unknown="1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-request-id"]
    body = response.json()
    assert body == {
        "model_id": "mdl-alpha",
        "run_id": "run-a2",
        "data": entries(reference_lines(LOG_A2)),
        "next_cursor": None,
        "prev_cursor": None,
    }
    assert body["data"][-1]["offset"] == LOG_A2.rindex(b"\n") + 1
    head = page(logs_server, token, "mdl-alpha", method="HEAD", path=path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == response.headers["content-length"]


def test_fields_rename_and_may_change_between_pages(logs_server: Running, token: str) -> None:
    first = page(logs_server, token, limit=2, fields="ecs").json()
    assert set(first["data"][0]) == {"offset", "@timestamp", "log.level", "message"}
    second = page(logs_server, token, cursor=first["next_cursor"], fields="otel", limit=2)
    assert set(second.json()["data"][0]) == {"offset", "Timestamp", "SeverityText", "Body"}


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_walks_return_every_line_once_in_order(
    logs_server: Running, token: str, direction: str
) -> None:
    walked, pages = walk(logs_server, token, run_id="run-p", limit=37, direction=direction)
    expected = entries(reference_lines(PAGES_LOG))
    assert walked == expected
    assert pages == -(-len(expected) // 37)


@pytest.mark.parametrize("direction", ["backward", "forward"])
@pytest.mark.parametrize(
    "filters",
    [
        {"level": "error,WARN"},
        {"contains": "File"},
        {"level": "info", "contains": "step 1"},
        {"since": "2026-03-13T00:01:00Z", "until": "2026-03-13T00:05:00+00:00"},
        {"since": "2026-03-13T00:03:20 00:00", "level": "DEBUG"},
        {"level": "NOPE"},
    ],
)
def test_filtered_walks(
    logs_server: Running, token: str, direction: str, filters: dict[str, str]
) -> None:
    walked, _ = walk(logs_server, token, run_id="run-p", limit=13, direction=direction, **filters)
    levels = filters.get("level")
    since = filters.get("since", "").replace(" ", "+") or None
    until = filters.get("until") or None
    expected = reference_page_lines(
        PAGES_LOG,
        since=since,
        until=until,
        levels=tuple(levels.upper().split(",")) if levels else None,
        contains=filters.get("contains"),
    )
    assert walked == entries(expected)


def test_an_empty_window_and_an_empty_log(logs_server: Running, token: str) -> None:
    moment = "2026-03-13T00:02:00Z"
    body = page(logs_server, token, run_id="run-p", since=moment, until=moment).json()
    assert (body["data"], body["next_cursor"], body["prev_cursor"]) == ([], None, None)
    body = page(logs_server, token, "mdl-alpha", run_id="run-empty").json()
    assert (body["data"], body["next_cursor"], body["prev_cursor"]) == ([], None, None)


def test_a_gzip_log_has_offsets_of_its_inflated_bytes(logs_server: Running, token: str) -> None:
    body = page(logs_server, token, "mdl-alpha", run_id="run-gz", limit=3).json()
    assert body["data"] == entries(reference_lines(LOG_GZ)[-3:])
    walked, pages = walk(logs_server, token, "mdl-alpha", run_id="run-gz", limit=300)
    assert walked == entries(reference_lines(LOG_GZ)) and pages == 4


def test_a_long_message_is_cut(logs_server: Running, token: str) -> None:
    data = page(logs_server, token, run_id="run-long").json()["data"]
    assert len(data[0]["message"].encode()) == 65_536 and data[0]["truncated"] is True
    assert data[1] == {
        "offset": len(LONG_LOG) - 6,
        "timestamp": None,
        "level": None,
        "message": "short",
    }


# Cursors.


def test_cursors_are_bound_to_their_walk(logs_server: Running, token: str) -> None:
    first = page(logs_server, token, run_id="run-p", limit=5, level="INFO").json()
    cursor = first["next_cursor"]
    assert page(logs_server, token, cursor=cursor, limit=9, run_id="run-p").status_code == 200
    for disagreeing in (
        {"run_id": "run-live"},
        {"direction": "forward"},
        {"level": "WARN"},
        {"contains": "x"},
        {"since": "2026-03-13T00:00:00Z"},
    ):
        response = page(logs_server, token, cursor=cursor, **disagreeing)
        assert_problem(response, 400, "invalid_cursor")
    for altered in ("", cursor[:-1], cursor + "A", "A" + cursor[1:], cursor.replace(".", "")):
        assert_problem(page(logs_server, token, cursor=altered), 400, "invalid_cursor")


def test_a_live_run_keeps_its_end_cursor_and_holds_back_a_partial_line(
    logs_server: Running, pages_store: str, token: str
) -> None:
    body = page(logs_server, token, run_id="run-live").json()
    assert [item["message"] for item in body["data"]] == ["one"]
    assert body["prev_cursor"] is not None  # forward from the end: poll it
    polled = page(logs_server, token, cursor=body["prev_cursor"]).json()
    assert polled["data"] == [] and polled["next_cursor"] is not None
    forward = page(logs_server, token, run_id="run-live", direction="forward").json()
    assert forward["next_cursor"] is not None and len(forward["data"]) == 1


def test_growth_and_replacement(logs_server: Running, pages_store: str, token: str) -> None:
    end = page(logs_server, token, run_id="run-grow").json()["prev_cursor"]
    # The run writes on: a longer object uploaded over the old one.
    put(pages_store, "models/mdl-pages/runs/run-grow/training.log", LIVE_LOG + b"o\nthree\n")
    grown = page(logs_server, token, cursor=end).json()
    assert [item["message"] for item in grown["data"]] == ["two", "three"]
    assert grown["data"][0]["offset"] == LIVE_LOG.index(b"2026-03-13T12:00:01Z")
    # A terminal run's cursor made on another version of the object is refused.
    cursor = page(logs_server, token, run_id="run-replaced", limit=3).json()["next_cursor"]
    assert page(logs_server, token, cursor=cursor).status_code == 200
    put(pages_store, "models/mdl-pages/runs/run-replaced/training.log", PAGES_LOG + b"x\n")
    assert_problem(page(logs_server, token, cursor=cursor), 400, "invalid_cursor")


def test_a_run_that_ends_releases_its_last_line(
    logs_server: Running, pages_store: str, token: str
) -> None:
    end = page(logs_server, token, run_id="run-finish").json()["prev_cursor"]
    assert page(logs_server, token, cursor=end).json()["data"] == []
    run = b'{"status": "completed", "completed_at": "2026-03-13T13:00:00Z"}'
    put(pages_store, "models/mdl-pages/runs/run-finish/run.json", run)
    body = page(logs_server, token, cursor=end).json()
    assert [item["message"] for item in body["data"]] == ["tw"]
    assert body["next_cursor"] is None  # the end of a terminal run's log


def test_a_run_that_has_not_written_its_log_is_an_empty_page_to_poll(
    logs_server: Running, pages_store: str, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def resolve(catalog: Catalog, model_id: str, org: str, run_id: str | None) -> LogObject:
        """The catalog's answer, `logs_not_ready` for run-queued as SPEC section 8 has it
        (passed through unchanged by a catalog that raises it itself)."""
        try:
            return await catalog_resolve(catalog, model_id, org, run_id)
        except LogsPurged:
            if run_id == "run-queued":
                raise LogsNotReady() from None
            raise

    monkeypatch.setattr(handlers_logs, "resolve", resolve)
    body = page(logs_server, token, run_id="run-queued", level="info").json()
    assert (body["run_id"], body["data"], body["prev_cursor"]) == ("run-queued", [], None)
    cursor = logs_server.app.cursors.decode(body["next_cursor"])
    assert (cursor.position, cursor.walk.direction, cursor.walk.levels) == (0, "forward", ("INFO",))
    # Polled: still nothing, the same cursor; then the run writes its first lines.
    again = page(logs_server, token, cursor=body["next_cursor"]).json()
    assert again["data"] == [] and again["next_cursor"] == body["next_cursor"]
    put(pages_store, "models/mdl-pages/runs/run-queued/training.log", LIVE_LOG + b"o\n")
    lines = page(logs_server, token, cursor=body["next_cursor"]).json()
    assert [item["message"] for item in lines["data"]] == ["one", "two"]


def test_a_log_shorter_than_its_cursor(logs_server: Running, pages_store: str, token: str) -> None:
    end = page(logs_server, token, run_id="run-shrink").json()["prev_cursor"]
    put(pages_store, "models/mdl-pages/runs/run-shrink/training.log", LIVE_LOG[:10])
    assert_problem(page(logs_server, token, cursor=end), 400, "invalid_cursor")


def test_replicas_configured_alike_share_cursors_and_keys_rotate(
    base_settings: Settings, settings_server: Callable[..., Running], token: str
) -> None:
    one, two = "key-one-of-16-chars", "key-two-of-16-chars"
    default_a = settings_server(base_settings)
    default_b = settings_server(base_settings)
    old = settings_server(base_settings, cursor_keys=(one,))
    rotating = settings_server(base_settings, cursor_keys=(two, one))
    rotated = settings_server(base_settings, cursor_keys=(two,))
    cursor = page(default_a, token, "mdl-alpha", limit=2).json()["next_cursor"]
    assert page(default_b, token, "mdl-alpha", cursor=cursor).status_code == 200
    assert_problem(page(old, token, "mdl-alpha", cursor=cursor), 400, "invalid_cursor")
    cursor = page(old, token, "mdl-alpha", limit=2).json()["next_cursor"]
    assert page(rotating, token, "mdl-alpha", cursor=cursor).status_code == 200
    assert_problem(page(rotated, token, "mdl-alpha", cursor=cursor), 400, "invalid_cursor")
    signed_new = page(rotating, token, "mdl-alpha", limit=2).json()["next_cursor"]
    assert page(rotated, token, "mdl-alpha", cursor=signed_new).status_code == 200


def readme_recipe() -> str:
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    section = text[text.index("### UI recipe") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```\n", start)]


def test_the_readme_ui_recipe_with_curl_and_jq(
    base_settings: Settings,
    settings_server: Callable[..., Running],
    token: str,
    tmp_path: Path,
) -> None:
    root = str(tmp_path)
    put_run(root, "mdl-churn", "run-old", PAGES_LOG)
    folder = "models/mdl-churn/runs/run-live"
    put(root, f"{folder}/run.json", b'{"status": "running"}')
    put(root, f"{folder}/training.log", PAGES_LOG)
    running = settings_server(base_settings, storage_url=root)
    script = readme_recipe().replace("http://127.0.0.1:8080", running.url)
    env = {**os.environ, "TOKEN": token, "RUN": "run-live"}
    with subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script], stdout=subprocess.PIPE, env=env, text=True
    ) as shell:
        assert shell.stdout is not None
        shown = [shell.stdout.readline() for _ in range(200)]
        lines = reference_lines(PAGES_LOG)
        expected = [
            f"{x.offset}\t{x.timestamp or '-'}\t{x.level or '-'}\t{x.message}\n" for x in lines
        ]
        # The last 100 lines, then the 100 before them.
        assert shown == expected[-100:] + expected[-200:-100]
        # The run writes two more lines and ends: the poll shows them and the loop stops.
        more = b"2026-03-13T09:00:00Z [INFO] new\nlast words"
        put(root, f"{folder}/training.log", PAGES_LOG + more)
        put(root, f"{folder}/run.json", b'{"status": "completed"}')
        rest = shell.stdout.read()
        assert shell.wait(60) == 0
    offset = len(PAGES_LOG)
    assert rest == (f"{offset}\t2026-03-13T09:00:00Z\tINFO\tnew\n{offset + 32}\t-\t-\tlast words\n")


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_a_filtered_page_stops_at_its_budget(
    logs_server: Running, token: str, direction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in this process: a budget of 6 KiB a page (blocks of 2 KiB) makes
    # the 64 MiB rule show on a small log.
    monkeypatch.setattr(scan, "SCAN_BUDGET", 6144)
    monkeypatch.setattr(scan, "SCAN_BLOCK", 2048)
    first = page(logs_server, token, run_id="run-p", level="NOPE", direction=direction).json()
    assert first["data"] == [] and first["next_cursor"] is not None
    walked, pages = walk(
        logs_server, token, run_id="run-p", limit=50, direction=direction, level="error"
    )
    expected = reference_page_lines(PAGES_LOG, levels=("ERROR",))
    assert walked == entries(expected)
    assert pages >= len(PAGES_LOG) // 6144
