"""The page reader on real stores (memory, local): walks against a reference line model,
and what each kind of page reads from the store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.cursors import Cursor, Walk
from streamer.errors import InvalidCursor
from streamer.lines import Line
from streamer.logs import scan
from streamer.logs.plan import PagePlan
from streamer.logs.seek import Page, read_page
from streamer.storage import CachedReader, Store
from testkit.dataset import big_log
from testkit.reference import reference_lines, reference_page_lines, timed_log
from testkit.strategies import any_log

_keys = itertools.count()


def memory_file(data: bytes) -> CachedReader:
    key = f"walk/{next(_keys)}.log"
    with fsspec.filesystem("memory").open(f"/seek-tests/{key}", "wb") as file:
        file.write(data)
    return CachedReader(Store.from_url("memory://seek-tests"), key, len(data))


def next_plan(plan: PagePlan, page: Page) -> PagePlan | None:
    """What the next_cursor of `page` holds, or None where it would be null."""
    if plan.walk.direction == "backward" and page.far <= page.start:
        return None
    if plan.walk.direction == "forward" and page.far >= page.stop and page.stop_final:
        return None
    cursor = Cursor(
        plan.walk,
        "",
        page.far,
        start=page.start if page.start_final else None,
        stop=page.stop if page.stop_final else None,
    )
    return replace(plan, cursor=cursor)


async def walk(file: CachedReader, plan: PagePlan, terminal: bool = True) -> list[list[Line]]:
    """Every page of a walk, in the order read."""
    pages: list[list[Line]] = []
    current: PagePlan | None = plan
    while current is not None:
        page = await read_page(file, current, terminal)
        assert len(page.lines) <= plan.limit
        assert [line.offset for line in page.lines] == sorted(line.offset for line in page.lines)
        if not page.lines:
            assert page.near == page.far
        current = next_plan(current, page)
        if current is not None and not page.lines and page.far >= page.stop:
            assert not terminal  # a live log: the cursor at its end is kept, for polling
            break
        pages.append(page.lines)
        assert len(pages) < 2000, "the walk makes no progress"
    return pages


def flatten(pages: list[list[Line]], direction: str) -> list[Line]:
    ordered = pages if direction == "forward" else pages[::-1]
    return [line for page in ordered for line in page]


def plan(direction: str = "backward", limit: int = 100, **filters: object) -> PagePlan:
    return PagePlan(Walk("mdl-x", None, direction, **filters), limit)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=any_log,
    limit=st.integers(1, 5),
    direction=st.sampled_from(["backward", "forward"]),
    terminal=st.booleans(),
)
def test_walks_equal_the_reference_line_model(
    data: bytes, limit: int, direction: str, terminal: bool
) -> None:
    pages = anyio.run(walk, memory_file(data), plan(direction, limit), terminal)
    assert flatten(pages, direction) == reference_page_lines(data, terminal)
    # Without filters every page but the last of the walk is full.
    assert all(len(page) == limit for page in pages[:-1])


levels_filter = st.sampled_from([None, ("INFO",), ("ERROR", "WARN"), ("E",), ("NOPE",)])
contains_filter = st.sampled_from([None, "a", "\ufffd", "INFO", "e", "é", '"'])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=any_log,
    limit=st.integers(1, 4),
    direction=st.sampled_from(["backward", "forward"]),
    levels=levels_filter,
    contains=contains_filter,
    terminal=st.booleans(),
)
def test_filtered_walks_equal_a_reference_filter(
    data: bytes,
    limit: int,
    direction: str,
    levels: tuple[str, ...] | None,
    contains: str | None,
    terminal: bool,
) -> None:
    walked = anyio.run(
        walk, memory_file(data), plan(direction, limit, levels=levels, contains=contains), terminal
    )
    expected = reference_page_lines(data, terminal, levels=levels, contains=contains)
    assert flatten(walked, direction) == expected


TIMED = timed_log(700)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    since=st.one_of(st.none(), st.integers(-5, 720)),
    width=st.one_of(st.none(), st.integers(0, 200)),
    limit=st.integers(4, 60),
    direction=st.sampled_from(["backward", "forward"]),
    levels=levels_filter,
    contains=st.sampled_from([None, "step 1", "File"]),
)
def test_windows_equal_a_reference_filter(
    since: int | None,
    width: int | None,
    limit: int,
    direction: str,
    levels: tuple[str, ...] | None,
    contains: str | None,
) -> None:
    def at(second: int) -> str:
        second = max(0, second)
        return f"2026-03-13T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"

    low = at(since) if since is not None else None
    high = at((since or 0) + width) if width is not None else None
    filters = {"since": low, "until": high, "levels": levels, "contains": contains}
    walked = anyio.run(walk, memory_file(TIMED), plan(direction, limit, **filters))
    expected = reference_page_lines(TIMED, True, low, high, levels, contains)
    assert flatten(walked, direction) == expected


def test_lines_before_the_first_timestamp_lie_outside_any_bounded_window() -> None:
    data = b"banner\n  more\n2026-03-13T10:00:00Z [INFO] a\ncontinued\n"
    walked = anyio.run(walk, memory_file(data), plan(until="2030-01-01T00:00:00Z"))
    assert [line.message for line in flatten(walked, "backward")] == ["a", "continued"]
    by_level = anyio.run(walk, memory_file(data), plan(levels=("INFO",)))
    assert [line.message for line in flatten(by_level, "backward")] == ["a", "continued"]


def test_since_equal_until_is_an_empty_window() -> None:
    moment = "2026-03-13T00:10:00Z"
    page = anyio.run(read_page, memory_file(TIMED), plan(since=moment, until=moment), True)
    assert page.lines == [] and page.near == page.far == page.start == page.stop


# What pages read.

TAIL_LINES = big_log(200_000)  # 9 MB


@pytest.fixture(scope="module")
def local_big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("seek")
    (root / "big.log").write_bytes(TAIL_LINES)
    yield Store.from_url(str(root))


def test_the_last_page_reads_one_block_from_the_end(local_big: Store) -> None:
    file = CachedReader(local_big, "big.log", len(TAIL_LINES))
    page = anyio.run(read_page, file, plan(limit=100), True)
    assert [line.offset for line in page.lines] == [
        line.offset for line in reference_lines(TAIL_LINES[-200 * 57 :])[-100:]
    ] or len(page.lines) == 100
    assert page.lines[-1].end == len(TAIL_LINES)
    assert (file.reads, file.bytes_read) == (1, scan.BLOCK)


def test_a_line_longer_than_a_block_is_read_whole_backward_and_forward() -> None:
    long = b"2026-03-13T10:00:00Z [INFO] " + b"x" * (5 * scan.BLOCK) + b"\n"
    data = big_log(10) + long + big_log(10)
    for direction in ("backward", "forward"):
        walked = anyio.run(walk, memory_file(data), plan(direction, 3))
        assert flatten(walked, direction) == reference_lines(data)


def test_a_since_page_reads_log_size_blocks() -> None:
    data = timed_log(40_000, traceback_every=3)  # about 2.3 MB
    file = memory_file(data)
    page = anyio.run(read_page, file, plan("forward", 10, since="2026-03-13T05:00:00Z"), True)
    assert page.lines[0].timestamp == "2026-03-13T05:00:00Z"
    # Bisection: one or two reads per halving of the log, down to a block.
    halvings = (len(data) // scan.BLOCK).bit_length()
    assert file.reads <= 2 * halvings + 2


def test_a_filtered_page_stops_after_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "SCAN_BUDGET", 4 * scan.BLOCK)
    monkeypatch.setattr(scan, "SCAN_BLOCK", scan.BLOCK)
    data = big_log(40_000)  # no ERROR line at all
    for direction in ("forward", "backward"):
        file = memory_file(data)
        page = anyio.run(read_page, file, plan(direction, levels=("ERROR",)), True)
        assert page.lines == [] and page.near == page.far
        assert 0 < abs(page.far - (0 if direction == "forward" else len(data))) <= 4 * scan.BLOCK
        assert file.bytes_read <= 5 * scan.BLOCK
        # Walking on reaches the other end with no line lost.
        marked = data + b"2026-03-13T11:00:00Z [ERROR] the one\n"
        walked = anyio.run(walk, memory_file(marked), plan(direction, levels=("ERROR",)))
        assert [line.message for line in flatten(walked, direction)] == ["the one"]


def test_a_growing_log_holds_back_its_unterminated_line(tmp_path: Path) -> None:
    data = big_log(5) + b"2026-03-13T10:00:09Z [INFO] half a li"
    path = tmp_path / "live.log"
    path.write_bytes(data)
    store = Store.from_url(str(tmp_path))
    first = anyio.run(read_page, CachedReader(store, "live.log", len(data)), plan(), False)
    assert len(first.lines) == 5 and first.near == len(big_log(5))
    # The run writes on: the forward cursor from the end picks up where it left.
    path.write_bytes(data + b"ne\n" + big_log(2))
    size = path.stat().st_size
    forward = plan("forward")
    follow = replace(forward, cursor=Cursor(forward.walk, "", first.near))
    page = anyio.run(read_page, CachedReader(store, "live.log", size), follow, False)
    assert [line.message for line in page.lines] == [
        "half a line",
        "step 0000000 loss=0.0000",
        "step 0000001 loss=0.0001",
    ]
    assert page.far == size


def _generated(size: int) -> tuple[CachedReader, int]:
    from testkit.generated import put_generated

    key = f"generated-{size}.log"
    log = put_generated("memory://seek-tests", key, size)
    return CachedReader(Store.from_url("memory://seek-tests"), key, log.size), log.size


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_walking_5_mb_by_1000_gives_every_line_once(direction: str) -> None:
    """(The 100 MB walk is `python -m bench.pages --walk`: 30 s a direction here.)"""
    from testkit.generated import LINE, line

    file, size = _generated(5_000_000)
    pages = anyio.run(walk, file, plan(direction, 1000))
    walked = flatten(pages, direction)
    assert len(walked) == size // LINE and len(pages) == -(-len(walked) // 1000)
    for number, got in enumerate(walked):
        assert (got.offset, got.end) == (number * LINE, number * LINE + LINE)
    for number in (0, 1, 999, len(walked) // 2, len(walked) - 1):
        text = line(number)[:-1].decode()
        assert walked[number].message == text[text.index("] ") + 2 :]
    # Filters: every 1000th line is an ERROR; "step 12345" is in 1 + 10 + 100 + ... lines.
    errors = flatten(anyio.run(walk, file, plan(direction, 1000, levels=("ERROR",))), direction)
    assert [got.offset for got in errors] == list(range(999 * LINE, size, 1000 * LINE))
    found = flatten(anyio.run(walk, file, plan(direction, 7, contains="step 12345")), direction)
    expected = [n for n in range(size // LINE) if str(n).startswith("12345")]
    assert [got.offset // LINE for got in found] == expected


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_a_cursor_past_the_end_of_the_log_is_refused(direction: str) -> None:
    data = big_log(5)
    start = plan(direction)
    past = replace(start, cursor=Cursor(start.walk, "", len(data) + 1))
    with pytest.raises(InvalidCursor):
        anyio.run(read_page, memory_file(data), past, False)
    at_end = replace(start, cursor=Cursor(start.walk, "", len(data)))
    assert anyio.run(read_page, memory_file(data), at_end, False).far in (0, len(data))
