"""The Python baselines streamer is measured against, each an ASGI app under uvicorn.

    python -m bench.baselines --port P --root DIR [--bare]

A ceiling is the least an app can do for the same answer; anything more it does is
streamer's advantage, not the server's. Without ``--bare``, one starlette app:

- ``/file/<key>``: starlette's FileResponse with 1 MiB chunks (its default is 64 KiB).
- ``/raw/<key>``: a plain ASGI callable behind starlette's router: 1 MiB blocking reads
  on the event loop, each sent as it is read, no disconnect watching. For large files
  what uvicorn itself can carry (the router's cost is per request, not per byte); for a
  small file not a ceiling, since the router and the path checks cost per request.
- ``/json/<key>``: the obvious JSON encoder, a regex and ``orjson.dumps(dict)`` per line,
  streamed with StreamingResponse from 1 MiB inline reads; its output must equal
  streamer's byte for byte, which the harness checks by hash.

With ``--bare``, the whole app is one ASGI function and no framework (``bare_app``): the
path under the root (no routing), one open and one read, one ``http.response.start``
and one ``http.response.body``; an ``If-None-Match`` that matches its ETag (size and
mtime) gets a 304 from one stat, without opening the file. The ceiling of the
request-rate cases (bench/rate.py).

uvicorn runs httptools and uvloop here, as it does for streamer, with streamer's flags
(no access log, no server header), so the server stack is the same and only the
application differs.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

CHUNK = 1 << 20
ROUTED_ASGI = "ASGI behind starlette's router, 1 MiB reads on the loop"
BARE = "bare ASGI callable: one read, one body"
BARE_304 = "bare ASGI callable, If-None-Match (304)"
# SPEC section 3, written out independently of streamer.encoders.
LINE = re.compile(
    rb"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2}))"
    rb" \[([A-Za-z]+)\](?: (.*))?",
    re.DOTALL,
)


class BigChunkFileResponse(FileResponse):
    chunk_size = CHUNK


def encode_line(number: int, line: bytes) -> bytes:
    match = LINE.fullmatch(line)
    if match is None:
        document = {
            "line": number,
            "timestamp": None,
            "level": None,
            "message": line.decode("utf-8", "replace"),
        }
    else:
        timestamp, level, message = match.groups(b"")
        document = {
            "line": number,
            "timestamp": timestamp.decode(),
            "level": level.decode(),
            "message": message.decode("utf-8", "replace"),
        }
    return orjson.dumps(document)


async def json_body(path: Path) -> AsyncIterator[bytes]:
    number = 0
    first = True
    rest = b""
    with open(path, "rb") as file:  # noqa: ASYNC230 - inline reads, as streamer does
        while chunk := file.read(CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            objects = []
            for line in lines:
                number += 1
                objects.append(encode_line(number, line.removesuffix(b"\r")))
            if objects:
                yield (b"[\n" if first else b",\n") + b",\n".join(objects)
                first = False
        if rest:
            number += 1
            yield (b"[\n" if first else b",\n") + encode_line(number, rest.removesuffix(b"\r"))
            first = False
    yield b"[]" if first else b"\n]"


class RawFile:
    """The plain ASGI app behind ``/raw/<key>`` (a class, so that starlette routes to it as is)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = (self.root / scope["path_params"]["key"]).resolve()
        if not (path.is_relative_to(self.root) and path.is_file()):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(path.stat().st_size).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with open(path, "rb") as file:  # noqa: ASYNC230 - blocking reads on purpose
            while chunk := file.read(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def create_app(root: Path) -> Starlette:
    def resolve(request: Request) -> Path | None:
        key = request.path_params["key"]
        path = (root / key).resolve()
        return path if path.is_relative_to(root.resolve()) and path.is_file() else None

    async def file(request: Request) -> Response:
        path = resolve(request)
        if path is None:
            return Response(status_code=404)
        return BigChunkFileResponse(path, media_type="text/plain; charset=utf-8")

    async def json(request: Request) -> Response:
        path = resolve(request)
        if path is None:
            return Response(status_code=404)
        return StreamingResponse(json_body(path), media_type="application/json")

    return Starlette(
        routes=[
            Route("/file/{key:path}", file),
            Route("/json/{key:path}", json),
            Route("/raw/{key:path}", RawFile(root)),
        ],
    )


def bare_app(root: Path) -> ASGIApp:
    """The least an ASGI app can do to serve a small file under `root`, or a 304 for it."""
    base = str(root.resolve())
    missing = b"404"
    not_found_start = {"type": "http.response.start", "status": 404, "headers": []}
    not_found_body = {"type": "http.response.body", "body": missing}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = base + scope["path"]
        if ".." in path:  # no file outside the root, at the price of one scan
            await send(not_found_start)
            await send(not_found_body)
            return
        condition = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        try:
            if condition is not None:
                stat = os.stat(path)
                etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'.encode()
                if condition == etag:
                    headers = [(b"etag", etag)]
                    await send({"type": "http.response.start", "status": 304, "headers": headers})
                    await send({"type": "http.response.body", "body": b""})
                    return
            with open(path, "rb") as file:  # noqa: ASYNC230 - one small read on the loop
                stat = os.fstat(file.fileno())
                body = file.read()
        except OSError:
            await send(not_found_start)
            await send(not_found_body)
            return
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--bare", action="store_true", help="serve bare_app alone")
    args = parser.parse_args()
    uvicorn.run(
        bare_app(args.root) if args.bare else create_app(args.root),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="off" if args.bare else "auto",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
