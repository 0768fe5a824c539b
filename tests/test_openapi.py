"""The OpenAPI document: valid, shipped, served as kept, and in step with the code.

The document (`streamer/openapi.json`) is written by hand; these tests hold it to the
server: its paths are the routes, its methods the ones answered, its enums and patterns
the parser's, its problem codes the error hierarchy's, its line model the encoder's.
tests/test_contract.py then lets schemathesis send it requests.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema_rs
import orjson
import pytest
from openapi_spec_validator import validate

import streamer
from streamer import errors
from streamer.app import Streamer
from streamer.catalog import MODEL_ID, RUN_ID
from streamer.config import Settings
from streamer.cursors import _TEXT, Cursor, CursorCodec, Walk
from streamer.encoders import FIELD_NAMES, Fields, reference_encode
from streamer.lines import MAX_MESSAGE, entry, parse_block
from streamer.logs.query import (
    DEFAULT_LIMIT,
    DIRECTIONS,
    MAX_CONTAINS,
    MAX_LIMIT,
    PageQuery,
    parse_page_query,
)
from streamer.observe import Observe
from streamer.plan import FORMATS, REQUEST_ID
from streamer.pump import Message
from streamer.routes import route_name, templates
from testkit.dataset import LOG_A2
from testkit.observing import AccessLog, metric, scrape
from testkit.openapi import DOCUMENT, DOCUMENT_BYTES, schema_validator
from testkit.servers import Running

COMPONENTS: dict[str, Any] = DOCUMENT["components"]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or what its local `$ref` names."""
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def fill(template: str) -> str:
    return template.replace("{model_id}", "mdl-alpha")


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method.upper(), operation


# The document itself.


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1.")
    assert DOCUMENT["info"]["version"] == streamer.__version__


def test_the_package_ships_the_document() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "openapi.json" in pyproject["tool"]["setuptools"]["package-data"]["streamer"]
    assert DOCUMENT_BYTES.endswith(b"\n")


def test_the_server_serves_the_file_byte_for_byte(
    base_settings: Settings, settings_server: Callable[..., Running]
) -> None:
    access_log = AccessLog()
    logging.getLogger("streamer.access").addHandler(access_log)
    try:
        served(settings_server(base_settings), access_log)
    finally:
        logging.getLogger("streamer.access").removeHandler(access_log)


def served(running: Running, access_log: AccessLog) -> None:
    before = scrape(running.url)
    headers = {"X-Request-ID": "openapi-1"}
    response = httpx.get(running.url + "/openapi.json", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.content == DOCUMENT_BYTES
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(DOCUMENT_BYTES))
    assert response.headers["x-request-id"] == "openapi-1"
    head = httpx.head(running.url + "/openapi.json", timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(DOCUMENT_BYTES))
    refused = httpx.post(running.url + "/openapi.json", timeout=10)
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
    line = access_log.wait(request_id="openapi-1")
    assert (line["route"], line["status"], line["bytes"]) == (
        "/openapi.json",
        200,
        len(DOCUMENT_BYTES),
    )
    after = scrape(running.url)
    requests = metric(after, "streamer_requests_total", route="/openapi.json", status="200")
    assert requests - metric(before, "streamer_requests_total", route="/openapi.json") == 2


# Routes and methods.


def test_every_route_is_documented_and_every_documented_path_is_a_route() -> None:
    assert set(DOCUMENT["paths"]) == set(templates())
    for template in templates():
        assert route_name(fill(template)) == template


async def ask(app: Observe, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request to the app in-process, without a token: status, headers, body."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        await app(scope, receive, send)
    headers = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.anyio
async def test_the_documented_methods_are_those_answered(base_settings: Settings) -> None:
    app = Observe(Streamer(base_settings))
    for path, item in DOCUMENT["paths"].items():
        documented = {method.upper() for method in item if method != "parameters"}
        assert documented == {"GET", "HEAD"}, path
        for method in METHODS:
            status, headers, body = await ask(app, method, fill(path))
            if method in documented:
                assert status != 405 and status != 404, (method, path, body)
                assert str(status) in item[method.lower()]["responses"], (method, path, status)
            else:
                assert status == 405, (method, path)
                assert headers["allow"] == ", ".join(sorted(documented, key=METHODS.index))
                assert_documented("MethodNotAllowed", headers, body, method)


def assert_documented(name: str, headers: dict[str, str], body: bytes, method: str) -> None:
    """The headers and problem body of an answer are those of the response called `name`."""
    response = COMPONENTS["responses"][name]
    for header, definition in response["headers"].items():
        definition = resolve(definition)
        value = headers.get(header.lower())
        assert value is not None or not definition.get("required"), (name, header, method)
        if value is not None:
            typed = int(value) if definition["schema"]["type"] == "integer" else value
            assert jsonschema_rs.is_valid(definition["schema"], typed), (name, header, value)
    if method != "HEAD":
        pointer = f"/components/responses/{name}/content/application~1problem+json/schema"
        schema_validator(pointer).validate(orjson.loads(body))


def test_every_operation_has_an_id_and_the_download_operations_need_a_token() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    for path, _, operation in operations():
        download = path.startswith("/api/")
        assert ("security" not in operation) == download, path
        assert ("401" in operation["responses"]) == download, path


# Problems.


def error_classes() -> list[type[errors.StreamerError]]:
    found: list[type[errors.StreamerError]] = [errors.StreamerError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def test_every_problem_code_is_in_the_enum() -> None:
    codes = {cls.code for cls in error_classes()}
    assert set(COMPONENTS["schemas"]["ProblemCode"]["enum"]) == codes


def problem_responses() -> Iterator[tuple[str, int, list[str]]]:
    for name, response in COMPONENTS["responses"].items():
        content = response.get("content", {}).get("application/problem+json")
        if content is not None:
            properties = content["schema"]["properties"]
            yield name, properties["status"]["const"], properties["code"]["enum"]


def test_each_error_response_lists_the_codes_of_its_status() -> None:
    status_of = {cls.code: cls.status for cls in error_classes()}
    listed = set()
    for name, status, codes in problem_responses():
        assert all(status_of[code] == status for code in codes), name
        listed.update(codes)
    # Only the hierarchy's bases and 404 `not_found` (a path outside the document) are unlisted.
    assert {cls.code for cls in error_classes()} - listed == {
        "internal",
        "bad_request",
        "not_found",
    }


def test_every_problem_body_matches_its_documented_response() -> None:
    response_of = {code: name for name, _, codes in problem_responses() for code in codes}
    for cls in error_classes():
        if cls.code not in response_of:
            continue
        error = errors.RangeNotSatisfiable(10) if cls is errors.RangeNotSatisfiable else cls()
        body = orjson.loads(errors.problem(error, "req-1"))
        name = response_of[error.code]
        pointer = f"/components/responses/{name}/content/application~1problem+json/schema"
        schema_validator(pointer).validate(body)
        response = COMPONENTS["responses"][name]
        for header in error.headers:
            assert header in response["headers"], (name, header)


# Parameters and the line model follow the code.


def test_parameters_follow_the_parser() -> None:
    parameters = COMPONENTS["parameters"]
    assert parameters["Format"]["schema"]["enum"] == list(FORMATS)
    assert parameters["Fields"]["schema"]["enum"] == list(FIELD_NAMES)
    assert parameters["ModelId"]["schema"]["pattern"] == f"^{MODEL_ID.pattern}$"
    assert parameters["RunId"]["schema"]["pattern"] == f"^{RUN_ID.pattern}$"
    header = COMPONENTS["headers"]["XRequestId"]["schema"]
    assert header["pattern"] == f"^{REQUEST_ID.pattern}$"


def test_page_parameters_follow_the_parser() -> None:
    parameters = COMPONENTS["parameters"]
    limit = parameters["Limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, MAX_LIMIT, DEFAULT_LIMIT)
    assert parameters["Direction"]["schema"]["enum"] == list(DIRECTIONS)
    # A generated client sends a declared default; a default direction would contradict a
    # forward cursor (400 invalid_cursor), so it is told in the description only.
    assert "default" not in parameters["Direction"]["schema"]
    assert "`backward` (the default without a cursor)" in parameters["Direction"]["description"]
    cursor = CursorCodec([b"k" * 32]).encode(
        Cursor(
            Walk("mdl-a", "run-1", "forward", levels=("ERROR",), contains="é" * 256),
            "v1",
            10**12,
        )
    )
    for schema in (parameters["Cursor"]["schema"], COMPONENTS["schemas"]["PageCursor"]):
        assert schema["pattern"] == f"^{_TEXT.pattern}$"
        assert jsonschema_rs.is_valid(schema, cursor)
        assert not jsonschema_rs.is_valid(schema, cursor + "=")
    assert parameters["Contains"]["schema"]["maxLength"] == MAX_CONTAINS
    level = jsonschema_rs.validator_for(parameters["LevelFilter"]["schema"])
    for text in ("INFO", "warn,ERROR", "a,b,c", "", "INFO,", ",INFO", "IN FO", "W4RN", "É"):
        accepted = True
        try:
            parse_page_query(b"level=" + text.encode())
        except errors.InvalidQuery:
            accepted = False
        assert level.is_valid(text) == accepted, text
    # The Get Logs operations document every field of the parsed query, and only those.
    parsed = dataclasses.fields(PageQuery)
    read = {"level" if field.name == "levels" else field.name for field in parsed}
    for path, _, operation in operations():
        if path.endswith("/logs"):
            assert {resolve(p)["name"] for p in operation["parameters"]} == read, path


@pytest.mark.parametrize("fields", list(FIELD_NAMES))
def test_the_line_model_is_the_encoders(fields: Fields) -> None:
    timestamp, level, message = FIELD_NAMES[fields]
    variant = COMPONENTS["schemas"]["LogFields" + fields.capitalize()]
    assert variant["required"] == [timestamp, level, message]
    body = orjson.loads(reference_encode(LOG_A2 + b"\n\nplain\n", "json", fields))
    assert len(body) == LOG_A2.count(b"\n") + 3  # its last line, a blank one, "plain"
    schema_validator("/components/schemas/LogArray").validate(body)
    line = schema_validator("/components/schemas/LogLine")
    for item in body:
        line.validate(item)
        assert not line.is_valid({**item, "extra": 1})
        assert not line.is_valid({key: value for key, value in item.items() if key != "line"})


@pytest.mark.parametrize("fields", list(FIELD_NAMES))
def test_the_page_entry_is_the_pages(fields: Fields) -> None:
    long = b"2026-03-13T10:00:00Z [INFO] " + "é".encode() * MAX_MESSAGE + b"\n"
    lines = parse_block(LOG_A2 + b"\n\nplain\n" + long, 0)
    entries = [entry(line, fields) for line in lines]
    assert entries[-1]["truncated"] is True
    validator = schema_validator("/components/schemas/PageEntry")
    for item in entries:
        validator.validate(item)
        assert not validator.is_valid({**item, "extra": 1})
        assert not validator.is_valid({**item, "truncated": False})
        assert not validator.is_valid(
            {key: value for key, value in item.items() if key != "offset"}
        )
    page = {"model_id": "mdl-a", "run_id": "run-1", "data": entries}
    schema_validator("/components/schemas/Page").validate(
        {**page, "next_cursor": "c" * 10 + "." + "m" * 22, "prev_cursor": None}
    )


# What client generators read.


def test_a_log_body_is_binary() -> None:
    """A generated client keeps a log's bytes (a log need not be UTF-8): 3.0-minded
    generators read `format: binary`, 3.1-minded ones `contentMediaType`."""
    for name in ("Log", "LogRange"):
        for media, content in COMPONENTS["responses"][name]["content"].items():
            if media != "application/json":
                schema = content["schema"]
                assert schema["type"] == "string", (name, media)
                assert (schema["format"], schema["contentMediaType"]) == ("binary", media)


def test_head_operations_declare_no_body() -> None:
    heads = 0
    for path, method, operation in operations():
        if method == "HEAD":
            heads += 1
            for status, response in operation["responses"].items():
                assert "content" not in resolve(response), (path, status)
    assert heads == len(DOCUMENT["paths"])


@pytest.mark.parametrize("fields", list(FIELD_NAMES))
def test_a_page_entry_is_one_flat_object(fields: Fields) -> None:
    """One object with every property of its own (no allOf), which generators type."""
    schema = COMPONENTS["schemas"]["PageEntry" + fields.capitalize()]
    assert "allOf" not in schema
    assert schema["required"] == ["offset", *FIELD_NAMES[fields]]
    assert set(schema["properties"]) == {"offset", *FIELD_NAMES[fields], "truncated"}
    assert schema["properties"]["truncated"]["type"] == "boolean"
