"""RFC 3339 times read in one place: the three readers and how strict each is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streamer.times import parse_datetime, query_time, time_key


def test_metadata_times_are_lenient_where_writers_are() -> None:
    assert parse_datetime("2026-03-13 10:00:00") == datetime(2026, 3, 13, 10, tzinfo=UTC)
    east = timezone(timedelta(hours=2))
    assert parse_datetime("2026-03-13T12:00:00.1234567+02:00") == datetime(
        2026, 3, 13, 12, 0, 0, 123456, east
    )
    assert parse_datetime("2016-12-31T23:59:60Z") == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-03-13", "not an RFC 3339 string"),
        ("2026-03-13T10:00:00 02:00", "not an RFC 3339 string"),
        ("2026-03-13T10:00:00+24:00", "impossible offset"),
        ("2026-02-29T10:00:00Z", "not a calendar date"),
        ("2026-03-13T24:00:00Z", "not a calendar date"),
    ],
)
def test_metadata_times_that_are_not(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_datetime(text)


def test_query_times_need_an_offset_and_a_date_that_exists() -> None:
    assert query_time("2026-03-13T10:00:00 02:00") == "2026-03-13T10:00:00+02:00"
    assert query_time("2024-02-29T10:00:00.5z") == "2024-02-29T10:00:00.5z"
    for text in ("2026-03-13T10:00:00", "2026-03-13 10:00:00Z", "2023-02-29T10:00:00Z"):
        assert query_time(text) is None


def test_line_timestamps_order_without_a_calendar_check() -> None:
    assert time_key("2026-02-31T00:00:00Z") > time_key("2026-02-28T00:00:00Z")
    assert time_key("2026-03-13T10:00:00-01:00") == time_key("2026-03-13T11:00:00Z")
    for text in ("2026-03-13T10:00:00", "2026-03-13 10:00:00Z", "2026-03-13T10:00:00 01:00"):
        with pytest.raises(ValueError):
            time_key(text)
