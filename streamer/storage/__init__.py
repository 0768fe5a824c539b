"""The object store, one module per concern: `store` (the `Store`: one backend and the read
strategy), `backend` (the protocol every backend keeps), `local`, `memory`, `s3` and `gcs`
(one per backend), `readers` (the reader protocol and shared readers), `listing` (remote
listings off the event loop), `flights` (shared lookups), `retry` (resuming reads after
transient faults) and `parallel` (large reads as concurrent ranged GETs, handed out in
order)."""

from __future__ import annotations

from .backend import Backend, StoreUnreachable
from .cached import CachedReader, RangedLog
from .flights import Flights
from .parallel import ParallelReader, ReadAhead
from .readers import GzipReader, ObjectInfo, ObjectReader
from .retry import ObjectChanged, RetryingReader
from .store import Reading, Store

__all__ = [
    "Backend",
    "CachedReader",
    "Flights",
    "GzipReader",
    "ObjectChanged",
    "ObjectInfo",
    "ObjectReader",
    "ParallelReader",
    "RangedLog",
    "ReadAhead",
    "Reading",
    "RetryingReader",
    "Store",
    "StoreUnreachable",
]
