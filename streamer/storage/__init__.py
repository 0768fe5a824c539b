"""The object store, one module per concern: `store` (the `Store` and its root), `readers`
(the reader protocol and shared readers), `local`, `s3` and `gcs` (one per backend),
`retry` (resuming reads after transient faults) and `parallel` (large reads as concurrent
ranged GETs, handed out in order)."""

from __future__ import annotations

from .cached import CachedReader, Ranged
from .parallel import ParallelReader, ReadAhead
from .readers import GzipReader, ObjectInfo, ObjectReader
from .retry import ObjectChanged, RetryingReader
from .store import Store, StoreUnreachable, open_ranged

__all__ = [
    "CachedReader",
    "GzipReader",
    "ObjectChanged",
    "ObjectInfo",
    "ObjectReader",
    "ParallelReader",
    "Ranged",
    "ReadAhead",
    "RetryingReader",
    "Store",
    "StoreUnreachable",
    "open_ranged",
]
