"""Entity tags, HTTP dates and the conditional-request rules of RFC 9110, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.conditions import (
    http_date,
    if_range_holds,
    make_etag,
    not_modified,
    parse_http_date,
)

MODIFIED = datetime(2026, 3, 13, 11, 2, 0, 250_000, tzinfo=UTC)
NOW = MODIFIED + timedelta(days=1)
TAG = make_etag(["models/mdl-a/runs/run-1/training.log", "v1", "123", "txt", "identity"])


def test_etags_are_strong_quoted_and_name_their_parts() -> None:
    assert TAG.startswith('"') and TAG.endswith('"') and len(TAG) == 24
    assert TAG == make_etag(
        ["models/mdl-a/runs/run-1/training.log", "v1", "123", "txt", "identity"]
    )
    assert TAG != make_etag(
        ["models/mdl-a/runs/run-1/training.log", "v1", "124", "txt", "identity"]
    )
    weak = make_etag(["x"], weak=True)
    assert weak.startswith('W/"') and weak[2:] == make_etag(["x"])


@given(st.lists(st.text(), max_size=5), st.lists(st.text(), max_size=5))
def test_different_parts_give_different_tags(a: list[str], b: list[str]) -> None:
    if a != b and "\0".join(a) != "\0".join(b):
        assert make_etag(a) != make_etag(b)


def test_http_dates() -> None:
    assert http_date(MODIFIED) == "Fri, 13 Mar 2026 11:02:00 GMT"
    for text in (
        "Fri, 13 Mar 2026 11:02:00 GMT",
        "Friday, 13-Mar-26 11:02:00 GMT",
        "Fri Mar 13 11:02:00 2026",
    ):
        assert parse_http_date(text) == MODIFIED.replace(microsecond=0), text
    assert parse_http_date("yesterday") is None
    assert parse_http_date("") is None


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        (TAG, True),
        ("*", True),
        ("W/" + TAG, True),  # If-None-Match compares weakly
        (f'"other", {TAG}', True),
        ('"other"', False),
        ("garbage", False),
        ("", False),
    ],
)
def test_if_none_match(if_none_match: str, expected: bool) -> None:
    assert not_modified(if_none_match, None, TAG, MODIFIED) is expected


def test_if_none_match_against_a_weak_tag() -> None:
    assert not_modified(TAG, None, "W/" + TAG, MODIFIED)


def test_if_modified_since() -> None:
    assert not_modified(None, http_date(MODIFIED), TAG, MODIFIED)
    assert not_modified(None, http_date(MODIFIED + timedelta(hours=1)), TAG, MODIFIED)
    assert not not_modified(None, http_date(MODIFIED - timedelta(seconds=1)), TAG, MODIFIED)
    assert not not_modified(None, "not a date", TAG, MODIFIED)
    assert not not_modified(None, http_date(MODIFIED), TAG, None)
    assert not not_modified(None, None, TAG, MODIFIED)


def test_if_none_match_wins_over_if_modified_since() -> None:
    fresh_date = http_date(MODIFIED + timedelta(hours=1))
    assert not not_modified('"stale"', fresh_date, TAG, MODIFIED)
    assert not_modified(TAG, http_date(MODIFIED - timedelta(days=1)), TAG, MODIFIED)


def test_if_range() -> None:
    assert if_range_holds(TAG, TAG, MODIFIED, NOW)
    assert not if_range_holds('"stale"', TAG, MODIFIED, NOW)
    assert not if_range_holds("W/" + TAG, TAG, MODIFIED, NOW)  # weak never matches
    assert not if_range_holds(TAG[2:], "W/" + TAG[2:], MODIFIED, NOW)
    assert not if_range_holds(TAG, None, MODIFIED, NOW)
    assert if_range_holds(http_date(MODIFIED), TAG, MODIFIED, NOW)
    assert not if_range_holds(http_date(MODIFIED + timedelta(seconds=1)), TAG, MODIFIED, NOW)
    assert not if_range_holds(http_date(MODIFIED - timedelta(seconds=1)), TAG, MODIFIED, NOW)
    # A Last-Modified within the last second is not a strong validator.
    assert not if_range_holds(http_date(MODIFIED), TAG, MODIFIED, MODIFIED)
    assert not if_range_holds("garbage", TAG, MODIFIED, NOW)
