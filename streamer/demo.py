"""A demo store: two organizations, runs in every retention state, one log of ~50 MB."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ORG = "org-acme"
OTHER_ORG = "org-globex"
MODEL = "mdl-churn"
LATEST_RUN = "run-20260313-a4b9c2"

_LEVELS = ["INFO"] * 12 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
_MESSAGES = [
    "Epoch {e}/50 - Loss: {a:.4f} - Val_Loss: {b:.4f}",
    "Step {s} - lr: {a:.6f} - grad_norm: {b:.3f}",
    "Gradient clipping triggered on layer 'dense_{e}'.",
    'Checkpoint saved to "s3://ckpt/{s}.pt" (size {s} KiB)',
    "Worker rank {e} heartbeat OK - GPU util {a:.1%}",
    "Données chargées : lot {s} ✓",
    "Successfully loaded dataset: 'churn_data_v2'. Shape: (100000, 45)",
]


def training_log(size: int, seed: int = 7, start: datetime | None = None) -> bytes:
    """A deterministic training log of about `size` bytes."""
    # bandit B311 (weak random): it makes up the demo log's figures, no secret.
    rng = random.Random(seed)  # nosec B311
    clock = start or datetime(2026, 3, 13, 10, 0, tzinfo=UTC)
    lines: list[str] = []
    total = 0
    step = 0
    while total < size:
        step += 1
        clock += timedelta(milliseconds=rng.randint(1, 900))
        stamp = clock.strftime("%Y-%m-%dT%H:%M:%S.") + f"{clock.microsecond // 1000:03d}Z"
        message = rng.choice(_MESSAGES).format(
            e=step % 50 + 1, s=step, a=rng.random(), b=rng.random()
        )
        line = f"{stamp} [{rng.choice(_LEVELS)}] {message}"
        if step % 5000 == 0:
            line += '\nTraceback (most recent call last):\n  File "train.py", line 42\n'
            line += "RuntimeError: CUDA out of memory (retrying)"
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def instructions(root: Path, token: str, base: str) -> str:
    """What `streamer demo` prints: a token to export once, then commands that use it."""
    api = "$BASE/api/v1/models"
    get = 'curl -sS -H "Authorization: Bearer $TOKEN"'
    download = f"{api}/{MODEL}/training-metrics/logs/download"
    return f"""
streamer demo: serving {root} on {base}
Paste these two lines into a shell (a token for alice, org {ORG}, model:read, 24 h):

  export TOKEN={token}
  export BASE={base}

Then any of:

  # the latest completed run, raw (about 50 MB), saved as training-log-{LATEST_RUN}.txt
  {get} -OJ "{download}"
  # the same run as JSON
  {get} -OJ "{download}?format=json"
  # Get Logs: the last 20 lines of that run, as a JSON page
  {get} "{api}/{MODEL}/training-metrics/logs?limit=20"
  # a gzip-stored run, by id, through the legacy alias
  {get} "{api}/{MODEL}/training/metrics/logs/download?run_id=run-20260310-gz0001"
  # errors: expired (404 logs_expired), purged (404 logs_purged), other tenant (404)
  {get} "{download}?run_id=run-20260301-old001"
  {get} "{download}?run_id=run-20260305-purged"
  {get} "{api}/mdl-fraud/training-metrics/logs/download"
"""


def _write_json(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def _run(
    model: Path,
    run_id: str,
    status: str,
    completed: str | None,
    expires: str | None = None,
    log: bytes | None = None,
    gz: bool = False,
) -> None:
    folder = model / "runs" / run_id
    _write_json(
        folder / "run.json",
        {
            "run_id": run_id,
            "status": status,
            "created_at": "2026-03-01T09:00:00Z",
            "completed_at": completed,
            "logs_expire_at": expires,
        },
    )
    if log is not None:
        if gz:
            (folder / "training.log.gz").write_bytes(gzip.compress(log, 6))
        else:
            (folder / "training.log").write_bytes(log)


def seed(root: Path, big_log_bytes: int = 50 * 1024 * 1024) -> None:
    """Write the demo store under `root` (idempotent: an existing store is kept)."""
    marker = root / ".seeded"
    if marker.exists():
        return
    churn = root / "models" / MODEL
    _write_json(churn / "model.json", {"model_id": MODEL, "organization_id": ORG})
    small = training_log(4096, seed=1)
    _run(churn, LATEST_RUN, "completed", "2026-03-13T11:02:00Z", log=training_log(big_log_bytes))
    _run(churn, "run-20260310-gz0001", "completed", "2026-03-10T12:00:00Z", log=small, gz=True)
    _run(
        churn,
        "run-20260301-old001",
        "completed",
        "2026-03-01T12:00:00Z",
        "2026-03-31T00:00:00Z",
        small,
    )
    _run(churn, "run-20260305-purged", "completed", "2026-03-05T12:00:00Z")
    _run(churn, "run-20260314-live01", "running", None, log=small)

    empty = root / "models" / "mdl-empty"
    _write_json(empty / "model.json", {"model_id": "mdl-empty", "organization_id": ORG})
    _run(empty, "run-20260313-queued", "queued", None)

    expired = root / "models" / "mdl-expired"
    _write_json(expired / "model.json", {"model_id": "mdl-expired", "organization_id": ORG})
    _run(
        expired,
        "run-20250101-aaaa01",
        "completed",
        "2025-01-01T00:00:00Z",
        "2025-02-01T00:00:00Z",
        small,
    )

    fraud = root / "models" / "mdl-fraud"
    _write_json(fraud / "model.json", {"model_id": "mdl-fraud", "organization_id": OTHER_ORG})
    _run(fraud, "run-20260313-f00001", "completed", "2026-03-13T11:00:00Z", log=small)
    marker.write_text("seeded\n")
