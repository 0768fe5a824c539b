"""The Kubernetes manifests' memory limits follow docs/sizing.md's formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.budget import MARGIN, plan, process_limit, stream_bytes
from testkit.deploy import KUBERNETES, KUSTOMIZATIONS, Doc, env_of, load, pod_specs, render

MiB = 1024 * 1024
# docs/sizing.md: idle RSS per store (bench.memory), and the costliest stream's reservation
# at the default chunks (json, inflating a gzip log, compressing the response), rounded up.
IDLE_MIB = {"file": 53, "s3": 96, "gs": 90}
STREAM_MIB = 8
SUPERVISOR_MIB = 50  # uvicorn's supervisor of several workers
FOLDERS = [*KUSTOMIZATIONS, KUBERNETES / "sidecar"]


def docs_of(folder: Path) -> list[Doc]:
    if (folder / "kustomization.yaml").exists():
        return render(folder)
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in load(path)]


def test_the_costliest_stream_fits_its_share() -> None:
    worst = stream_bytes(MiB, 4, encode=True, deflate=True, inflate=True)
    assert worst <= STREAM_MIB * MiB < worst + MiB


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_memory_limits_follow_the_sizing_formula(folder: Path) -> None:
    docs = docs_of(folder)
    for spec in pod_specs(docs):
        (streamer,) = [c for c in spec["containers"] if "streamer" in c["image"]]
        env = env_of(streamer, docs)
        assert "STREAMER_MEMORY_LIMIT" not in env  # the container's limit is the budget
        kind = env["STREAMER_STORAGE_URL"].partition("://")[0]
        ahead = int(env.get("STREAMER_READAHEAD_BYTES", 256 * MiB)) if kind != "file" else 0
        streams, workers = int(env["STREAMER_MAX_STREAMS"]), int(env["STREAMER_WORKERS"])
        limit = streamer["resources"]["limits"]["memory"]
        assert limit.endswith("Mi")
        supervisor = SUPERVISOR_MIB * MiB if workers > 1 else 0
        per_worker = process_limit(int(limit[:-2]) * MiB, workers, supervisor) or 0
        idle = IDLE_MIB[kind] * MiB
        assert per_worker >= idle + MARGIN + ahead + streams * STREAM_MIB * MiB
        # The budget planned from that limit holds the read-ahead asked for and every stream.
        planned = plan(per_worker, idle, ahead, stream_bytes(MiB, 4))
        assert planned.read_ahead == ahead
        assert planned.requests is not None and planned.requests >= streams * STREAM_MIB * MiB
