"""The catalog: ids, default run, retention, malformed metadata, caching, concurrency."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamer.catalog import MODEL_ID, RUN_ID, Catalog, LogObject, valid_model_id, valid_run_id
from streamer.errors import (
    LogsExpired,
    LogsNotReady,
    LogsPurged,
    ModelNotFound,
    NoCompletedRun,
    RunNotFound,
)
from streamer.storage import Store, StoreUnreachable, listing
from streamer.storage.gcs import GcsBackend
from streamer.storage.s3 import S3Backend
from testkit.emulators import BUCKET, ENDPOINTS
from testkit.fakes import SpyBackend

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
ORG = "org-acme"
MODEL = "mdl-churn"
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
NEAR_MISSES = [
    "",
    "mdl-",
    "run-",
    "mdl-_a",
    "run--a",
    "MDL-a",
    "mdl-a/b",
    "run-a/b",
    "mdl-../x",
    "run-..",
    "mdl-a\n",
    "run-a\n",
    "mdl-a\r\n",
    "mdl-a b",
    "mdl-a\x00",
    "mdl-é",
    "run-é",
    "mdl-a٣",
    "run-٣",
    "mdl-\uff41",
    "mdl-a" + "b" * 128,
    "run-a" + "b" * 128,
    " mdl-a",
    "mdl-a.log",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def memory_store() -> SpyBackend:
    return SpyBackend()


@pytest.fixture(params=["local", "memory"])
def spy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpyBackend]:
    spy = SpyBackend(str(tmp_path)) if request.param == "local" else memory_store()
    yield spy
    if request.param == "memory":
        spy.remove_all()


def seed_model(spy: SpyBackend, model_id: str = MODEL, org: str = ORG) -> None:
    spy.put(
        f"models/{model_id}/model.json",
        orjson.dumps({"model_id": model_id, "organization_id": org}),
    )


def seed_run(
    spy: SpyBackend,
    run_id: str,
    status: str = "completed",
    completed_at: str | None = "2026-03-13T11:00:00Z",
    logs_expire_at: str | None = None,
    log: bytes | None = b"line\n",
    gz: bool = False,
    model_id: str = MODEL,
    raw: bytes | None = None,
) -> None:
    """A run folder: run.json (or `raw` bytes instead) and its log, plain or gzip."""
    folder = f"models/{model_id}/runs/{run_id}"
    doc = {
        "run_id": run_id,
        "status": status,
        "created_at": "2026-03-13T10:00:00Z",
        "completed_at": completed_at,
        "logs_expire_at": logs_expire_at,
    }
    spy.put(f"{folder}/run.json", raw if raw is not None else orjson.dumps(doc))
    if log is not None:
        if gz:
            spy.put(f"{folder}/training.log.gz", gzip.compress(log))
        else:
            spy.put(f"{folder}/training.log", log)


async def resolve(
    spy: SpyBackend, run_id: str | None = None, model_id: str = MODEL, org: str = ORG
) -> LogObject:
    return await Catalog(spy.store, ttl_s=0).resolve(model_id, org, run_id, now=NOW)


# --- ids -------------------------------------------------------------------------------


def reference_valid(value: str, prefix: str) -> bool:
    body = value[len(prefix) :]
    return (
        value.startswith(prefix)
        and 1 <= len(body) <= 128
        and set(body) <= ID_CHARS
        and body[0] not in "_-"
    )


id_texts = st.one_of(
    st.text(),
    st.sampled_from(NEAR_MISSES),
    st.from_regex(MODEL_ID, fullmatch=True),
    st.from_regex(RUN_ID, fullmatch=True),
    st.builds(lambda p, s: p + s, st.sampled_from(["mdl-", "run-"]), st.text(max_size=140)),
)


@given(id_texts)
def test_ids_are_exactly_the_ascii_patterns(value: str) -> None:
    assert valid_model_id(value) == reference_valid(value, "mdl-")
    assert valid_run_id(value) == reference_valid(value, "run-")


def test_id_length_bounds() -> None:
    assert valid_model_id("mdl-a" + "b" * 127)
    assert not valid_model_id("mdl-a" + "b" * 128)
    assert valid_run_id("run-0")


@settings(deadline=None)
@given(id_texts.filter(lambda v: MODEL_ID.fullmatch(v) is None))
@example("mdl-a\n")
@example("mdl-../../etc")
@example("mdl-a" + "b" * 128)
def test_malformed_model_id_never_reaches_the_store(model_id: str) -> None:
    spy = memory_store()

    async def main() -> None:
        with pytest.raises(ModelNotFound):
            await Catalog(spy.store).resolve(model_id, ORG, None, now=NOW)
        with pytest.raises(ModelNotFound):
            await Catalog(spy.store).resolve(model_id, ORG, "run-a", now=NOW)

    anyio.run(main)
    assert spy.calls == []


@settings(deadline=None)
@given(id_texts.filter(lambda v: RUN_ID.fullmatch(v) is None))
@example("")
@example("run-a\n")
@example("run-../../model.json")
def test_malformed_run_id_never_reaches_the_store(run_id: str) -> None:
    spy = memory_store()
    seed_model(spy)
    seed_run(spy, "run-a")
    catalog = Catalog(spy.store, ttl_s=60)

    async def main() -> None:
        with pytest.raises(RunNotFound):
            await catalog.resolve(MODEL, ORG, run_id, now=NOW)
        spy.calls.clear()
        with pytest.raises(RunNotFound):
            await catalog.resolve(MODEL, ORG, run_id, now=NOW)

    try:
        anyio.run(main)
    finally:
        spy.remove_all()
    assert spy.calls == []  # the model is cached; the run id itself never became a key


# --- models and organizations ------------------------------------------------------------


@pytest.mark.anyio
async def test_other_organization_is_an_unknown_model(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    with pytest.raises(ModelNotFound) as foreign:
        await resolve(spy, org="org-other")
    with pytest.raises(ModelNotFound) as unknown:
        await resolve(spy, model_id="mdl-nope")
    with pytest.raises(ModelNotFound) as foreign_run:
        await resolve(spy, "run-a", org="org-other")
    assert foreign.value.detail == unknown.value.detail == foreign_run.value.detail
    assert foreign.value.code == unknown.value.code == "model_not_found"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'"org-acme"',
        b"\xff\xfe",
        b'{"model_id": "mdl-churn"}',
        b'{"model_id": "mdl-churn", "organization_id": 7}',
        b'{"model_id": "mdl-churn", "organization_id": ""}',
        b'{"model_id": "mdl-other", "organization_id": "org-acme"}',
    ],
)
async def test_malformed_model_json_is_an_unknown_model(
    spy: SpyBackend, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    spy.put(f"models/{MODEL}/model.json", raw)
    seed_run(spy, "run-a")
    with caplog.at_level(logging.WARNING, logger="streamer.catalog"), pytest.raises(ModelNotFound):
        await resolve(spy)
    assert [r.name for r in caplog.records] == ["streamer.catalog"]
    assert MODEL in caplog.text


@pytest.mark.anyio
async def test_model_json_without_model_id_is_accepted(spy: SpyBackend) -> None:
    spy.put(f"models/{MODEL}/model.json", b'{"organization_id": "org-acme", "extra": [1]}')
    seed_run(spy, "run-a")
    assert (await resolve(spy)).run.run_id == "run-a"


@pytest.mark.anyio
async def test_refused_access_is_the_store_unreachable_not_an_unknown_model(
    spy: SpyBackend,
) -> None:
    seed_model(spy)
    spy.fail[f"models/{MODEL}/model.json"] = PermissionError("denied")
    with pytest.raises(StoreUnreachable, match="PermissionError: denied"):
        await resolve(spy)


# --- default run ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_default_is_the_latest_completed_run(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-old", completed_at="2026-03-10T00:00:00Z")
    seed_run(spy, "run-new", completed_at="2026-03-12T00:00:00Z")
    seed_run(spy, "run-zz-none", completed_at=None)
    for status in ("queued", "running", "failed", "cancelled"):
        seed_run(spy, f"run-{status}", status=status, completed_at="2026-03-19T00:00:00Z")
    # 10:00+02:00 is 08:00Z: earlier than run-new despite the larger wall-clock digits.
    seed_run(spy, "run-offset", completed_at="2026-03-12T01:00:00+02:00")
    found = await resolve(spy)
    assert found.run.run_id == "run-new"
    assert found.key == f"models/{MODEL}/runs/run-new/training.log"
    assert found.model_id == MODEL
    assert not found.gzip
    assert found.info.size == len(b"line\n")


@pytest.mark.anyio
async def test_ties_go_to_the_greatest_run_id(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-b", completed_at="2026-03-12T00:00:00Z")
    seed_run(spy, "run-a", completed_at="2026-03-12T00:00:00Z")
    seed_run(spy, "run-B", completed_at="2026-03-12T02:00:00+02:00")  # same instant
    assert (await resolve(spy)).run.run_id == "run-b"


@pytest.mark.anyio
async def test_missing_completed_at_ranks_below_any_time(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-zzz", completed_at=None)
    seed_run(spy, "run-aaa", completed_at="1970-01-01T00:00:00Z")
    assert (await resolve(spy)).run.run_id == "run-aaa"


@pytest.mark.anyio
async def test_without_any_completed_at_the_greatest_run_id_wins(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at=None)
    spy.put(f"models/{MODEL}/runs/run-b/run.json", b'{"run_id": "run-b", "status": "completed"}')
    spy.put(f"models/{MODEL}/runs/run-b/training.log", b"")
    found = await resolve(spy)
    assert found.run.run_id == "run-b"
    assert found.run.created_at is None and found.run.completed_at is None


@pytest.mark.anyio
async def test_no_completed_run(spy: SpyBackend) -> None:
    seed_model(spy)
    with pytest.raises(NoCompletedRun):
        await resolve(spy)  # no runs folder at all
    for status in ("queued", "running", "failed", "cancelled"):
        seed_run(spy, f"run-{status}", status=status)
    with pytest.raises(NoCompletedRun):
        await resolve(spy)


@pytest.mark.anyio
@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
async def test_unfinished_runs_download_by_explicit_id(spy: SpyBackend, status: str) -> None:
    seed_model(spy)
    seed_run(spy, "run-x", status=status, completed_at=None)
    assert (await resolve(spy, "run-x")).run.status == status
    spy.remove(f"models/{MODEL}/runs/run-x/training.log")
    # Terminal, its log is gone for good; queued or running, it may come yet.
    missing = LogsPurged if status in ("failed", "cancelled") else LogsNotReady
    with pytest.raises(missing):
        await resolve(spy, "run-x")


@pytest.mark.anyio
async def test_unknown_run(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    with pytest.raises(RunNotFound):
        await resolve(spy, "run-b")
    spy.put(f"models/{MODEL}/runs/run-c/training.log", b"log without run.json")
    with pytest.raises(RunNotFound):
        await resolve(spy, "run-c")


@pytest.mark.anyio
async def test_folders_that_are_not_run_ids_are_never_read(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    for name in ("run-", "latest", "run-a.bak", "run-_x"):
        seed_run(spy, name, completed_at="2026-03-19T00:00:00Z")
    assert (await resolve(spy)).run.run_id == "run-a"
    assert spy.reads_of("run.json") == [f"models/{MODEL}/runs/run-a/run.json"]


# --- retention -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_expired_even_when_the_object_exists(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", logs_expire_at="2026-03-20T11:59:59Z")
    with pytest.raises(LogsExpired):
        await resolve(spy)
    with pytest.raises(LogsExpired):
        await resolve(spy, "run-a")


@pytest.mark.anyio
async def test_expired_beats_purged(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", logs_expire_at="2026-01-01T00:00:00Z", log=None)
    with pytest.raises(LogsExpired):
        await resolve(spy, "run-a")


@pytest.mark.anyio
async def test_expiry_in_the_future_or_now_is_not_expired(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", logs_expire_at="2026-03-20T12:00:00Z")
    seed_run(spy, "run-b", logs_expire_at="2027-01-01T00:00:00Z")
    assert (await resolve(spy, "run-a")).run.logs_expire_at == NOW
    assert (await resolve(spy, "run-b")).run.run_id == "run-b"


@pytest.mark.anyio
async def test_now_defaults_to_the_current_time(spy: SpyBackend) -> None:
    seed_model(spy)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    seed_run(spy, "run-a", logs_expire_at=past)
    with pytest.raises(LogsExpired):
        await Catalog(spy.store).resolve(MODEL, ORG, "run-a")


@pytest.mark.anyio
async def test_purged(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", log=None)
    with pytest.raises(LogsPurged):
        await resolve(spy, "run-a")


@pytest.mark.anyio
async def test_the_default_never_skips_an_expired_or_purged_run(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-old", completed_at="2026-03-01T00:00:00Z")
    seed_run(spy, "run-new", completed_at="2026-03-02T00:00:00Z", log=None)
    with pytest.raises(LogsPurged):
        await resolve(spy)
    seed_run(
        spy, "run-new", completed_at="2026-03-02T00:00:00Z", logs_expire_at="2026-03-03T00:00:00Z"
    )
    with pytest.raises(LogsExpired):
        await resolve(spy)


@pytest.mark.anyio
async def test_gzip_fallback_and_plain_preferred(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", gz=True)
    found = await resolve(spy, "run-a")
    assert found.gzip
    assert found.key == f"models/{MODEL}/runs/run-a/training.log.gz"
    seed_run(spy, "run-a")  # now both exist
    found = await resolve(spy, "run-a")
    assert not found.gzip
    assert found.key == f"models/{MODEL}/runs/run-a/training.log"


# --- run.json ------------------------------------------------------------------------------


def good_run(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "run_id": "run-new",
        "status": "completed",
        "created_at": "2026-03-13T10:00:00Z",
        "completed_at": "2026-03-19T00:00:00Z",
        "logs_expire_at": None,
    }
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


SECRET = "s3cr3t-content"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raw",
    [
        b"{" + SECRET.encode(),
        b"",
        b"null",
        b'["run-new"]',
        b"\xff" + SECRET.encode(),
        good_run(run_id="run-other"),
        good_run(run_id=7),
        good_run(status="done"),
        good_run(status=...),
        good_run(status=None),
        good_run(completed_at=1773878400),
        good_run(completed_at=SECRET),
        good_run(completed_at="2026-03-19"),
        good_run(completed_at="2026-W12-1"),
        good_run(completed_at="20260319T000000Z"),
        good_run(completed_at="2026-02-30T00:00:00Z"),
        good_run(completed_at="2026-03-19T24:00:00Z"),
        good_run(completed_at="2026-03-19T00:00:00+24:00"),
        good_run(completed_at="2026-03-19T00:00:00Z\n"),
        good_run(completed_at="\uff12026-03-19T00:00:00Z"),
        good_run(logs_expire_at="never"),
        good_run(created_at="yesterday"),
    ],
)
async def test_malformed_run_json_is_ignored_and_logged(
    spy: SpyBackend, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    seed_model(spy)
    seed_run(spy, "run-old", completed_at="2026-03-01T00:00:00Z")
    seed_run(spy, "run-new", raw=raw)
    with caplog.at_level(logging.WARNING, logger="streamer.catalog"):
        assert (await resolve(spy)).run.run_id == "run-old"
        with pytest.raises(RunNotFound):
            await resolve(spy, "run-new")
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert record.name == "streamer.catalog"
        assert record.levelno == logging.WARNING
        assert MODEL in record.getMessage() and "run-new" in record.getMessage()
    assert SECRET not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-19T10:00:00Z", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19t10:00:00z", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19 10:00:00Z", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19T10:00:00.5Z", datetime(2026, 3, 19, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-19T10:00:00.123456789Z", datetime(2026, 3, 19, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-19T12:30:00+02:30", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19T05:00:00-05:00", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19T10:00:00-00:00", datetime(2026, 3, 19, 10, tzinfo=UTC)),
        ("2026-03-19T10:00:00", datetime(2026, 3, 19, 10, tzinfo=UTC)),  # naive: UTC
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (None, None),
        (..., None),
    ],
)
async def test_rfc3339_times(spy: SpyBackend, text: Any, expected: datetime | None) -> None:
    seed_model(spy)
    spy.put(f"models/{MODEL}/runs/run-new/run.json", good_run(completed_at=text, extra={"a": 1}))
    spy.put(f"models/{MODEL}/runs/run-new/training.log", b"")
    run = (await resolve(spy)).run
    assert run.completed_at == expected
    assert run.completed_at is None or run.completed_at.tzinfo is not None
    if expected is not None and text.endswith("+02:30"):
        assert run.completed_at is not None
        assert run.completed_at.utcoffset() == timezone(timedelta(hours=2, minutes=30)).utcoffset(
            None
        )


@pytest.mark.anyio
async def test_run_json_without_run_id_takes_the_folder_name(spy: SpyBackend) -> None:
    seed_model(spy)
    spy.put(f"models/{MODEL}/runs/run-new/run.json", good_run(run_id=...))
    spy.put(f"models/{MODEL}/runs/run-new/training.log", b"")
    assert (await resolve(spy)).run.run_id == "run-new"


# --- caching and concurrency ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_metadata_is_cached_for_the_ttl(spy: SpyBackend) -> None:
    seed_model(spy)
    for i in range(5):
        seed_run(spy, f"run-{i}", completed_at=f"2026-03-1{i}T00:00:00Z")
    spy.settle()
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    assert (await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id == "run-4"
    assert len(spy.reads_of("run.json")) == 5
    assert len(spy.reads_of("model.json")) == 1

    spy.calls.clear()
    clock.now += 4.9
    assert (await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id == "run-4"
    assert (await catalog.resolve(MODEL, ORG, "run-2", now=NOW)).run.run_id == "run-2"
    assert spy.reads_of(".json") == []
    # The log object is looked up every time, so a purge shows at once.
    spy.remove(f"models/{MODEL}/runs/run-4/training.log")
    with pytest.raises(LogsPurged):
        await catalog.resolve(MODEL, ORG, None, now=NOW)
    assert spy.reads_of(".json") == []

    clock.now += 0.2
    seed_run(spy, "run-5", completed_at="2026-03-19T00:00:00Z")
    assert (await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id == "run-5"
    assert spy.listings() == [f"models/{MODEL}/runs/"]
    assert spy.reads_of("run.json") == [f"models/{MODEL}/runs/run-5/run.json"]  # only the new one
    assert len(spy.reads_of("model.json")) == 1


@pytest.mark.anyio
async def test_explicit_run_lookup_reads_only_its_run_json(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    seed_run(spy, "run-b")
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    await catalog.resolve(MODEL, ORG, "run-a", now=NOW)
    await catalog.resolve(MODEL, ORG, "run-a", now=NOW)
    assert spy.reads_of(".json") == [
        f"models/{MODEL}/model.json",
        f"models/{MODEL}/runs/run-a/run.json",
    ]
    assert spy.listings() == []
    clock.now += 5
    await catalog.resolve(MODEL, ORG, "run-a", now=NOW)
    assert len(spy.reads_of("runs/run-a/run.json")) == 2


@pytest.mark.anyio
async def test_ttl_zero_disables_caching(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    catalog = Catalog(spy.store, ttl_s=0, clock=Clock())
    for _ in range(3):
        await catalog.resolve(MODEL, ORG, None, now=NOW)
    assert len(spy.reads_of("model.json")) == 3
    assert len(spy.reads_of("run.json")) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("ttl_s", [5.0, 0.0])
async def test_concurrent_cold_resolves_share_one_load(spy: SpyBackend, ttl_s: float) -> None:
    seed_model(spy)
    for i in range(10):
        seed_run(spy, f"run-{i}")
    catalog = Catalog(spy.store, ttl_s=ttl_s, clock=Clock())
    found: list[str] = []

    async def one() -> None:
        found.append((await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)
    assert found == ["run-9"] * 8
    assert len(spy.reads_of("model.json")) == 1
    assert len(spy.reads_of("run.json")) == 10


@pytest.mark.anyio
async def test_a_store_failure_propagates_and_is_not_cached(spy: SpyBackend) -> None:
    seed_model(spy)
    for i in range(3):
        seed_run(spy, f"run-{i}")
    catalog = Catalog(spy.store, ttl_s=60, clock=Clock())
    spy.fail[f"models/{MODEL}/runs/run-1/run.json"] = OSError("store down")
    failures: list[BaseException] = []
    found: list[str] = []

    async def one() -> None:
        try:
            found.append((await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id)
        except OSError as exc:
            failures.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(one)
            group.start_soon(one)
    # The first load fails with the bare error; the waiting request loads again.
    assert [str(e) for e in failures] == ["store down"]
    assert found == ["run-2"]
    assert (await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id == "run-2"


@pytest.mark.anyio
async def test_two_thousand_runs_are_read_concurrently(spy: SpyBackend) -> None:
    seed_model(spy)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(2000):
        stamp = (base + timedelta(minutes=(i * 7919) % 2000)).isoformat()
        seed_run(spy, f"run-{i:05d}", completed_at=stamp, log=None)
    latest = max(range(2000), key=lambda i: (i * 7919) % 2000)
    spy.put(f"models/{MODEL}/runs/run-{latest:05d}/training.log", b"x")
    with anyio.fail_after(60):
        found = await Catalog(spy.store).resolve(MODEL, ORG, None, now=NOW)
    assert found.run.run_id == f"run-{latest:05d}"
    assert len(spy.reads_of("run.json")) == 2000
    assert 1 < spy.max_in_flight <= 64


# --- refreshes: stale-while-revalidate, incremental, the staleness bound ------------------

RUNS = f"models/{MODEL}/runs/"


async def default_of(catalog: Catalog) -> str:
    return (await catalog.resolve(MODEL, ORG, None, now=NOW)).run.run_id


@pytest.mark.anyio
async def test_expired_metadata_is_served_while_one_refresh_runs(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    clock = Clock()
    with anyio.fail_after(10):
        async with Catalog(spy.store, ttl_s=5, clock=clock) as catalog:
            assert await default_of(catalog) == "run-a"
            seed_run(spy, "run-b", completed_at="2026-03-02T00:00:00Z")
            spy.listing_gate = gate = anyio.Event()
            clock.now += 5
            # Expired: answered at once with what was loaded, while the refresh is held.
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            assert spy.listings() == [RUNS, RUNS]  # the cold one, and the refresh: held
            for _ in range(3):
                assert await default_of(catalog) == "run-a"
            assert spy.listings() == [RUNS, RUNS]  # one refresh, not one per request
            gate.set()
            await anyio.wait_all_tasks_blocked()
            assert await default_of(catalog) == "run-b"
            assert spy.listings() == [RUNS, RUNS]
            assert catalog.refresh_failures == 0


@pytest.mark.anyio
async def test_the_ttl_counts_from_when_the_load_began(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    clock = Clock()
    with anyio.fail_after(10):
        async with Catalog(spy.store, ttl_s=5, clock=clock) as catalog:
            assert await default_of(catalog) == "run-a"
            spy.listing_gate = gate = anyio.Event()
            clock.now += 5
            assert await default_of(catalog) == "run-a"  # starts a refresh, held
            await anyio.wait_all_tasks_blocked()
            clock.now += 3  # the listing takes 3 s of the 5 s TTL
            spy.listing_gate = None
            gate.set()
            await anyio.wait_all_tasks_blocked()
            assert spy.listings() == [RUNS, RUNS]
            seed_run(spy, "run-b", completed_at="2026-03-02T00:00:00Z")
            spy.settle()
            clock.now += 1.9
            assert await default_of(catalog) == "run-a"  # fresh: no refresh
            await anyio.wait_all_tasks_blocked()
            assert spy.listings() == [RUNS, RUNS]
            # 5 s after the refresh began (2 s after it ended) its result has expired: the
            # next request starts another refresh, which sees run-b.
            clock.now += 0.1
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            assert spy.listings() == [RUNS, RUNS, RUNS]
            assert await default_of(catalog) == "run-b"


@pytest.mark.anyio
async def test_without_start_an_expired_model_is_refreshed_in_the_request(
    spy: SpyBackend,
) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    assert await default_of(catalog) == "run-a"
    seed_run(spy, "run-b", completed_at="2026-03-02T00:00:00Z")
    clock.now += 5
    assert await default_of(catalog) == "run-b"


@pytest.mark.anyio
async def test_a_refresh_reads_only_new_and_changed_run_json(spy: SpyBackend) -> None:
    await check_only_changes_are_read(spy)


@pytest.fixture(params=["s3", "gs", "az"])
def remote_url(request: pytest.FixtureRequest) -> str:
    """A fresh folder on the S3, GCS or Azure emulator."""
    request.getfixturevalue(ENDPOINTS[request.param])
    return f"{request.param}://{BUCKET}/catalog-{uuid.uuid4().hex}"


@pytest.mark.anyio
async def test_a_refresh_on_the_emulators_reads_only_what_their_listing_shows_changed(
    remote_url: str,
) -> None:
    spy = SpyBackend(remote_url)
    try:
        await check_only_changes_are_read(spy)
    finally:
        await spy.aclose()


@pytest.mark.anyio
async def test_a_resolution_never_waits_for_a_listing_held_in_its_thread(
    remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresh's listing blocks the thread it runs on (as parsing 1,000 keys a page
    # does); a resolution still completes meanwhile. On the event loop, the hold would
    # stop the resolution until it timed out.
    if remote_url.startswith("az"):
        pytest.skip("Azure listings run on the event loop (docs/azure.md)")
    spy = SpyBackend(remote_url)
    name = "list_s3" if remote_url.startswith("s3") else "list_gcs"
    real = getattr(listing, name)
    hold, held, release = threading.Event(), threading.Event(), threading.Event()
    done = threading.Event()
    released: list[bool] = []
    threads: list[int] = []

    async def list_held(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
        threads.append(threading.get_ident())
        if hold.is_set():
            held.set()
            released.append(release.wait(20))
            done.set()
        result: dict[str, str | None] = await real(fs, bucket, prefix)
        return result

    monkeypatch.setattr(listing, name, list_held)
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    clock = Clock()
    try:
        with anyio.fail_after(60):
            async with Catalog(spy.store, ttl_s=5, clock=clock) as catalog:
                assert await default_of(catalog) == "run-a"  # cold: one listing, not held
                hold.set()
                clock.now += 5
                assert await default_of(catalog) == "run-a"  # starts the refresh
                assert await anyio.to_thread.run_sync(held.wait, 20)
                # (Through the store's own client: the test's blocking writer would wait for
                # fsspec's I/O thread, which the listing holds.)
                backend = spy.inner
                assert isinstance(backend, S3Backend | GcsBackend)
                await backend.fs._rm(backend.path(f"{RUNS}run-a/training.log"))
                with pytest.raises(LogsPurged):  # its HEAD answered while the listing is held
                    await default_of(catalog)
                release.set()
                assert await anyio.to_thread.run_sync(done.wait, 20)
        assert released == [True]
        assert threading.get_ident() not in threads and len(threads) == 2
    finally:
        release.set()
        await spy.aclose()


@pytest.mark.anyio
async def test_a_cancelled_listing_is_cancelled_on_its_thread(
    remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if remote_url.startswith("az"):
        pytest.skip("Azure listings run on the event loop (docs/azure.md)")
    store = Store.from_url(remote_url)
    name = "list_s3" if remote_url.startswith("s3") else "list_gcs"
    started, cancelled = threading.Event(), threading.Event()

    async def list_until_cancelled(fs: Any, bucket: str, prefix: str) -> dict[str, str | None]:
        started.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    monkeypatch.setattr(listing, name, list_until_cancelled)
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(store.list_versions, RUNS)
                assert await anyio.to_thread.run_sync(started.wait, 20)
                group.cancel_scope.cancel()
            assert await anyio.to_thread.run_sync(cancelled.wait, 20)
    finally:
        await store.aclose()


async def check_only_changes_are_read(spy: SpyBackend) -> None:
    seed_model(spy)
    for i in range(6):
        seed_run(spy, f"run-{i}", completed_at=f"2026-03-1{i}T00:00:00Z")
    spy.settle()
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    assert await default_of(catalog) == "run-5"
    assert spy.listings() == [RUNS]  # cold: one listing, one read per run.json
    assert sorted(spy.reads_of("run.json")) == [f"{RUNS}run-{i}/run.json" for i in range(6)]

    spy.calls.clear()
    seed_run(spy, "run-2", completed_at="2026-03-19T00:00:00Z")  # changed
    seed_run(spy, "run-7", completed_at="2026-03-01T00:00:00Z")  # appeared
    spy.remove(f"{RUNS}run-5/run.json")  # disappeared
    spy.settle()
    clock.now += 5
    assert await default_of(catalog) == "run-2"
    assert spy.listings() == [RUNS]
    assert sorted(spy.reads_of("run.json")) == [f"{RUNS}run-2/run.json", f"{RUNS}run-7/run.json"]
    with pytest.raises(RunNotFound):
        await catalog.resolve(MODEL, ORG, "run-5", now=NOW)

    spy.calls.clear()
    clock.now += 5
    assert await default_of(catalog) == "run-2"
    assert spy.listings() == [RUNS]
    assert spy.reads_of("run.json") == []  # nothing changed: nothing read


@pytest.mark.anyio
async def test_a_malformed_run_json_is_read_again_only_when_it_changes(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    seed_run(spy, "run-b", raw=b"{")
    spy.settle()
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    assert await default_of(catalog) == "run-a"
    spy.calls.clear()
    clock.now += 5
    assert await default_of(catalog) == "run-a"
    assert spy.reads_of("run.json") == []
    seed_run(spy, "run-b", completed_at="2026-03-02T00:00:00Z")
    spy.settle()
    clock.now += 5
    assert await default_of(catalog) == "run-b"
    assert spy.reads_of("run.json") == [f"{RUNS}run-b/run.json"]


@pytest.mark.anyio
async def test_a_run_created_after_the_listing_is_found_by_its_id(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    catalog = Catalog(spy.store, ttl_s=60, clock=Clock())
    assert await default_of(catalog) == "run-a"
    seed_run(spy, "run-new", status="running", completed_at=None)
    found = await catalog.resolve(MODEL, ORG, "run-new", now=NOW)
    assert found.run.status == "running"
    assert spy.listings() == [RUNS]  # read on its own, not by listing again


@pytest.mark.anyio
async def test_a_failed_refresh_keeps_the_metadata_up_to_the_bound(
    spy: SpyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-01T00:00:00Z")
    clock = Clock()
    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="streamer.catalog"):
        async with Catalog(spy.store, ttl_s=5, clock=clock) as catalog:
            loaded = clock.now
            assert await default_of(catalog) == "run-a"
            seed_run(spy, "run-b", completed_at="2026-03-02T00:00:00Z")
            spy.fail_listing = OSError("store down")
            clock.now += 5
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            assert catalog.refresh_failures == 1
            assert "refresh failed" in caplog.text and "store down" in caplog.text
            # Not tried again before the next expiry.
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            assert len(spy.listings()) == 2 and catalog.refresh_failures == 1
            clock.now += 5
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            assert len(spy.listings()) == 3 and catalog.refresh_failures == 2
            # Just before the bound (60 s, which is more than 10 TTLs here): still served.
            clock.now = loaded + 59.9
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
            # Past it: the request waits for a load, and sees the store's failure.
            clock.now = loaded + 60
            with pytest.raises(OSError, match="store down"):
                await default_of(catalog)
            spy.fail_listing = None
            assert await default_of(catalog) == "run-b"
            # The model itself was refreshed meanwhile: it never failed.
            assert catalog.refresh_failures == 3


@pytest.mark.anyio
async def test_a_purge_is_seen_at_once_while_metadata_is_stale(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    clock = Clock()
    with anyio.fail_after(10):
        async with Catalog(spy.store, ttl_s=5, clock=clock) as catalog:
            assert await default_of(catalog) == "run-a"
            spy.listing_gate = anyio.Event()
            clock.now += 5
            spy.remove(f"{RUNS}run-a/training.log")
            with pytest.raises(LogsPurged):
                await default_of(catalog)
            with pytest.raises(LogsPurged):
                await catalog.resolve(MODEL, ORG, "run-a", now=NOW)
            seed_run(spy, "run-a")
            assert await default_of(catalog) == "run-a"


@pytest.mark.anyio
async def test_closing_cancels_a_refresh_in_progress(spy: SpyBackend) -> None:
    seed_model(spy)
    seed_run(spy, "run-a")
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    with anyio.fail_after(10):
        async with catalog:
            assert await default_of(catalog) == "run-a"
            spy.listing_gate = anyio.Event()  # never set
            clock.now += 5
            assert await default_of(catalog) == "run-a"
            await anyio.wait_all_tasks_blocked()
        # Closed: the held refresh was cancelled; requests load for themselves again.
        spy.listing_gate = None
        assert await default_of(catalog) == "run-a"
    assert len(spy.listings()) == 3


run_documents = st.one_of(
    st.none(),  # run.json removed
    st.tuples(
        st.sampled_from(["queued", "running", "completed", "completed", "failed", "cancelled"]),
        st.sampled_from(
            [None, "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "2026-03-02T02:00:00+02:00"]
        ),
    ),
)


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.tuples(st.sampled_from(["run-a", "run-b", "run-B", "run-c"]), run_documents),
        min_size=1,
        max_size=12,
    )
)
def test_the_default_run_stays_exact_through_refreshes(
    changes: list[tuple[str, tuple[str, str | None] | None]],
) -> None:
    spy = memory_store()
    seed_model(spy)
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)

    async def outcome(catalog: Catalog) -> str:
        try:
            return await default_of(catalog)
        except (NoCompletedRun, LogsPurged) as exc:
            return type(exc).__name__

    async def main() -> None:
        for run_id, document in changes:
            if document is None:
                if spy.exists(f"{RUNS}{run_id}/run.json"):
                    spy.remove(f"{RUNS}{run_id}/run.json")
            else:
                seed_run(spy, run_id, status=document[0], completed_at=document[1])
            clock.now += 5
            # What a catalog that reads everything says, every time.
            assert await outcome(catalog) == await outcome(Catalog(spy.store, ttl_s=0))

    try:
        anyio.run(main)
    finally:
        spy.remove_all()


@pytest.mark.anyio
async def test_a_local_run_json_rewritten_within_one_timestamp_tick_is_still_seen(
    tmp_path: Path,
) -> None:
    spy = SpyBackend(str(tmp_path))
    seed_model(spy)
    seed_run(spy, "run-a", completed_at="2026-03-13T11:00:00Z")
    seed_run(spy, "run-b", completed_at="2026-03-12T11:00:00Z")
    clock = Clock()
    catalog = Catalog(spy.store, ttl_s=5, clock=clock)
    assert await default_of(catalog) == "run-a"
    # Rewritten with the same size and, as a coarse filesystem clock would, the same mtime.
    path = tmp_path / f"{RUNS}run-a/run.json"
    stamp, data = path.stat().st_mtime_ns, path.read_bytes()
    path.write_bytes(data.replace(b"2026-03-13", b"2026-03-11"))
    os.utime(path, ns=(stamp, stamp))
    assert path.stat().st_size == len(data)
    clock.now += 5
    assert await default_of(catalog) == "run-b"
