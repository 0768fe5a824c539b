"""The `streamer` command: serve, token, demo.

`serve` checks its settings, keys and store, then the address, before uvicorn starts, and
refuses to start (one line on stderr, exit 2) when any of them is wrong. Everything it
logs on stderr is one JSON object a line: uvicorn's messages as well as the access log.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import math
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .auth import MIN_SECRET_BYTES, Authenticator, issue_token
from .budget import BudgetTooSmall, plan_process, resident_bytes
from .config import ENV_PREFIX, ConfigError, Settings, add_arguments, load_settings
from .cursors import random_key
from .storage import Store, StoreUnreachable

EXIT_CONFIG = 2


def _fail(reason: str) -> int:
    print(f"streamer: {reason}", file=sys.stderr)
    return EXIT_CONFIG


def _check_listen(host: str, port: int) -> None:
    """ConfigError unless this machine can listen on host:port, before uvicorn tries."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"STREAMER_HOST {host!r} is not an address: {exc.strerror}") from None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _preflight(settings: Settings) -> None:
    """Everything `serve` refuses to start without: keys loaded, the store reachable, a
    memory limit that holds the idle process and one stream, an address to listen on. The
    address comes last, so that a wrong key or store is reported as such even while
    another process holds the port."""
    auth = Authenticator(settings)
    await auth.start()
    store = Store.from_url(settings.storage_url)
    try:
        await store.ping()
        from . import app  # noqa: F401  (a worker's modules: its idle RSS, near enough)

        # With several workers this process is their supervisor, about this size.
        supervisor = resident_bytes() if settings.workers > 1 else 0
        plan_process(settings, store.backend.parallel, supervisor)
    finally:
        await store.aclose()
    _check_listen(settings.host, settings.port)


class JsonLines(logging.Formatter):
    """A log record as one JSON object on one line, with the access log's `time` and
    `worker`; `level` leads, which tells these lines from the access log's."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "level": record.levelname,
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "logger": record.name,
            "message": record.getMessage(),
            "worker": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def log_config() -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers and streamer's write JSON lines to stderr; the
    access log (already JSON, written by streamer.observe) goes out as it is."""
    json_out = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonLines"},
            "as_is": {"format": "%(message)s"},
        },
        "handlers": {"json": json_out, "as_is": {**json_out, "formatter": "as_is"}},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "streamer": {"handlers": ["json"], "level": "WARNING", "propagate": False},
            "streamer.access": {"handlers": ["as_is"], "level": "INFO", "propagate": False},
        },
    }


def _serve(settings: Settings, flags: dict[str, str | None]) -> int:
    try:
        asyncio.run(_preflight(settings))
    except (ConfigError, StoreUnreachable, BudgetTooSmall) as exc:
        return _fail(str(exc))
    # Worker processes build their app from the environment: hand them the flags there.
    for name, value in flags.items():
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = value
    if settings.cursor_keys is None and settings.jwt_secret is None:
        # Workers would each draw their own; one key for all keeps cursors valid across them.
        os.environ[ENV_PREFIX + "CURSOR_KEYS"] = random_key()
    import uvicorn

    from . import metrics
    from .protocol import GuardedHttpToolsProtocol

    # Several workers share their metrics through files, in a folder made or emptied here.
    made = None
    if settings.workers > 1 or os.environ.get(metrics.MULTIPROC_ENV):
        made = metrics.prepare_multiproc_dir(os.environ)
    try:
        uvicorn.run(
            "streamer.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            access_log=False,
            log_config=log_config(),
            server_header=False,
            http=GuardedHttpToolsProtocol,
            ws="none",  # no WebSocket: the protocol refuses an upgrade with a 400 problem
            # uvicorn takes whole seconds; 0 aborts running downloads at once.
            timeout_graceful_shutdown=math.ceil(settings.grace_s),
        )
    finally:
        metrics.remove_multiproc_dir(made)
    return 0


def _token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(ENV_PREFIX + "JWT_SECRET")
    if not secret:
        return _fail("no secret: set STREAMER_JWT_SECRET or pass --secret")
    try:
        settings = load_settings(os.environ)
        token = issue_token(
            secret,
            args.sub,
            args.org,
            args.permission or ["model:read"],
            ttl_s=args.ttl,
            algorithm=args.alg,
            org_claim=settings.jwt_org_claim,
            permissions_claim=settings.jwt_permissions_claim,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    except ConfigError as exc:
        return _fail(str(exc))
    print(token)
    return 0


def demo_secret(path: Path) -> str:
    """The demo's secret, kept in `path`; made anew when missing or too short for HS512."""
    secret = path.read_text().strip() if path.exists() else ""
    if len(secret.encode()) < MIN_SECRET_BYTES["HS512"]:
        # 64 characters; hex, so that it never starts with "-" and reads as a flag when
        # pasted after `--secret`.
        secret = secrets.token_hex(32)
        path.write_text(secret)
        path.chmod(0o600)
    return secret


def _demo(args: argparse.Namespace, flags: dict[str, str | None]) -> int:
    from . import demo

    root = Path(args.dir).resolve()
    print(f"seeding demo store in {root} ...", file=sys.stderr)
    demo.seed(root)
    secret = os.environ.get(ENV_PREFIX + "JWT_SECRET")
    if not secret:
        secret = demo_secret(root / ".jwt-secret")
        os.environ[ENV_PREFIX + "JWT_SECRET"] = secret
    flags = {**flags, "storage_url": str(root)}
    try:
        settings = load_settings(os.environ, flags)
    except ConfigError as exc:
        return _fail(str(exc))
    token = issue_token(secret, "alice", demo.ORG, ["model:read"], ttl_s=86400)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(demo.instructions(root, token, f"http://{host}:{settings.port}"), flush=True)
    return _serve(settings, flags)


def _version() -> str:
    try:
        return importlib.metadata.version("streamer")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        from . import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer", description="The streamer command: serve, token, demo."
    )
    parser.add_argument("--version", action="version", version=f"streamer {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the download API")
    add_arguments(serve)
    token = commands.add_parser("token", help="print a signed development token")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--org", required=True, help="organization id")
    token.add_argument("--permission", action="append", help="repeatable; default model:read")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    token.add_argument("--alg", default="HS256", choices=["HS256", "HS384", "HS512"])
    token.add_argument("--secret", help="HMAC key (default: STREAMER_JWT_SECRET)")
    demo = commands.add_parser("demo", help="seed a demo store and serve it")
    demo.add_argument("--dir", default="var/demo", help="where to seed the store")
    add_arguments(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    flags: dict[str, str | None] = {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "dir") and value is not None
    }
    if args.command == "demo":
        return _demo(args, flags)
    try:
        settings = load_settings(os.environ, flags)
    except ConfigError as exc:
        return _fail(str(exc))
    return _serve(settings, flags)


if __name__ == "__main__":
    sys.exit(main())
