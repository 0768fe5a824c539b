"""Pure request parsing: routes, query rules, request ids, Content-Disposition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.catalog import RUN_ID
from streamer.errors import InvalidFormat, InvalidQuery
from streamer.plan import (
    REQUEST_ID,
    content_disposition,
    match_download,
    parse_query,
    request_id,
    route_name,
)


@pytest.mark.parametrize(
    ("path", "model_id"),
    [
        ("/api/v1/models/mdl-a/training-metrics/logs/download", "mdl-a"),
        ("/api/v1/models/mdl-a/training/metrics/logs/download", "mdl-a"),
        ("/api/v1/models//training-metrics/logs/download", ""),
        ("/api/v1/models/mdl-a/training-metrics/logs/download/", None),
        ("/api/v1/models/a/b/training-metrics/logs/download", None),
        ("/api/v1/models/mdl-a/training_metrics/logs/download", None),
        ("/api/v2/models/mdl-a/training-metrics/logs/download", None),
    ],
)
def test_routes(path: str, model_id: str | None) -> None:
    assert match_download(path) == model_id


def test_route_names_never_hold_the_model_id() -> None:
    assert route_name("/api/v1/models/mdl-secret/training-metrics/logs/download") == (
        "/api/v1/models/{model_id}/training-metrics/logs/download"
    )
    assert route_name("/api/v1/models/mdl-secret/x") == "unmatched"


@pytest.mark.parametrize(
    ("query", "format", "run_id"),
    [
        (b"", "txt", None),
        (b"format=json", "json", None),
        (b"run_id=run-1&format=txt&other=1&other=2", "txt", "run-1"),
        (b"run_id=", "txt", ""),
        (b"run_id=run%2D1", "txt", "run-1"),
    ],
)
def test_queries(query: bytes, format: str, run_id: str | None) -> None:
    parsed = parse_query(query)
    assert (parsed.format, parsed.run_id) == (format, run_id)


@pytest.mark.parametrize(
    "query", [b"format=", b"format", b"format=xml", b"format=json&format=json", b"format=%FF"]
)
def test_bad_formats(query: bytes) -> None:
    with pytest.raises(InvalidFormat):
        parse_query(query)


def test_repeated_run_id() -> None:
    with pytest.raises(InvalidQuery):
        parse_query(b"run_id=run-1&run_id=run-1")


@given(st.binary(max_size=200))
def test_any_query_parses_or_is_a_400(query: bytes) -> None:
    try:
        parse_query(query)
    except (InvalidFormat, InvalidQuery):
        pass


@given(st.text(max_size=200))
def test_request_ids_echoed_only_when_safe(header: str) -> None:
    value = request_id(header)
    assert REQUEST_ID.fullmatch(value)
    assert value == header or not REQUEST_ID.fullmatch(header)


@given(st.from_regex(RUN_ID, fullmatch=True), st.sampled_from(["txt", "json", "ndjson"]))
def test_content_disposition_is_a_safe_header_value(run_id: str, extension: str) -> None:
    value = content_disposition(run_id, extension)
    name = f"training-log-{run_id}.{extension}"
    assert value == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    assert not set(value) & {"\r", "\n", "\0"}
    assert value.count('"') == 2
    assert value.isascii()
