"""The process's one memory budget: what requests may hold, and the refusal beyond it.

The rules this module keeps:
- One limit. `STREAMER_MEMORY_LIMIT`, else the container's cgroup limit (v2 `memory.max`,
  v1 `memory.limit_in_bytes`; `max` or a huge number is none), else none; what the
  supervisor of several workers leaves is shared evenly by them (`process_limit`).
- What requests may use is the limit less the idle process (its RSS once the store is
  open, `resident_bytes`) and a `MARGIN` (the allocator's waste, a collection's garbage,
  the event loop's own). Of that, the process-wide read-ahead ceiling takes at most half
  (`plan`); the rest is for reservations. A limit below the idle process, the margin and
  one stream is refused (`BudgetTooSmall`): `serve` exits 2 on it.
- Reserve before reading. A download reserves its bound (`stream_bytes`: its chunks, and
  the buffers its encoding, compressing or inflating needs) before it reads a byte; other
  work that holds memory (a Get Logs scan, an inflation buffer) reserves it through the
  same `Budget.reserve` (a handler reaches it as `slots.budget`). A reservation that
  does not fit is refused with `Overloaded` (503 with Retry-After); one that was granted
  is never taken back, so a running download never fails for memory: read-ahead, the one
  use that grows and shrinks, keeps inside its ceiling instead (`storage.parallel`).
- Without a limit every reservation is granted, and still counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import Overloaded

MiB = 1024 * 1024
MARGIN = 32 * MiB
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63
TRACKER = 16 * MiB  # multiprocessing's resource tracker beside several workers (13 MiB)
CODING_STATE = 256 * 1024  # zlib's state for one stream, either way, and its slack


class BudgetTooSmall(ValueError):
    """The memory limit leaves less than one stream beside the idle process."""


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This container's memory limit in bytes, or None when it has none."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= NO_LIMIT:
            return None
        return int(text)
    return None


def resident_bytes(pid: int | None = None) -> int:
    """The resident set size of this process (or `pid`) now; 0 where the system does not
    tell."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def stream_bytes(
    chunk_size: int,
    buffer_chunks: int,
    *,
    encode: bool = False,
    deflate: bool = False,
    inflate: bool = False,
) -> int:
    """What one download may hold: its chunks (section 4's bound), and beside them a JSON
    chunk's output (up to about twice its input, two in hand), zlib's state when it
    compresses the response, an inflated read and zlib's window when it inflates."""
    size = chunk_size * buffer_chunks
    if encode:
        size += 2 * chunk_size
    if deflate:
        size += CODING_STATE
    if inflate:
        size += chunk_size + CODING_STATE
    return size


@dataclass(frozen=True)
class Plan:
    """How a process divides its limit (None: no limit, nothing is refused)."""

    limit: int | None
    idle: int
    read_ahead: int  # the process-wide read-ahead ceiling
    requests: int | None  # what reservations may hold at once


def plan(limit: int | None, idle: int, read_ahead: int, stream: int, margin: int = MARGIN) -> Plan:
    """Divide `limit` for a process whose idle RSS is `idle`, asked for `read_ahead` bytes
    of read-ahead, whose smallest stream reserves `stream`."""
    if limit is None:
        return Plan(None, idle, read_ahead, None)
    spare = limit - idle - margin
    if spare < stream:
        need = (idle + margin + stream + MiB - 1) // MiB
        raise BudgetTooSmall(
            f"STREAMER_MEMORY_LIMIT: {limit // MiB} MiB is below the {need} MiB that the idle"
            f" process ({idle // MiB} MiB), a {margin // MiB} MiB margin and one stream need"
        )
    ahead = min(read_ahead, (spare - stream) // 2)
    return Plan(limit, idle, ahead, spare - ahead)


def process_limit(configured: int | None, workers: int = 1, supervisor: int = 0) -> int | None:
    """A worker's share of the limit (the configured one or the cgroup's): with several
    workers, what is left beside their `supervisor` (its RSS) and multiprocessing's
    resource tracker, shared evenly."""
    limit = configured if configured is not None else cgroup_limit()
    if limit is None or workers <= 1:
        return limit
    return max(0, limit - supervisor - TRACKER) // workers


def plan_process(settings: Settings, parallel: bool, supervisor: int = 0) -> Plan:
    """The plan of a worker whose store is open now, from its RSS now: its share of the
    limit, read-ahead only where the store reads in parallel parts (S3, GCS, Azure)."""
    limit = process_limit(settings.memory_limit, settings.workers, supervisor)
    ahead = settings.readahead_bytes if parallel else 0
    stream = stream_bytes(settings.chunk_size, settings.buffer_chunks)
    return plan(limit, resident_bytes(), ahead, stream)


class Budget:
    """Bytes reserved by running requests against `total` (None: no limit)."""

    def __init__(self, total: int | None = None, retry_after_s: int = 1) -> None:
        self.total, self.retry_after_s = total, retry_after_s
        self.used = 0

    @property
    def free(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.used)

    def try_reserve(self, size: int) -> bool:
        if self.total is not None and self.used + size > self.total:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold `size` bytes for the block; `Overloaded` (503, Retry-After) if they do not
        fit now."""
        if not self.try_reserve(size):
            raise Overloaded(self.retry_after_s)
        try:
            yield
        finally:
            self.release(size)
