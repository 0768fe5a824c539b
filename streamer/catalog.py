"""The catalog: which model, which run, and whether its log can still be served.

`Catalog.resolve` is check 4 of the contract: it turns a model id, the caller's organization
and an optional run id into the `LogObject` to stream, or raises one of the 404 errors.
Metadata (model.json, run.json) is cached per process for `ttl_s` seconds; the existence of
the log object is checked on every call so that a purge is seen at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Generic, Literal, TypeVar, cast, get_args

import anyio
import orjson

from streamer.errors import LogsExpired, LogsPurged, ModelNotFound, NoCompletedRun, RunNotFound
from streamer.storage import ObjectInfo, Store

MODEL_ID = re.compile(r"mdl-[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
RUN_ID = re.compile(r"run-[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
# RFC 3339 only: datetime.fromisoformat alone also takes "2026-03-13" and week dates.
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)
_NEVER = datetime.min.replace(tzinfo=UTC)
_READ_CONCURRENCY = 64
_CACHE_ENTRIES = 10_000
# A key the store cannot read counts as absent; S3 answers 403 for a missing key when the
# role may not list the bucket. Any other failure is an outage and propagates.
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)

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
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Malformed("a time is not an RFC 3339 string")
    *parts, fraction, sign, off_h, off_m = match.groups()
    year, month, day, hour, minute, second = map(int, parts)
    tz: timezone = UTC
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise _Malformed("a time has an impossible offset")
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    micros = int((fraction or "")[:6].ljust(6, "0"))
    try:
        # RFC 3339 allows a leap second (:60); datetime does not.
        return datetime(year, month, day, hour, minute, min(second, 59), micros, tz)
    except ValueError:
        raise _Malformed("a time is not a calendar date") from None


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


def _default_run(runs: dict[str, Run]) -> Run | None:
    """The completed run with the latest completed_at; ties go to the greatest run_id."""
    completed = [run for run in runs.values() if run.status == "completed"]
    if not completed:
        return None
    return max(completed, key=lambda r: (r.completed_at or _NEVER, r.run_id))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Shared(Generic[K, V]):
    """A TTL cache whose concurrent misses on one key share a single load."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl_s, self._clock = ttl_s, clock
        self._values: dict[K, tuple[float, V]] = {}
        self._flights: dict[K, tuple[anyio.Event, list[V]]] = {}

    def peek(self, key: K) -> tuple[V] | None:
        entry = self._values.get(key)
        if entry is not None and self._clock() < entry[0]:
            return (entry[1],)
        return None

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        while (flight := self._flights.get(key)) is not None:
            await flight[0].wait()
            if flight[1]:
                return flight[1][0]
            # The leader failed or was cancelled: try again, maybe as the leader.
        if (hit := self.peek(key)) is not None:
            return hit[0]
        done, result = anyio.Event(), cast(list[V], [])
        self._flights[key] = (done, result)
        try:
            result.append(await load())
        finally:
            del self._flights[key]
            done.set()
        if self._ttl_s > 0:
            self._values.pop(key, None)
            if len(self._values) >= _CACHE_ENTRIES:
                del self._values[next(iter(self._values))]
            self._values[key] = (self._clock() + self._ttl_s, result[0])
        return result[0]


class Catalog:
    """Resolves download requests against the store's models/ tree."""

    def __init__(
        self, store: Store, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._models: _Shared[str, str | None] = _Shared(ttl_s, clock)
        self._runs: _Shared[str, dict[str, Run]] = _Shared(ttl_s, clock)
        self._run: _Shared[tuple[str, str], Run | None] = _Shared(ttl_s, clock)

    async def resolve(
        self, model_id: str, organization: str, run_id: str | None, now: datetime | None = None
    ) -> LogObject:
        """The log object of `run_id` (or of the default run) of a model of `organization`.

        Raises ModelNotFound, RunNotFound, NoCompletedRun, LogsExpired or LogsPurged, in the
        order of check 4; `now` (default: the current time; naive means UTC) decides expiry.
        Store failures other than a missing or forbidden key propagate unchanged.
        """
        if not valid_model_id(model_id):
            raise ModelNotFound()
        owner = await self._models.get(model_id, lambda: self._load_model(model_id))
        if owner != organization:
            raise ModelNotFound()
        if run_id is not None:
            if not valid_run_id(run_id):
                raise RunNotFound()
            run = await self._explicit_run(model_id, run_id)
            if run is None:
                raise RunNotFound()
        else:
            runs = await self._runs.get(model_id, lambda: self._load_runs(model_id))
            run = _default_run(runs)
            if run is None:
                raise NoCompletedRun()
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        if run.logs_expire_at is not None and run.logs_expire_at < now:
            raise LogsExpired()
        folder = f"models/{model_id}/runs/{run.run_id}"
        for name, gzip in (("training.log", False), ("training.log.gz", True)):
            info = await self.store.info(f"{folder}/{name}")
            if info is not None:
                return LogObject(model_id, run, f"{folder}/{name}", gzip, info)
        raise LogsPurged()

    async def _explicit_run(self, model_id: str, run_id: str) -> Run | None:
        listed = self._runs.peek(model_id)
        if listed is not None:
            return listed[0].get(run_id)
        return await self._run.get((model_id, run_id), lambda: self._load_run(model_id, run_id))

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

    async def _load_runs(self, model_id: str) -> dict[str, Run]:
        names = [n for n in await self.store.list_dir(f"models/{model_id}/runs") if valid_run_id(n)]
        pending = iter(names)
        runs: dict[str, Run] = {}
        failures: list[Exception] = []

        async def worker() -> None:
            for run_id in pending:
                try:
                    run = await self._load_run(model_id, run_id)
                except Exception as exc:
                    # Re-raised bare below rather than as an ExceptionGroup.
                    failures.append(exc)
                    group.cancel_scope.cancel()
                    return
                if run is not None:
                    runs[run_id] = run

        async with anyio.create_task_group() as group:
            for _ in range(min(_READ_CONCURRENCY, len(names))):
                group.start_soon(worker)
        if failures:
            raise failures[0]
        return runs
