"""Deterministic, realistic training logs of any size, and the store the servers read.

What a log holds (per 64 MiB block, all from one seeded `random.Random`): INFO/DEBUG/WARN/
ERROR lines with RFC 3339 stamps in three styles, multi-line Python tracebacks (lines of
no shape), messages with quotes, backslashes, tabs and control bytes, non-ASCII text
(accents, CJK, emoji, U+2028), CRLF endings now and then, a few very long lines (a
512 KiB config dump, one 3 MiB line per block), and some invalid UTF-8.

Artifacts above one block repeat the block (its bytes, not its generation), so a 10 GiB
file costs the writing of 10 GiB and nothing more; the timestamps then repeat, which no
benchmarked code cares about.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

BLOCK = 64 << 20
MODEL = "mdl-bench"
ORG = "org-bench"

_LEVELS = ["INFO"] * 14 + ["DEBUG"] * 5 + ["WARN"] * 2 + ["ERROR"] + ["warning", "E"]
_MESSAGES = [
    "Epoch {e}/50 - Loss: {a:.4f} - Val_Loss: {b:.4f} - acc: {c:.3f}",
    "Step {s} - lr: {a:.6f} - grad_norm: {b:.3f} - tokens/s: {n}",
    "Gradient clipping triggered on layer 'dense_{e}' (norm {b:.2f} > 1.0).",
    'Checkpoint saved to "s3://ckpt/run/{s}.pt" (size {n} KiB)',
    "Worker rank {e} heartbeat OK - GPU util {a:.1%} - mem {n} MiB",
    "Loading shard C:\\data\\shards\\part-{s:05d}.parquet\tok",
    "Données chargées : lot {s} ✓ — température {a:.2f}°C",
    "データローダー: バッチ {s} を処理しました 🚀",
    'metrics={{"loss": {a:.5f}, "note": "quoted \\"inner\\" text"}}',
    "NCCL INFO Channel {e}/02 : 0[{n}] -> 1[{s}] via P2P/IPC\x1b[0m",
    "Separator\u2028inside a message, and a bell\x07",
]
_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/train.py", line {n}, in <module>',
    "    main()",
    '  File "/app/train.py", line {s}, in main',
    "    loss.backward()",
    "RuntimeError: CUDA out of memory. Tried to allocate {n} MiB (GPU 0; \\x fragmented)",
]


def _stamp(clock: datetime, style: int) -> str:
    base = clock.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 0:
        return f"{base}.{clock.microsecond // 1000:03d}Z"
    if style == 1:
        return f"{base}.{clock.microsecond:06d}+00:00"
    return base + "Z"


def generate(size: int, seed: int = 1) -> bytes:
    """About `size` bytes of log (at least one line), ending with a newline."""
    rng = random.Random(seed)
    clock = datetime(2026, 3, 13, 10, 0, tzinfo=UTC)
    lines: list[bytes] = []
    total = 0
    step = 0
    long_line_at = size // 2 if size >= 8 << 20 else -1
    while total < size:
        step += 1
        clock += timedelta(microseconds=rng.randint(1000, 900_000))
        roll = rng.random()
        if roll < 0.002:
            text = "\n".join(_TRACEBACK).format(n=rng.randint(1, 9999), s=step)
        elif roll < 0.00201:
            text = "config dump: " + ("{'layer': 'dense', \"units\": 512} " * 15000)
            text = f"{_stamp(clock, 0)} [DEBUG] {text}"
        elif roll < 0.003:
            text = f"{_stamp(clock, 0)} [WARN] bad bytes from a tokenizer: "
            lines.append(text.encode() + bytes([0xFF, 0xFE, 0xE2, 0x82]) + b" ok")
            total += len(lines[-1]) + 1
            continue
        else:
            message = rng.choice(_MESSAGES).format(
                e=step % 50 + 1,
                s=step,
                n=rng.randint(1, 99999),
                a=rng.random(),
                b=rng.random() * 3,
                c=rng.random(),
            )
            text = f"{_stamp(clock, step % 7 % 3)} [{rng.choice(_LEVELS)}] {message}"
            if roll > 0.995:
                text += "\r"
        data = text.encode()
        if total <= long_line_at < total + len(data) + 1:
            data += b" " + b"x\\y" * (1 << 20)
        lines.append(data)
        total += len(data) + 1
    return b"\n".join(lines) + b"\n"


def write_log(path: Path, size: int, seed: int = 1) -> None:
    """Write exactly `size` bytes of log to `path` (a repeated block beyond `BLOCK`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = generate(min(size, BLOCK), seed)
    if len(block) > BLOCK:
        block = block[: block.rindex(b"\n", 0, BLOCK) + 1]
    with open(path, "wb") as file:
        written = 0
        while written < size:
            piece = block[: size - written]
            file.write(piece)
            written += len(piece)
        file.truncate(size)


def run_id(size: int) -> str:
    return f"run-{size}"


def seed_store(root: Path, sizes: list[int]) -> dict[int, str]:
    """Model and runs of `sizes` under `root`; returns each artifact's key."""
    model = root / "models" / MODEL
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.json").write_bytes(orjson.dumps({"model_id": MODEL, "organization_id": ORG}))
    keys = {}
    for size in sizes:
        folder = model / "runs" / run_id(size)
        folder.mkdir(parents=True, exist_ok=True)
        run = {
            "run_id": run_id(size),
            "status": "completed",
            "created_at": "2026-03-13T10:00:00Z",
            "completed_at": "2026-03-13T11:00:00Z",
        }
        (folder / "run.json").write_bytes(orjson.dumps(run))
        log = folder / "training.log"
        if not log.exists() or log.stat().st_size != size:
            write_log(log, size)
        keys[size] = f"models/{MODEL}/runs/{run_id(size)}/training.log"
    return keys
