"""The C allocator's settings for a process that streams megabyte-sized chunks.

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
