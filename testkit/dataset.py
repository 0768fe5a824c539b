"""The fixture store the conformance tests run against, written to any fsspec URL."""

from __future__ import annotations

import gzip
from typing import Any

import fsspec
import orjson

ORG = "org-acme"
OTHER_ORG = "org-other"

LOG_A1 = b"2026-03-13T10:00:00.123Z [INFO] Initializing distributed training cluster.\n"
LOG_A2 = (
    b"2026-03-13T10:00:00.123Z [INFO] Initializing distributed training cluster.\n"
    b"2026-03-13T10:00:05.456Z [INFO] Successfully loaded dataset: 'churn_data_v2'. "
    b"Shape: (100000, 45)\n"
    b"2026-03-13T10:01:22.789Z [INFO] Epoch 1/50 - Loss: 0.6543 - Val_Loss: 0.6121\n"
    b"2026-03-13T10:02:45.012Z [WARN] Gradient clipping triggered on layer 'dense_2'.\n"
    b"\n"
    b"Traceback (most recent call last):\r\n"
    b'  File "train.py", line 1, in <module> \\ "quoted" \xff\xfe caf\xc3\xa9\r\n'
    b"2026-03-13T10:03:00+02:00 [ERROR]"
)
LOG_RUNNING = b"2026-03-13T12:00:00Z [DEBUG] still running\n"
LOG_GZ = b"2026-03-10T10:00:00Z [INFO] from a gzip object\n" * 1000

# (model, run_id) -> (run.json fields, log bytes or None, stored as gzip)
RUNS: dict[tuple[str, str], tuple[dict[str, Any], bytes | None, bool]] = {
    ("mdl-alpha", "run-a1"): (
        {"status": "completed", "completed_at": "2026-03-12T11:00:00Z"},
        LOG_A1,
        False,
    ),
    ("mdl-alpha", "run-a2"): (
        {"status": "completed", "completed_at": "2026-03-13T11:02:00Z"},
        LOG_A2,
        False,
    ),
    ("mdl-alpha", "run-live"): ({"status": "running", "completed_at": None}, LOG_RUNNING, False),
    ("mdl-alpha", "run-queued"): ({"status": "queued"}, None, False),
    ("mdl-alpha", "run-expired"): (
        {
            "status": "completed",
            "completed_at": "2026-01-01T00:00:00Z",
            "logs_expire_at": "2026-02-01T00:00:00Z",
        },
        LOG_A1,
        False,
    ),
    ("mdl-alpha", "run-purged"): (
        {"status": "completed", "completed_at": "2026-01-02T00:00:00Z"},
        None,
        False,
    ),
    ("mdl-alpha", "run-gz"): (
        {"status": "completed", "completed_at": "2026-03-10T00:00:00Z"},
        LOG_GZ,
        True,
    ),
    ("mdl-alpha", "run-empty"): (
        {"status": "completed", "completed_at": "2026-03-09T00:00:00Z"},
        b"",
        False,
    ),
    ("mdl-pending", "run-p1"): ({"status": "running"}, LOG_RUNNING, False),
    ("mdl-defexp", "run-e1"): (
        {
            "status": "completed",
            "completed_at": "2026-03-13T00:00:00Z",
            "logs_expire_at": "2026-03-14T00:00:00Z",
        },
        LOG_A1,
        False,
    ),
    ("mdl-defexp", "run-e0"): (
        {"status": "completed", "completed_at": "2026-03-01T00:00:00Z"},
        LOG_A1,
        False,
    ),
    ("mdl-defpurged", "run-d1"): (
        {"status": "completed", "completed_at": "2026-03-13T00:00:00Z"},
        None,
        False,
    ),
    ("mdl-beta", "run-b1"): (
        {"status": "completed", "completed_at": "2026-03-13T00:00:00Z"},
        LOG_A1,
        False,
    ),
}
MODELS = {
    "mdl-alpha": ORG,
    "mdl-pending": ORG,
    "mdl-defexp": ORG,
    "mdl-defpurged": ORG,
    "mdl-beta": OTHER_ORG,
}


def put(root: str, key: str, data: bytes, /, **storage_options: Any) -> None:
    with fsspec.open(f"{root.rstrip('/')}/{key}", "wb", **storage_options) as file:
        file.write(data)


def put_run(
    root: str,
    model_id: str,
    run_id: str,
    log: bytes,
    *,
    completed_at: str = "2026-03-13T11:00:00Z",
    **storage_options: Any,
) -> None:
    """One model of ORG with one completed run and its log, below `root`."""
    model = {"model_id": model_id, "organization_id": ORG}
    put(root, f"models/{model_id}/model.json", orjson.dumps(model), **storage_options)
    run = {"run_id": run_id, "status": "completed", "completed_at": completed_at}
    folder = f"models/{model_id}/runs/{run_id}"
    put(root, f"{folder}/run.json", orjson.dumps(run), **storage_options)
    put(root, f"{folder}/training.log", log, **storage_options)


def seed(root: str, /, **storage_options: Any) -> None:
    """Write the fixture store below `root` (a path or an fsspec URL)."""
    for model_id, org in MODELS.items():
        document = {"model_id": model_id, "organization_id": org, "name": model_id}
        put(root, f"models/{model_id}/model.json", orjson.dumps(document), **storage_options)
    for (model_id, run_id), (fields, log, gz) in RUNS.items():
        folder = f"models/{model_id}/runs/{run_id}"
        document = {"run_id": run_id, "created_at": "2026-01-01T00:00:00Z", **fields}
        put(root, f"{folder}/run.json", orjson.dumps(document), **storage_options)
        if log is not None:
            name, data = ("training.log.gz", gzip.compress(log)) if gz else ("training.log", log)
            put(root, f"{folder}/{name}", data, **storage_options)


def big_log(lines: int) -> bytes:
    """A well-formed log of `lines` lines (about 45 bytes each), the same on every call."""
    return b"".join(
        b"2026-03-13T10:%02d:%02d.000Z [INFO] step %07d loss=0.%04d\n"
        % (i // 60 % 60, i % 60, i, i % 9973)
        for i in range(lines)
    )
