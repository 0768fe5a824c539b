"""Get Logs without I/O: the query, cursors, the planner's checks, entries and times."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.catalog import LogObject, Run
from streamer.cursors import Cursor, CursorCodec, Walk, cursor_keys, derive_key
from streamer.errors import InvalidCursor, InvalidFields, InvalidQuery
from streamer.lines import MAX_MESSAGE, Line, entry, parse_block, time_key
from streamer.logs.body import page_body
from streamer.logs.plan import check_version, plan_page
from streamer.logs.query import PageQuery, parse_page_query
from streamer.logs.seek import Page
from streamer.routes import match, route_name
from streamer.storage import ObjectInfo

CODEC = CursorCodec([b"k" * 32])


# The query.


def test_defaults() -> None:
    query = parse_page_query(b"format=xml&unknown=1")
    assert query == PageQuery()
    assert query.limit == 100 and query.direction is None and query.fields == "default"


@pytest.mark.parametrize(("text", "limit"), [("1", 1), ("1000", 1000), ("0100", 100), ("42", 42)])
def test_limit(text: str, limit: int) -> None:
    assert parse_page_query(f"limit={text}".encode()).limit == limit


@pytest.mark.parametrize(
    "text", ["0", "1001", "", "-1", "+5", " 5", "1e3", "١٢", "9" * 5000, "5.0"]
)
def test_bad_limit(text: str) -> None:
    with pytest.raises(InvalidQuery, match="limit"):
        parse_page_query(b"limit=" + text.encode())


@pytest.mark.parametrize("text", ["Backward", "back", "", "both"])
def test_bad_direction(text: str) -> None:
    with pytest.raises(InvalidQuery, match="direction"):
        parse_page_query(f"direction={text}".encode())


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("2026-03-13T10:00:00Z", "2026-03-13T10:00:00Z"),
        ("2026-03-13t10:00:00.5z", "2026-03-13t10:00:00.5z"),
        ("2026-03-13T10:00:00%2B02:00", "2026-03-13T10:00:00+02:00"),
        # An unencoded "+" decodes to a space: read back as "+".
        ("2026-03-13T10:00:00+02:00", "2026-03-13T10:00:00+02:00"),
        ("2026-03-13T10:00:00-02:00", "2026-03-13T10:00:00-02:00"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:60Z"),
    ],
)
def test_times(raw: str, normal: str) -> None:
    assert parse_page_query(f"since={raw}".encode()).since == normal
    assert parse_page_query(f"until={raw}".encode()).until == normal


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-13",
        "2026-03-13T10:00:00",
        "2026-02-30T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "2026-03-13T24:00:00Z",
        "2026-03-13T10:60:00Z",
        "2026-03-13T10:00:61Z",
        "2026-03-13T10:00:00+24:00",
        "2026-03-13 10:00:00Z",
        "yesterday",
        "",
    ],
)
def test_bad_times(text: str) -> None:
    for name in ("since", "until"):
        with pytest.raises(InvalidQuery, match=name):
            parse_page_query(f"{name}={text}".encode())


def test_since_after_until() -> None:
    with pytest.raises(InvalidQuery, match="since"):
        parse_page_query(b"since=2026-03-13T10:00:01Z&until=2026-03-13T10:00:00Z")
    # The same instant written two ways is an empty window, not an error.
    same = parse_page_query(b"since=2026-03-13T12:00:00%2B02:00&until=2026-03-13T10:00:00Z")
    assert same.since is not None and same.until is not None


def test_levels_are_a_case_insensitive_set() -> None:
    assert parse_page_query(b"level=error,WARN").levels == ("ERROR", "WARN")
    assert parse_page_query(b"level=WARN,ERROR,warn").levels == ("ERROR", "WARN")


@pytest.mark.parametrize("text", ["", ",", "WARN,", "WARN,,ERROR", "WARN ERROR", "W4RN", "É"])
def test_bad_levels(text: str) -> None:
    with pytest.raises(InvalidQuery, match="level"):
        parse_page_query(f"level={text}".encode())


def test_contains_length() -> None:
    assert parse_page_query("contains=é".encode()).contains == "é"
    assert parse_page_query(b"contains=" + b"x" * 256).contains == "x" * 256
    for bad in (b"", b"x" * 257):
        with pytest.raises(InvalidQuery, match="contains"):
            parse_page_query(b"contains=" + bad)


@pytest.mark.parametrize(
    "name", ["run_id", "limit", "direction", "since", "until", "level", "contains", "cursor"]
)
def test_a_repeated_parameter_is_named(name: str) -> None:
    value = {"limit": "5", "since": "2026-03-13T10:00:00Z", "until": "2026-03-13T10:00:00Z"}.get(
        name, "run-a1" if name == "run_id" else "forward" if name == "direction" else "INFO"
    )
    with pytest.raises(InvalidQuery, match=name):
        parse_page_query(f"{name}={value}&{name}={value}".encode())


@pytest.mark.parametrize("query", [b"fields=x", b"fields=", b"fields=ecs&fields=ecs"])
def test_bad_fields(query: bytes) -> None:
    with pytest.raises(InvalidFields):
        parse_page_query(query)


# Cursors.

walks = st.builds(
    Walk,
    model_id=st.from_regex(r"mdl-[a-z0-9]{1,20}", fullmatch=True),
    run_id=st.from_regex(r"run-[a-z0-9]{1,20}", fullmatch=True),
    direction=st.sampled_from(["backward", "forward"]),
    since=st.none() | st.just("2026-03-13T10:00:00Z"),
    until=st.none() | st.just("2026-03-13T11:00:00+01:00"),
    levels=st.none()
    | st.lists(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), min_size=1).map(tuple),
    contains=st.none() | st.text(min_size=1, max_size=256),
)
cursors = st.builds(
    Cursor,
    walk=walks,
    version=st.text(max_size=40),
    position=st.integers(0, 2**62),
    start=st.none() | st.integers(0, 2**40),
    stop=st.none() | st.integers(0, 2**40),
    live=st.booleans(),
)


@given(cursor=cursors)
def test_cursors_round_trip(cursor: Cursor) -> None:
    text = CODEC.encode(cursor)
    assert text.isascii() and "=" not in text and "+" not in text and "/" not in text
    assert CODEC.decode(text) == cursor


@given(cursor=cursors, data=st.data())
def test_any_change_of_a_cursor_is_refused(cursor: Cursor, data: st.DataObject) -> None:
    text = CODEC.encode(cursor)
    at = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.characters().filter(lambda c: c != text[at]))
    how = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
    altered = {
        "replace": text[:at] + char + text[at + 1 :],
        "insert": text[:at] + char + text[at:],
        "delete": text[:at] + text[at + 1 :],
        "cut": text[:at],
    }[how]
    with pytest.raises(InvalidCursor):
        CODEC.decode(altered)


def test_keys_rotate_and_replicas_agree() -> None:
    cursor = Cursor(Walk("mdl-a", "run-a", "backward"), "v1", 10)
    old = CursorCodec([b"old-key-of-sixteen"])
    rotating = CursorCodec([b"new-key-of-sixteen", b"old-key-of-sixteen"])
    assert rotating.decode(old.encode(cursor)) == cursor
    retired = CursorCodec([b"new-key-of-sixteen"])
    with pytest.raises(InvalidCursor):
        retired.decode(old.encode(cursor))
    # Two replicas configured alike (the same JWT secret, no keys set) share the default.
    one = CursorCodec(cursor_keys(None, "the-jwt-secret-of-thirty-two-bytes"))
    two = CursorCodec(cursor_keys(None, "the-jwt-secret-of-thirty-two-bytes"))
    assert two.decode(one.encode(cursor)) == cursor
    assert derive_key("s") != b"s" and len(derive_key("s")) == 32
    assert cursor_keys(("a" * 16, "b" * 16), "x") == [b"a" * 16, b"b" * 16]


@pytest.mark.parametrize("text", ["", ".", "abc", "abc.def", "é.é", "a" * 5000 + "." + "b" * 22])
def test_unparsable_cursors(text: str) -> None:
    with pytest.raises(InvalidCursor):
        CODEC.decode(text)


def test_a_signed_cursor_of_another_shape_is_refused() -> None:
    # Signed with our key, but not a body this version writes.
    payload = CursorCodec._mac  # the signing primitive, reused to forge a well-signed oddity
    import base64

    for body in ([2, "mdl-a"], {"a": 1}, [1, "mdl-a", "run-a", "v", -1, "b", *[None] * 6]):
        text = base64.urlsafe_b64encode(orjson.dumps(body)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor):
            CODEC.decode(f"{text}.{payload(b'k' * 32, text)}")


# The planner's cursor checks.


def cursor_query(cursor: Cursor, extra: str = "") -> PageQuery:
    text = CODEC.encode(cursor)
    return parse_page_query(f"cursor={text}{extra}".encode())


BASE = Cursor(
    Walk(
        "mdl-a",
        "run-a",
        "backward",
        since="2026-03-13T10:00:00Z",
        levels=("ERROR", "WARN"),
        contains="loss",
    ),
    "v1",
    100,
)


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "&limit=7",
        "&fields=ecs",
        "&run_id=run-a",
        "&direction=backward",
        "&since=2026-03-13T12:00:00%2B02:00",
        "&level=warn,error",
        "&contains=loss",
        "&format=xml",
    ],
)
def test_parameters_that_agree_with_the_cursor(extra: str) -> None:
    plan = plan_page("mdl-a", cursor_query(BASE, extra), CODEC)
    assert plan.cursor is not None and plan.cursor.position == 100
    assert (plan.walk.direction, plan.walk.run_id) == ("backward", "run-a")
    assert plan.limit == (7 if "limit" in extra else 100)


@pytest.mark.parametrize(
    "extra",
    [
        "&run_id=run-b",
        "&direction=forward",
        "&since=2026-03-13T10:00:01Z",
        "&until=2026-03-13T11:00:00Z",
        "&level=ERROR",
        "&contains=Loss",
    ],
)
def test_parameters_that_disagree_with_the_cursor(extra: str) -> None:
    with pytest.raises(InvalidCursor):
        plan_page("mdl-a", cursor_query(BASE, extra), CODEC)


def test_a_cursor_of_another_model() -> None:
    with pytest.raises(InvalidCursor):
        plan_page("mdl-b", cursor_query(BASE), CODEC)


def log_object(status: str = "completed", etag: str = "v1", size: int = 1000) -> LogObject:
    run = Run("run-a", status, None, None, None)  # type: ignore[arg-type]
    return LogObject("mdl-a", run, "k", False, ObjectInfo(size, etag, datetime.now(UTC)))


def test_versions() -> None:
    plan = plan_page("mdl-a", cursor_query(BASE), CODEC)
    check_version(plan, log_object())
    with pytest.raises(InvalidCursor):
        check_version(plan, log_object(etag="v2"))
    # A run still writing: a new version is the log grown (its length is the walk's check).
    check_version(plan, log_object("running", "v2", 100))
    # Made while the run wrote its log: the run that ended since may have written more.
    live = plan_page("mdl-a", cursor_query(replace(BASE, live=True)), CODEC)
    check_version(live, log_object("completed", "v2", 100))


def test_body_and_null_cursors() -> None:
    lines = parse_block(b"2026-03-13T10:00:00Z [INFO] a\nb\n", 10)
    plan = plan_page("mdl-a", parse_page_query(b"fields=otel"), CODEC)
    page = Page(lines, near=42, far=10, start=10, stop=42, start_final=True, stop_final=True)
    body = orjson.loads(page_body(plan, page, log_object(), CODEC))
    assert body == {
        "model_id": "mdl-a",
        "run_id": "run-a",
        "data": [
            {
                "offset": 10,
                "Timestamp": "2026-03-13T10:00:00Z",
                "SeverityText": "INFO",
                "Body": "a",
            },
            {"offset": 40, "Timestamp": None, "SeverityText": None, "Body": "b"},
        ],
        "next_cursor": None,
        "prev_cursor": None,
    }
    live = Page(lines, near=42, far=10, start=0, stop=42, start_final=True, stop_final=False)
    body = orjson.loads(page_body(plan, live, log_object("running"), CODEC))
    prev = CODEC.decode(body["prev_cursor"])
    assert (prev.walk.direction, prev.position, prev.stop) == ("forward", 42, None)
    assert CODEC.decode(body["next_cursor"]).position == 10


# Entries and times.


def test_long_messages_are_cut_at_a_character() -> None:
    message = "x" * (MAX_MESSAGE - 1) + "é" + "tail"
    line = Line(0, 1, None, None, message)
    out = entry(line)
    assert out["message"] == "x" * (MAX_MESSAGE - 1) and out["truncated"] is True
    exact = entry(Line(0, 1, None, None, "é" * (MAX_MESSAGE // 2)))
    assert "truncated" not in exact and exact["message"] == "é" * (MAX_MESSAGE // 2)


def test_offsets_count_every_byte() -> None:
    lines = parse_block(b"a\r\n\xff\n\nlast", 7)
    assert [(line.offset, line.end, line.message) for line in lines] == [
        (7, 10, "a"),
        (10, 12, "\ufffd"),
        (12, 13, ""),
        (13, 17, "last"),
    ]


def test_time_keys_order_instants() -> None:
    assert time_key("2026-03-13T10:00:00+02:00") == time_key("2026-03-13T08:00:00Z")
    assert time_key("2026-03-13T10:00:00.5Z") > time_key("2026-03-13T10:00:00.123Z")
    assert time_key("2026-03-13T10:00:00.10Z") == time_key("2026-03-13T10:00:00.1z")
    assert time_key("2026-03-01T00:00:00Z") > time_key("2026-02-28T23:59:59.999Z")
    assert time_key("2024-03-01T00:00:00Z")[0] - time_key("2024-02-28T00:00:00Z")[0] == 2 * 86400
    assert time_key("1970-01-01T00:00:00Z") == (0, "")


# Routes.


def test_one_table_of_routes() -> None:
    found = match("/api/v1/models/mdl-a/training/metrics/logs")
    assert found is not None and (found[0].name, found[1]) == ("logs", "mdl-a")
    found = match("/api/v1/models/mdl-a/training-metrics/logs/download")
    assert found is not None and found[0].name == "download"
    assert match("/api/v1/models/mdl-a/training-metrics/logs/") is None
    assert route_name("/api/v1/models/mdl-secret/training-metrics/logs") == (
        "/api/v1/models/{model_id}/training-metrics/logs"
    )
