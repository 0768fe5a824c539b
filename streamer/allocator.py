"""Memory settings of a long-running process that streams megabyte-sized chunks: the C
allocator's thresholds, and the garbage collector's view of what start-up loaded.

Every chunk the pump moves is a fresh `bytes` of about `STREAMER_CHUNK_SIZE` (and 1.5
times that for JSON). glibc serves blocks above its mmap threshold with a fresh mmap,
and moves that threshold as blocks come and go; chunk-sized blocks then fall on either
side of it, so many chunks cost a new mapping whose every page faults on first touch.
Measured (bench, json, 1 MiB chunks): 2.3x the CPU per GiB, half the throughput. Fixing
the threshold above any chunk, and the trim threshold above the memory of a few
chunks, lets freed chunks be reused from the heap instead.

Linux with glibc only; elsewhere (musl has no `mallopt`) nothing changes.
"""

from __future__ import annotations

import ctypes
import gc
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above 32 MiB on 64-bit machines.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds; True when they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive into the garbage collector's permanent
    generation (`gc.freeze`); the number moved.

    What start-up loads (modules, botocore's service models, settings, keys) lives as long
    as the process, yet each full collection traverses it again, and a collection stops
    every thread, the event loop too: a started S3 server holds about 130,000 such objects,
    whose full collection took 120 to 270 ms on the benchmark machine
    (docs/design.md#the-garbage-collector). Frozen, a collection sees only what requests
    create.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
