"""The request and response plans, without I/O: query parsing and plan_response."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from streamer.catalog import RUN_ID, LogObject, Run
from streamer.conditions import http_date
from streamer.errors import InvalidFields, InvalidFormat, InvalidQuery, RangeNotSatisfiable
from streamer.plan import (
    REQUEST_ID,
    Query,
    ResponsePlan,
    content_disposition,
    match_download,
    negotiation_headers,
    parse_query,
    plan_response,
    request_id,
    route_name,
)
from streamer.storage import ObjectInfo

MODIFIED = datetime(2026, 3, 13, 11, 2, 0, tzinfo=UTC)
NOW = MODIFIED + timedelta(days=1)
SIZE = 100_000
RUN = Run("run-a2", "completed", None, MODIFIED, None)
PLAIN = LogObject(
    "mdl-alpha", RUN, "models/mdl-alpha/runs/run-a2/training.log", False,
    ObjectInfo(SIZE, "etag-1", MODIFIED),
)  # fmt: skip
GZ = LogObject(
    "mdl-alpha", RUN, "models/mdl-alpha/runs/run-a2/training.log.gz", True,
    ObjectInfo(SIZE, "etag-1", MODIFIED),
)  # fmt: skip
TXT = Query("txt", None)


def plan(
    log: LogObject = PLAIN,
    query: Query = TXT,
    method: str = "GET",
    gzip: bool = False,
    **headers: str,
) -> ResponsePlan:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return plan_response(log, query, method, named, gzip=gzip, now=NOW)


def header(result: ResponsePlan, name: str) -> str | None:
    values = [v.decode() for k, v in result.headers if k == name.encode()]
    assert len(values) <= 1, name
    return values[0] if values else None


# Query


def test_query_formats_and_fields() -> None:
    assert parse_query(b"") == Query("txt", None, "default")
    assert parse_query(b"format=ndjson&fields=datadog") == Query("ndjson", None, "datadog")
    assert parse_query(b"format=json&fields=ecs&run_id=run-1") == Query("json", "run-1", "ecs")
    assert parse_query(b"fields=otel") == Query("txt", None, "otel")  # accepted, no effect


@pytest.mark.parametrize(
    "query", [b"fields=", b"fields", b"fields=ECS", b"fields=xml", b"fields=ecs&fields=ecs"]
)
def test_invalid_fields(query: bytes) -> None:
    with pytest.raises(InvalidFields) as raised:
        parse_query(query)
    assert (raised.value.status, raised.value.code) == (400, "invalid_fields")


def test_format_is_checked_before_fields_and_fields_before_run_id() -> None:
    with pytest.raises(InvalidFormat):
        parse_query(b"format=xml&fields=xml")
    with pytest.raises(InvalidFields):
        parse_query(b"fields=xml&run_id=run-1&run_id=run-2")
    with pytest.raises(InvalidQuery):
        parse_query(b"fields=ecs&run_id=run-1&run_id=run-2")


def test_content_disposition_has_both_filename_forms() -> None:
    assert content_disposition("run-a2", "ndjson") == (
        'attachment; filename="training-log-run-a2.ndjson"; '
        "filename*=UTF-8''training-log-run-a2.ndjson"
    )


# 200


def test_plain_txt() -> None:
    result = plan()
    assert (result.status, result.start, result.end, result.length) == (200, 0, SIZE, SIZE)
    assert not (result.decode_gzip or result.gzip or result.encode)
    assert header(result, "content-length") == str(SIZE)
    assert header(result, "accept-ranges") == "bytes"
    assert header(result, "vary") == "Accept-Encoding"
    assert header(result, "last-modified") == "Fri, 13 Mar 2026 11:02:00 GMT"
    assert header(result, "content-encoding") is None
    etag = header(result, "etag")
    assert etag is not None and etag.startswith('"')


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_json_and_ndjson_have_no_ranges_and_no_length(fmt: str) -> None:
    query = parse_query(f"format={fmt}&fields=ecs".encode())
    result = plan(query=query, range="bytes=0-10")
    assert result.status == 200
    assert (result.encode, result.fields) == (fmt, "ecs")
    assert result.length == SIZE  # the whole object is read, and no more
    assert header(result, "content-length") is None
    assert header(result, "accept-ranges") is None
    assert header(result, "content-range") is None


def test_representations_have_distinct_etags() -> None:
    tags = {
        header(plan(), "etag"),
        header(plan(query=parse_query(b"format=json")), "etag"),
        header(plan(query=parse_query(b"format=json&fields=ecs")), "etag"),
        header(plan(query=parse_query(b"format=ndjson")), "etag"),
        header(plan(gzip=True, accept_encoding="gzip"), "etag"),
        header(plan(GZ), "etag"),
        header(plan(GZ, accept_encoding="gzip"), "etag"),
        header(plan(replace(PLAIN, info=ObjectInfo(SIZE, "etag-2", MODIFIED))), "etag"),
    }
    assert len(tags) == 8 and None not in tags


def test_fields_do_not_change_a_txt_representation() -> None:
    assert header(plan(), "etag") == header(plan(query=parse_query(b"fields=ecs")), "etag")


def test_no_validators_without_store_version() -> None:
    bare = LogObject("mdl-alpha", RUN, PLAIN.key, False, ObjectInfo(SIZE, None, None))
    result = plan(bare, if_none_match="*", range="bytes=0-9")
    assert result.status == 304  # "*" matches any current representation
    result = plan(bare, range="bytes=0-9")
    assert header(result, "etag") is None and header(result, "last-modified") is None
    assert result.status == 206


# gzip


def test_gzip_object_passes_through_to_a_client_that_accepts_gzip() -> None:
    result = plan(GZ, accept_encoding="gzip, deflate")
    assert (result.status, result.decode_gzip, result.gzip) == (200, False, False)
    assert header(result, "content-encoding") == "gzip"
    assert header(result, "content-length") == str(SIZE)
    assert header(result, "accept-ranges") == "bytes"


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br"])
def test_gzip_object_is_decoded_otherwise(accept: str | None) -> None:
    if accept is None:
        result = plan(GZ, range="bytes=0-9")
    else:
        result = plan(GZ, range="bytes=0-9", accept_encoding=accept)
    assert (result.status, result.decode_gzip, result.length) == (200, True, None)
    assert header(result, "content-encoding") is None
    assert header(result, "content-length") is None
    assert header(result, "accept-ranges") is None


def test_gzip_object_as_json_is_decoded_even_for_gzip_clients() -> None:
    result = plan(GZ, parse_query(b"format=ndjson"), accept_encoding="gzip")
    assert (result.decode_gzip, result.gzip, result.encode) == (True, False, "ndjson")
    assert header(result, "content-encoding") is None


def test_on_the_fly_gzip() -> None:
    assert not plan(gzip=True).gzip  # the client did not ask
    assert not plan(accept_encoding="gzip").gzip  # the setting is off
    result = plan(gzip=True, accept_encoding="gzip")
    assert result.gzip and header(result, "content-encoding") == "gzip"
    assert header(result, "content-length") is None
    etag = header(result, "etag")
    assert etag is not None and etag.startswith('W/"')
    as_json = plan(GZ, parse_query(b"format=json"), gzip=True, accept_encoding="gzip")
    assert as_json.decode_gzip and as_json.gzip and as_json.encode == "json"


def test_never_gzip_on_the_fly_for_a_range() -> None:
    result = plan(gzip=True, accept_encoding="gzip", range="bytes=0-9")
    assert result.status == 206 and not result.gzip
    assert header(result, "content-encoding") is None


# 206 / 416


def test_range() -> None:
    result = plan(range="bytes=100-16483")
    assert (result.status, result.start, result.end, result.length) == (206, 100, 16484, 16384)
    result = plan(range="bytes=100-199")
    assert (result.status, result.start, result.end, result.length) == (206, 100, 200, 100)
    assert header(result, "content-range") == f"bytes 100-199/{SIZE}"
    assert header(result, "content-length") == "100"
    assert header(result, "etag") == header(plan(), "etag")
    suffix = plan(range="bytes=-500")
    assert (suffix.start, suffix.end, header(suffix, "content-range")) == (
        SIZE - 500,
        SIZE,
        f"bytes {SIZE - 500}-{SIZE - 1}/{SIZE}",
    )
    open_ended = plan(range="bytes=99000-")
    assert (open_ended.start, open_ended.end, open_ended.length) == (99000, SIZE, 1000)


def test_range_on_a_gzip_passthrough_counts_stored_bytes() -> None:
    result = plan(GZ, accept_encoding="gzip", range="bytes=10-19")
    assert (result.status, result.start, result.end, result.decode_gzip) == (206, 10, 20, False)
    assert header(result, "content-encoding") == "gzip"


@pytest.mark.parametrize("value", ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2", "bytes=x"])
def test_ignored_ranges(value: str) -> None:
    result = plan(range=value)
    assert (result.status, result.start, result.end) == (200, 0, SIZE)


def test_range_is_ignored_on_head() -> None:
    assert plan(method="HEAD", range="bytes=0-9").status == 200
    assert plan(method="HEAD", range=f"bytes={SIZE}-").status == 200


@pytest.mark.parametrize("value", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_unsatisfiable_range(value: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        plan(range=value)
    assert raised.value.headers["Content-Range"] == f"bytes */{SIZE}"


def test_if_range() -> None:
    etag = header(plan(), "etag")
    assert etag is not None
    assert plan(range="bytes=0-9", if_range=etag).status == 206
    assert plan(range="bytes=0-9", if_range=http_date(MODIFIED)).status == 206
    stale = plan(range="bytes=0-9", if_range='"stale"')
    assert (stale.status, stale.start, stale.end) == (200, 0, SIZE)
    assert plan(range="bytes=0-9", if_range="W/" + etag).status == 200
    old_date = http_date(MODIFIED - timedelta(hours=1))
    assert plan(range="bytes=0-9", if_range=old_date).status == 200
    # A stale If-Range means "send it all", even when the range could not be satisfied.
    assert plan(range=f"bytes={SIZE}-", if_range='"stale"').status == 200


# 304


def test_not_modified() -> None:
    etag = header(plan(), "etag")
    assert etag is not None
    result = plan(if_none_match=etag)
    assert result.status == 304 and not result.has_body
    assert header(result, "etag") == etag
    assert header(result, "last-modified") == http_date(MODIFIED)
    assert header(result, "vary") == "Accept-Encoding"
    assert header(result, "content-length") is None
    assert header(result, "content-type") is None
    assert plan(if_modified_since=http_date(MODIFIED)).status == 304
    assert plan(if_modified_since=http_date(MODIFIED - timedelta(seconds=1))).status == 200
    # If-None-Match wins when both are present.
    assert plan(if_none_match='"x"', if_modified_since=http_date(NOW)).status == 200
    # A validator of another representation does not match.
    assert plan(query=parse_query(b"format=json"), if_none_match=etag).status == 200
    # Conditions are evaluated before the range: 304 wins over 206 and 416.
    assert plan(if_none_match=etag, range="bytes=0-9").status == 304
    assert plan(if_none_match=etag, range=f"bytes={SIZE}-").status == 304
    assert plan(method="HEAD", if_none_match=etag).status == 304


def test_headers_sent_on_several_lines_combine() -> None:
    etag = header(plan(), "etag")
    assert etag is not None
    raw = Headers(
        raw=[
            (b"if-none-match", b'"other"'),
            (b"if-none-match", etag.encode()),
            (b"range", b"bytes=0-1"),
            (b"range", b"bytes=5-6"),
            (b"x-unrelated", b"1"),
        ]
    )
    combined = negotiation_headers(raw)
    assert combined == {"if-none-match": f'"other", {etag}', "range": "bytes=0-1, bytes=5-6"}
    assert plan_response(PLAIN, TXT, "GET", combined, gzip=False, now=NOW).status == 304
    del combined["if-none-match"]
    assert plan_response(PLAIN, TXT, "GET", combined, gzip=False, now=NOW).status == 200


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
