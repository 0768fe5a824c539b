"""The model the parallel-read tests share on S3 and GCS, its fixtures and checks."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator

import pytest

from streamer.demo import training_log
from streamer.storage import Store
from testkit.emulators import ENDPOINTS
from testkit.faulty import (
    Faulty,
    faulty,
    seed,
)

MiB = 1024 * 1024


LOG = training_log(6 * MiB + 1)  # six parts and a 1-byte one

GZ_LOG = training_log(4 * MiB, seed=5)

GZ_STORED = gzip.compress(GZ_LOG, compresslevel=0, mtime=0)  # stored blocks: 4 parts

KEY = "models/mdl-parts/runs/run-p1/training.log"

GZ_KEY = "models/mdl-parts/runs/run-pgz/training.log.gz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", params=["s3", "gs", "az"])
def seeded(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    kind: str = request.param
    endpoint: str = request.getfixturevalue(ENDPOINTS[kind])
    logs = {"run-p1": ("training.log", LOG), "run-pgz": ("training.log.gz", GZ_STORED)}
    return kind, endpoint, seed(kind, "parts", "mdl-parts", logs)


def small_parts(store: Store) -> Store:
    store.part_size, store.parallel_min, store.grow_after = MiB, 2 * MiB, MiB
    return store


@pytest.fixture
def proxied(seeded: tuple[str, str, str]) -> Iterator[Faulty]:
    with faulty(*seeded) as proxied:
        yield proxied
