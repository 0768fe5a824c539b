"""The catalog: which model, which run, and whether its log can still be served.

`Catalog.resolve` is check 4 of the contract: it turns a model id, the caller's organization
and an optional run id into the `LogObject` to stream, or raises one of the 404 errors.

Caching, per process (`streamer.cache`):
- Metadata (model.json, a model's runs, a run.json read on its own) is fresh for `ttl_s`
  from when its load began.
  Once expired it is still served, while one refresh runs in the catalog's task group (so
  a request never waits for the refresh of a model already seen), for at most 10 TTLs (at
  least 60 s) after its last successful load. A failed refresh keeps the old metadata and
  is tried again at the next expiry; past the bound, requests wait for a load again.
- A model's runs are one listing of `models/<m>/runs/` with each object's version (ETag,
  generation, mtime); a refresh reads only the run.json files that are new or changed.
- The log object's existence is checked on every call, so that a purge is seen at once.

A missing object is a 404 only while the store works: the store confirms its root before
an absent model.json, run.json or log is believed (`Store.confirm_root`), and raises
`StoreUnreachable` otherwise, which the handlers answer with 503.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

import anyio
import orjson
from anyio.abc import TaskGroup

from streamer.cache import Cache
from streamer.errors import (
    LogsExpired,
    LogsNotReady,
    LogsPurged,
    ModelNotFound,
    NoCompletedRun,
    RunNotFound,
)
from streamer.storage import ObjectInfo, Store
from streamer.times import parse_datetime

MODEL_ID = re.compile(r"mdl-[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
RUN_ID = re.compile(r"run-[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
# RFC 3339 only: datetime.fromisoformat alone also takes "2026-03-13" and week dates.
_NEVER = datetime.min.replace(tzinfo=UTC)
_READ_CONCURRENCY = 64
# Expired metadata is served while it is refreshed for at most this long after its last
# successful load (10 TTLs, at least a minute); then requests wait for a load again.
_STALE_TTLS = 10
_STALE_MIN_S = 60.0
# A key that is not an object counts as absent (the store confirmed its root first). Any
# other failure propagates: refused access is the store's (StoreUnreachable), not a 404.
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
_NOT_TERMINAL = frozenset({"queued", "running"})

logger = logging.getLogger("streamer.catalog")


def valid_model_id(value: str) -> bool:
    """Whether `value` is a well-formed model id (ASCII, 5 to 132 characters)."""
    return MODEL_ID.fullmatch(value) is not None


def valid_run_id(value: str) -> bool:
    """Whether `value` is a well-formed run id (ASCII, 5 to 132 characters)."""
    return RUN_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Run:
    """A parsed run.json; times are timezone-aware."""

    run_id: str
    status: RunStatus
    created_at: datetime | None
    completed_at: datetime | None
    logs_expire_at: datetime | None


@dataclass(frozen=True)
class LogObject:
    """The log object a request will stream."""

    model_id: str
    run: Run
    key: str
    gzip: bool
    info: ObjectInfo


class _Malformed(ValueError):
    """A metadata file that cannot be used; the message names the reason, never the content."""


def _parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 time, or None for null. A time without an offset is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed("a time is not an RFC 3339 string")
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


def _document(data: bytes, id_key: str, folder: str) -> dict[str, Any]:
    """A JSON object whose `id_key`, when present, names its folder; raises _Malformed."""
    try:
        doc: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _Malformed("not valid JSON") from None
    if not isinstance(doc, dict):
        raise _Malformed("not a JSON object")
    if doc.get(id_key, folder) != folder:
        raise _Malformed(f"{id_key} does not match the folder name")
    return doc


def _parse_run(run_id: str, data: bytes) -> Run:
    """The run.json of folder `run_id`; raises _Malformed."""
    doc = _document(data, "run_id", run_id)
    status = doc.get("status")
    if status not in _STATUSES:
        raise _Malformed("status is missing or unknown")
    return Run(
        run_id=run_id,
        status=cast(RunStatus, status),
        created_at=_parse_timestamp(doc.get("created_at")),
        completed_at=_parse_timestamp(doc.get("completed_at")),
        logs_expire_at=_parse_timestamp(doc.get("logs_expire_at")),
    )


def _parse_model(model_id: str, data: bytes) -> str:
    """The organization_id of the model.json of folder `model_id`; raises _Malformed."""
    doc = _document(data, "model_id", model_id)
    organization = doc.get("organization_id")
    if not isinstance(organization, str) or not organization:
        raise _Malformed("organization_id is missing or not a string")
    return organization


def _default_run(runs: Iterable[Run]) -> Run | None:
    """The completed run with the latest completed_at; ties go to the greatest run_id."""
    completed = [run for run in runs if run.status == "completed"]
    if not completed:
        return None
    return max(completed, key=lambda r: (r.completed_at or _NEVER, r.run_id))


@dataclass(frozen=True)
class _Listing:
    """A model's runs as last listed: per run folder, the version of its run.json and the
    run it holds (None: gone or malformed); the default run, decided once per listing."""

    seen: dict[str, tuple[str | None, Run | None]]
    default: Run | None

    @classmethod
    def of(cls, seen: dict[str, tuple[str | None, Run | None]]) -> _Listing:
        return cls(seen, _default_run(run for _, run in seen.values() if run is not None))


class Catalog:
    """Resolves download requests against the store's models/ tree.

    Use it as an async context manager (or `start()` and `aclose()`) for the application's
    lifetime: metadata that expired is then refreshed in the background while requests are
    served what was loaded before. Without it, a request that finds metadata expired waits
    for the refresh.
    """

    def __init__(
        self, store: Store, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        max_stale_s = max(_STALE_TTLS * ttl_s, _STALE_MIN_S)
        self._models: Cache[str, str | None] = Cache("model", ttl_s, max_stale_s, clock)
        self._runs: Cache[str, _Listing] = Cache("runs of model", ttl_s, max_stale_s, clock)
        self._run: Cache[tuple[str, str], Run | None] = Cache("run", ttl_s, max_stale_s, clock)
        self._group: TaskGroup | None = None

    @property
    def refresh_failures(self) -> int:
        """Background refreshes that failed (their metadata was kept)."""
        return self._models.failures + self._runs.failures + self._run.failures

    async def start(self) -> None:
        """Refresh expired metadata in the background from now on."""
        if self._group is None:
            group = anyio.create_task_group()
            await group.__aenter__()
            self._group = group

    async def aclose(self) -> None:
        """Cancel the refreshes in progress; expired metadata is then reloaded in requests."""
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)

    async def __aenter__(self) -> Catalog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def resolve(
        self, model_id: str, organization: str, run_id: str | None, now: datetime | None = None
    ) -> LogObject:
        """The log object of `run_id` (or of the default run) of a model of `organization`.

        Raises ModelNotFound, RunNotFound, NoCompletedRun, LogsExpired, then LogsNotReady (a
        queued or running run without a log yet) or LogsPurged, in the order of check 4;
        `now` (default: the current time; naive means UTC) decides expiry. A store that does
        not work raises StoreUnreachable, never a 404; other store failures propagate.
        """
        if not valid_model_id(model_id):
            raise ModelNotFound()
        owner = await self._models.get(model_id, lambda _: self._load_model(model_id), self._group)
        if owner != organization:
            raise ModelNotFound()
        if run_id is not None:
            if not valid_run_id(run_id):
                raise RunNotFound()
            run = await self._explicit_run(model_id, run_id)
            if run is None:
                raise RunNotFound()
        else:
            listing = await self._runs.get(model_id, self._runs_loader(model_id), self._group)
            run = listing.default
            if run is None:
                raise NoCompletedRun()
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        if run.logs_expire_at is not None and run.logs_expire_at < now:
            raise LogsExpired()
        # Never cached: a purge shows at once, and HEAD and 304 answers need the object's
        # current size and version.
        folder = f"models/{model_id}/runs/{run.run_id}"
        for name, gzip in (("training.log", False), ("training.log.gz", True)):
            info = await self.store.info(f"{folder}/{name}")
            if info is not None:
                return LogObject(model_id, run, f"{folder}/{name}", gzip, info)
        await self.store.confirm_root()  # no object is a purge only where the store works
        if run.status in _NOT_TERMINAL:
            raise LogsNotReady()
        raise LogsPurged()

    async def _explicit_run(self, model_id: str, run_id: str) -> Run | None:
        # The model's listing, if one may be served, knows the run; a run created since it
        # was made is not in it, and is read on its own (as is any run of an unlisted model).
        listed = self._runs.cached(model_id, self._runs_loader(model_id), self._group)
        if listed is not None and run_id in listed[0].seen:
            return listed[0].seen[run_id][1]
        return await self._run.get(
            (model_id, run_id), lambda _: self._load_run(model_id, run_id), self._group
        )

    def _runs_loader(self, model_id: str) -> Callable[[_Listing | None], Awaitable[_Listing]]:
        return lambda previous: self._load_runs(model_id, previous)

    async def _load_model(self, model_id: str) -> str | None:
        try:
            return _parse_model(
                model_id, await self.store.read_bytes(f"models/{model_id}/model.json")
            )
        except _ABSENT:
            return None
        except _Malformed as exc:
            logger.warning("model %s: model.json ignored: %s", model_id, exc)
            return None

    async def _load_run(self, model_id: str, run_id: str) -> Run | None:
        key = f"models/{model_id}/runs/{run_id}/run.json"
        try:
            return _parse_run(run_id, await self.store.read_bytes(key))
        except _ABSENT:
            return None
        except _Malformed as exc:
            logger.warning("model %s run %s: run.json ignored: %s", model_id, run_id, exc)
            return None

    async def _load_runs(self, model_id: str, previous: _Listing | None) -> _Listing:
        """One listing of the model's runs/ tree with versions; only the run.json files that
        are new or whose version changed (or is unknown) are read, in parallel."""
        prefix = f"models/{model_id}/runs/"
        versions: dict[str, str | None] = {}
        for key, version in (await self.store.list_versions(prefix)).items():
            run_id, _, name = key.removeprefix(prefix).partition("/")
            if name == "run.json" and valid_run_id(run_id):
                versions[run_id] = version
        known = previous.seen if previous is not None else {}
        seen = {
            run_id: known[run_id]
            for run_id, version in versions.items()
            if version is not None and run_id in known and known[run_id][0] == version
        }
        pending = iter([run_id for run_id in versions if run_id not in seen])
        failures: list[Exception] = []

        async def worker() -> None:
            for run_id in pending:
                try:
                    seen[run_id] = (versions[run_id], await self._load_run(model_id, run_id))
                except Exception as exc:
                    # Re-raised bare below rather than as an ExceptionGroup.
                    failures.append(exc)
                    group.cancel_scope.cancel()
                    return

        async with anyio.create_task_group() as group:
            for _ in range(min(_READ_CONCURRENCY, len(versions) - len(seen))):
                group.start_soon(worker)
        if failures:
            raise failures[0]
        return _Listing.of(seen)
