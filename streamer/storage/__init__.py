"""The object store, one module per concern: `store` (the `Store` and its root), `readers`
(the reader protocol and shared readers), `local`, `s3` and `gcs` (one per backend) and
`retry` (resuming reads after transient faults)."""

from __future__ import annotations

from .readers import GzipReader, ObjectInfo, ObjectReader
from .retry import ObjectChanged, RetryingReader
from .store import Store, StoreUnreachable, open_ranged

__all__ = [
    "GzipReader",
    "ObjectChanged",
    "ObjectInfo",
    "ObjectReader",
    "RetryingReader",
    "Store",
    "StoreUnreachable",
    "open_ranged",
]
