"""schemathesis against a real `streamer serve`: the server keeps its OpenAPI document.

Requests come from the document (its examples, boundary values, then random valid and
invalid ones) and go to a child process serving a store seeded here.

- With a valid token, every operation: no 5xx, and status, content type, headers and body
  as documented (schemathesis's checks), a valid request never refused (401, 403, 400).
  The model is the seeded one, so that the query and the conditional and range headers
  are tried against a real log. On Get Logs a valid request is refused only for what the
  schema cannot say: a cursor the server did not make (400 `invalid_cursor`) or `since`
  later than `until` (400 `invalid_query`); every entry of a page is the seeded log's line
  at its offset, as the download encodes it, and a walk by cursors finds the same lines.
- Without a token, and with a valid token of another organization, every download
  operation with any model id: only problems (401 without a token; 400 or 404 with the
  other tenant's; 405, or 404 `not_found`, where routing answers first), never a byte of
  a log. Get Logs included: a cursor opens nothing a token could not. (The probes and
  the document serve no log and need no token.)

A failure prints the request as a `curl` command that reproduces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import schemathesis
from schemathesis import Case, CheckContext
from schemathesis.specs.openapi.checks import positive_data_acceptance

from streamer.auth import issue_token
from streamer.encoders import FIELD_NAMES, Style, reference_encode
from streamer.lines import time_key
from testkit.dataset import ORG, OTHER_ORG, put_run
from testkit.openapi import schema_validator
from testkit.servers import SECRET, ServerProcess, TokenFactory

AnyCase = Case[Any]
DOCUMENT = Path(str(resources.files("streamer").joinpath("openapi.json")))
MODEL, RUN = "mdl-churn", "run-20260313-a4b9c2"  # the document's examples
LOG = (
    b"2026-03-13T10:00:00.123Z [INFO] Initializing distributed training cluster.\n"
    b"2026-03-13T10:00:05.456Z [WARN] Gradient clipping triggered on layer 'dense_2'.\n"
    b"Traceback (most recent call last):\r\n"
    b'  File "train.py", line 1 \\ "quoted" \xff\xfe caf\xc3\xa9\n'
    b"\n"
    b"2026-03-13T10:03:00+02:00 [ERROR]"
)


def config(
    max_examples: int, accepted: tuple[str, ...] = (), **extra: object
) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20260313,  # the same requests on every run: a failure reproduces
            "generation": {"mode": "all", "max-examples": max_examples},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                # A valid Range past the end is answered 416, as documented. 401 and 403
                # are left out: a valid token is never refused.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "404", "416", *accepted]
                },
            },
            **extra,
        }
    )


# With a valid token (given to schemathesis, which leaves it out or garbles it in the cases
# that test the security scheme): the seeded model, everything else generated.
TOKEN = issue_token(SECRET, "alice", ORG, ["model:read"], ttl_s=3600)
PAGES = r"/logs$"
with_token = schemathesis.openapi.from_path(
    DOCUMENT,
    config=config(
        20, parameters={"model_id": MODEL}, auth={"openapi": {"bearer": {"bearer": TOKEN}}}
    ),
).exclude(path_regex=PAGES)
# Get Logs: the seeded run, so that pages hold lines (the download tries other run ids).
# A valid cursor is one the server made, which no schema can say; a 400 on a
# valid request is held to that (and to since > until) by `pages_refuse_only_that`.
pages_with_token = schemathesis.openapi.from_path(
    DOCUMENT,
    config=config(
        20,
        ("400",),
        parameters={"model_id": MODEL, "run_id": RUN},
        auth={"openapi": {"bearer": {"bearer": TOKEN}}},
    ),
).include(path_regex=PAGES)
# Without one, or with another tenant's: any model id, the download operations only.
downloads = schemathesis.openapi.from_path(DOCUMENT, config=config(10)).include(path_regex="^/api/")


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No log stored as gzip: a range of one goes out as stored, with Content-Encoding
    # gzip, as documented, and the HTTP client under schemathesis cannot decode a piece of
    # a gzip stream (tests/test_clients.py resumes one with curl).
    root = str(tmp_path_factory.mktemp("contract-store"))
    put_run(root, MODEL, RUN, LOG)
    # --gzip: bodies compressed on the fly, for clients that ask.
    env = {"STREAMER_STORAGE_URL": root, "STREAMER_JWT_SECRET": SECRET}
    server = ServerProcess(["--gzip"], env)
    try:
        yield server
    finally:
        assert server.stop() in (0, -15)


def sent(response: schemathesis.Response, authorization: str) -> bool:
    """Whether the request carried `authorization` (schemathesis drops or garbles it in
    cases that test the security scheme itself: those must be refused)."""
    return response.request.headers.get("Authorization") == authorization


LINE = schema_validator("/components/schemas/LogLine")
# Where each line of LOG starts: the offsets of Get Logs' entries.
OFFSETS = [0, *(found.end() for found in re.finditer(b"\n", LOG))]
CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")


def resumed(case: AnyCase, name: str, default: int) -> int:
    """Where a followed download starts (`offset`, `from_line`: docs/follow.md): the log's
    run has ended, so a follow is the log from there."""
    query = case.query or {}
    if str(query.get("follow")) not in ("true", "1") or query.get(name) is None:
        return default
    applies = (query.get("format", "txt") == "txt") == (name == "offset")
    return int(query[name]) if applies else default


def the_logs_bytes(ctx: CheckContext, response: schemathesis.Response, case: AnyCase) -> None:
    """A log body is the seeded log exactly: as stored, its range, or as the encoder makes it.

    (The schemas say what a line object looks like; this says it is the right one.) NDJSON
    has no schema in OpenAPI 3.1: each of its lines is checked against LogLine here.
    """
    if case.method != "GET" or response.status_code not in (200, 206):
        return
    if not case.path.endswith("/download"):
        return
    media_type = response.headers["content-type"][0]
    reproduce = case.as_curl_command()
    if response.status_code == 206:
        match = CONTENT_RANGE.fullmatch(response.headers["content-range"][0])
        assert match is not None, reproduce
        start, end, size = map(int, match.groups())
        assert (size, response.content) == (len(LOG), LOG[start : end + 1]), reproduce
    elif media_type.startswith("text/plain"):
        assert response.content == LOG[resumed(case, "offset", 0) :], reproduce
    else:
        style: Style = "json" if media_type == "application/json" else "ndjson"
        fields = case.query.get("fields", "default")
        assert fields in FIELD_NAMES, reproduce
        expected = reference_encode(LOG, style, fields)
        first = resumed(case, "from_line", 1)
        if first > 1:  # a resumed follow: the lines from there on
            every = orjson.loads(reference_encode(LOG, "json", fields))
            lines = response.content.splitlines()
            body = response.content if style == "json" else b"[" + b",".join(lines) + b"]"
            assert orjson.loads(body) == [o for o in every if o["line"] >= first], reproduce
            return
        assert response.content == expected, reproduce
        if style == "ndjson":
            for line in response.content.splitlines():
                LINE.validate(orjson.loads(line))


def the_pages_entries(ctx: CheckContext, response: schemathesis.Response, case: AnyCase) -> None:
    """Each entry of a page is the seeded log's line at its offset, as the download encodes
    it (`line` for `offset`), in file order; a page that holds its whole window holds what
    a walk of one entry a page, by cursors, finds."""
    if case.method != "GET" or response.status_code != 200 or not case.path.endswith("/logs"):
        return
    reproduce = case.as_curl_command()
    fields = case.query.get("fields", "default")
    assert fields in FIELD_NAMES, reproduce
    expected = {
        offset: {"offset": offset, **{k: v for k, v in line.items() if k != "line"}}
        for offset, line in zip(
            OFFSETS, orjson.loads(reference_encode(LOG, "json", fields)), strict=True
        )
    }
    page = orjson.loads(response.content)
    offsets = [item["offset"] for item in page["data"]]
    assert offsets == sorted(set(offsets)), reproduce
    assert all(item == expected.get(item["offset"]) for item in page["data"]), reproduce
    if case.query.get("cursor") is not None or page["next_cursor"] is not None:
        return
    # The page holds its whole window: a walk of one entry a page, by cursors, finds it again.
    url = urlsplit(str(response.request.url))
    route = f"{url.scheme}://{url.netloc}{url.path}"
    authorization = {"Authorization": str(response.request.headers["Authorization"])}
    params = {**case.query, "limit": "1"}
    walked: list[Any] = []
    for _ in range(4 * len(OFFSETS)):
        step = httpx.get(route, params=params, headers=authorization)
        assert step.status_code == 200, (reproduce, step.text)
        walked += step.json()["data"]
        if step.json()["next_cursor"] is None:
            break
        params = {"cursor": step.json()["next_cursor"], "fields": fields}
    else:
        raise AssertionError(f"a walk of {reproduce} with limit=1 does not end")
    assert sorted(walked, key=lambda item: item["offset"]) == page["data"], reproduce


def pages_refuse_only_that(
    ctx: CheckContext, response: schemathesis.Response, case: AnyCase
) -> None:
    """A valid request to Get Logs is refused only for a cursor or since > until."""
    if response.status_code != 400 or case.meta is None or case.meta.generation.mode.is_negative:
        return
    code = orjson.loads(response.content)["code"] if case.method == "GET" else None
    query = case.query or {}
    if "cursor" in query and code in ("invalid_cursor", None):
        return
    since, until = query.get("since"), query.get("until")
    late = since is not None and until is not None and time_key(since) > time_key(until)
    assert late and code in ("invalid_query", None), case.as_curl_command()


def test_with_a_token_every_answer_is_documented(
    case: AnyCase, contract_server: ServerProcess
) -> None:
    response = case.call_and_validate(
        base_url=contract_server.url,
        additional_checks=[the_logs_bytes, the_pages_entries, pages_refuse_only_that],
    )
    if sent(response, f"Bearer {TOKEN}"):
        assert response.status_code not in (401, 403), case.as_curl_command()
    elif case.path.startswith("/api/"):
        assert response.status_code == 401, case.as_curl_command()


test_with_a_token_the_pages_are_documented = pages_with_token.parametrize()(
    test_with_a_token_every_answer_is_documented
)
test_with_a_token_every_answer_is_documented = with_token.parametrize()(
    test_with_a_token_every_answer_is_documented
)


def assert_problem_only(
    response: schemathesis.Response,
    case: AnyCase,
    statuses: set[int],
    headers: dict[str, str],
) -> None:
    """A problem of one of `statuses`, and nothing of the log."""
    reproduce = case.as_curl_command(headers)
    assert response.status_code in statuses, reproduce
    assert response.headers["content-type"] == ["application/problem+json"], reproduce
    if case.method == "HEAD":
        assert response.content == b"", reproduce
        return
    problem = orjson.loads(response.content)
    assert problem["status"] == response.status_code, reproduce
    if response.status_code == 404 and 401 in statuses:
        assert problem["code"] == "not_found", reproduce
    assert not any(line in response.content for line in LOG.splitlines() if line), reproduce


@downloads.parametrize()
def test_without_a_token_or_with_another_tenants_nothing_of_a_log(
    case: AnyCase, contract_server: ServerProcess, make_token: TokenFactory
) -> None:
    # 401 comes first; only routing answers before it: 405 for a method the document does
    # not list, 404 `not_found` for a path that does not route (a generated id that is not
    # one path segment).
    response = case.call_and_validate(
        base_url=contract_server.url, excluded_checks=[positive_data_acceptance]
    )
    assert_problem_only(response, case, {401, 404, 405}, {})
    # Another organization's token: the query is checked (400), then the model is not found.
    other = {"Authorization": f"Bearer {make_token(org=OTHER_ORG)}"}
    response = case.call_and_validate(
        base_url=contract_server.url, headers=other, excluded_checks=[positive_data_acceptance]
    )
    statuses = {400, 404, 405} if sent(response, other["Authorization"]) else {401, 404, 405}
    assert_problem_only(response, case, statuses, other)
