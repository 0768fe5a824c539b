"""Prometheus metrics, correct with one process or several uvicorn workers.

prometheus-client picks its storage when it is imported: with `PROMETHEUS_MULTIPROC_DIR`
set, every value lives in a per-process file in that folder and a scrape sums the files of
all workers. `serve` sets the folder up (fresh and empty) before uvicorn starts workers
with more than one; one process keeps its values in memory. Live gauges use
`multiprocess_mode="livesum"`, so a worker that has gone stops counting once it is marked
dead: at a clean shutdown by itself, after a crash by the next scrape.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import MutableMapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise here
REGISTRY = CollectorRegistry(auto_describe=True)
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
if not MULTIPROCESS:
    ProcessCollector(registry=REGISTRY)

REQUESTS = Counter(
    "streamer_requests",
    "HTTP requests answered, by route template, status and format.",
    ["route", "status", "format"],
    registry=REGISTRY,
)
BYTES_SENT = Counter(
    "streamer_bytes_sent", "Response body bytes sent to clients.", registry=REGISTRY
)
ACTIVE_STREAMS = Gauge(
    "streamer_active_streams",
    "Downloads whose response has started and not yet ended.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
TTFB = Histogram(
    "streamer_ttfb_seconds",
    "Time from request to the first body byte of a download.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
STREAM_DURATION = Histogram(
    "streamer_stream_duration_seconds",
    "Time from request to the end of a download, whatever its outcome.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "streamer_upstream_errors",
    "Store failures seen by requests: 502 answers and downloads aborted mid-stream.",
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "streamer_upstream_retries",
    "Reads of log objects reopened after a transient store fault.",
    registry=REGISTRY,
)
CATALOG_REFRESH_FAILURES = Counter(
    "streamer_catalog_refresh_failures",
    "Background refreshes of catalog metadata that failed (what was loaded before is kept).",
    registry=REGISTRY,
)
CLIENT_DISCONNECTS = Counter(
    "streamer_client_disconnects",
    "Downloads the client left before their end.",
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The Prometheus text of this process, or of every worker in multiprocess mode."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    mark_dead_workers()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def mark_dead_workers(path: str | None = None) -> None:
    """Drop the live gauges of workers that no longer run (crashed, or killed)."""
    folder = path or os.environ.get(MULTIPROC_ENV)
    if not folder:
        return
    pids = set()
    for name in glob.glob(os.path.join(folder, "gauge_live*.db")):
        match = _LIVE_FILE.fullmatch(os.path.basename(name))
        if match:
            pids.add(int(match[1]))
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


def mark_this_worker_dead() -> None:
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiproc_dir(environ: MutableMapping[str, str]) -> str | None:
    """For `serve` with several workers: an empty metrics folder in `environ`.

    An operator's `PROMETHEUS_MULTIPROC_DIR` is emptied (files of an earlier run would be
    summed in); otherwise a fresh temporary folder is made. Returns the folder `serve`
    should remove at exit, if it made one.
    """
    folder = environ.get(MULTIPROC_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in glob.glob(os.path.join(folder, "*.db")):
            os.remove(name)
        return None
    folder = tempfile.mkdtemp(prefix="streamer-metrics-")
    environ[MULTIPROC_ENV] = folder
    return folder


def remove_multiproc_dir(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


# Live follow (streamer.follow).
FOLLOWERS_ACTIVE = Gauge(
    "streamer_followers_active",
    "Downloads following a log that is still being written.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
FOLLOW_BYTES = Counter(
    "streamer_follow_bytes",
    "Log bytes that follows passed on (before any encoding).",
    registry=REGISTRY,
)
FOLLOW_POLLS = Counter(
    "streamer_follow_polls",
    "Polls of followed logs: one metadata read of the store each, shared by the followers.",
    registry=REGISTRY,
)
