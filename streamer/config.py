"""Settings: every one an environment variable `STREAMER_X` and a `serve` flag `--x`.

A flag wins over the variable; a malformed value raises `ConfigError` with a one-line
reason, which `serve` prints before exiting with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "STREAMER_"


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a non-negative number")
    return value


def _algorithms(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("must list at least one algorithm")
    if any(name.lower() == "none" for name in names):
        raise ValueError("'none' is never accepted")
    return names


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of: 1, true, yes, on, 0, false, no, off")


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _keys(text: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in text.split(","))
    if not keys or any(len(key) < 16 for key in keys):
        raise ValueError("must be comma-separated keys of at least 16 characters each")
    return keys


_SUFFIXES = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_SUFFIXES |= {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def _bytes(text: str) -> int:
    """A byte count, plain or with a Kubernetes suffix (`512Mi`, `1Gi`, `500M`)."""
    match = re.fullmatch(r"([0-9]+)([kKmMgGtT]i?)?", text.strip())
    if match is None:
        raise ValueError("must be a byte count, optionally with a suffix such as Mi or Gi")
    value = int(match[1]) * _SUFFIXES[(match[2] or "").lower()]
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip() for origin in text.split(",") if origin.strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError("must be comma-separated origins such as https://panel.example")
    return origins


def _setting(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", _text, "listen address")
    port: int = _setting(8080, _port, "listen port")
    workers: int = _setting(1, _positive_int, "uvicorn worker processes")
    storage_url: str = _setting(
        "./var/store", _text, "store root: path, file://, memory://, s3://bucket/prefix, gs://..."
    )
    jwt_secret: str | None = _setting(None, _text, "HMAC key for HS256/384/512 tokens")
    jwt_public_key_file: str | None = _setting(None, _text, "PEM public key file")
    jwks_url: str | None = _setting(None, _text, "JWKS document: http(s) URL or file path")
    jwt_algorithms: tuple[str, ...] | None = _setting(
        None, _algorithms, "comma-separated allow-list of JWT algorithms"
    )
    jwt_issuer: str | None = _setting(None, _text, "required iss claim")
    jwt_audience: str | None = _setting(None, _text, "required aud claim")
    jwt_leeway_s: float = _setting(30.0, _non_negative_float, "clock skew allowed, seconds")
    jwt_org_claim: str = _setting("org_id", _text, "claim holding the caller's organization")
    jwt_permissions_claim: str = _setting(
        "permissions", _text, "claim holding the caller's permission list"
    )
    # Chosen by bench (docs/design.md#chunk-size-and-buffer): 1 MiB is where txt
    # throughput stops growing (256 KiB costs a third), and 4 chunks in flight (one queued
    # read-ahead) hold 256 slow streams within 1 GiB.
    chunk_size: int = _setting(1024 * 1024, _positive_int, "bytes per storage read")
    buffer_chunks: int = _setting(
        4,
        _positive_int,
        "chunks in flight per stream, read-ahead included (below 3, reads shrink to fit)",
    )
    # docs/design.md#parts-their-growth-and-the-read-ahead-ceiling: one download at full
    # speed holds up to 15 parts of 8 MiB ahead (120 MiB); 256 MiB lets two do that at
    # once. Slow clients use none.
    readahead_bytes: int = _setting(
        256 * 1024 * 1024,
        _positive_int,
        "bytes read ahead by parallel ranged reads, all downloads of a process together",
    )
    catalog_ttl_s: float = _setting(5.0, _non_negative_float, "run metadata cache TTL, seconds")
    max_streams: int = _setting(256, _positive_int, "concurrent downloads per process")
    drain_delay_s: float = _setting(0.0, _non_negative_float, "serve on after SIGTERM, seconds")
    grace_s: float = _setting(30.0, _non_negative_float, "time running downloads get to finish")
    gzip: bool = _setting(False, _bool, "gzip responses on the fly for clients that accept it")
    # The process's one memory budget (docs/operations.md); None: the cgroup limit, if any.
    memory_limit: int | None = _setting(
        None, _bytes, "memory budget in bytes or with Mi/Gi (default: the cgroup's limit)"
    )
    scan_slots: int = _setting(
        4, _positive_int, "Get Logs pages that scan or inflate at once; beyond, 503"
    )
    scan_disk_bytes: int | None = _setting(
        None, _bytes, "disk for inflated gzip logs (default: a tenth of the temp folder's free)"
    )
    follow_max_s: float = _setting(
        3600.0, _non_negative_float, "longest a follow stays open, seconds"
    )
    follow_poll_s: float = _setting(1.0, _non_negative_float, "follow poll interval, seconds")
    cors_origins: tuple[str, ...] = _setting(
        (), _origins, "origins allowed to call the API from a browser, comma-separated"
    )
    cursor_keys: tuple[str, ...] | None = _setting(
        None,
        _keys,
        "Get Logs cursor HMAC keys, comma-separated: the first signs, all verify"
        " (default: derived from the JWT secret)",
    )

    def env_name(self, name: str) -> str:
        return ENV_PREFIX + name.upper()

    @property
    def has_key(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key_file or self.jwks_url)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--x` flag per setting, defaulting to None so the environment can fill in."""
    for field in fields(Settings):
        # A yes/no setting is also a bare flag: `--gzip` means `--gzip true`.
        switch: dict[str, Any] = (
            {"nargs": "?", "const": "true"} if field.metadata["parse"] is _bool else {}
        )
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar=ENV_PREFIX + field.name.upper(),
            help=field.metadata["help"],
            **switch,
        )


def load_settings(
    environ: Mapping[str, str], flags: Mapping[str, str | None] | None = None
) -> Settings:
    """Build Settings from flags (first) and environment variables (second)."""
    values: dict[str, Any] = {}
    for field in fields(Settings):
        name = ENV_PREFIX + field.name.upper()
        raw = (flags or {}).get(field.name)
        source = "--" + field.name.replace("_", "-")
        if raw is None:
            raw, source = environ.get(name), name
        if raw is None:
            continue
        try:
            values[field.name] = field.metadata["parse"](raw)
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else f"invalid value {raw!r}"
            raise ConfigError(f"{source}: {reason}") from None
    return Settings(**values)
