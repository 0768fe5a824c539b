"""The Python baselines streamer is measured against, as one ASGI app under uvicorn.

    python -m bench.baselines --port P --root DIR

- ``/file/<key>``: starlette's FileResponse with 1 MiB chunks (its default is 64 KiB).
- ``/raw/<key>``: the least an ASGI app can do on uvicorn: 1 MiB blocking reads on the
  event loop, each sent as it is read, no disconnect watching, no checks. What uvicorn
  itself can carry, so the ceiling of any ASGI app here, streamer included.
- ``/json/<key>``: the obvious JSON encoder, a regex and ``orjson.dumps(dict)`` per line,
  streamed with StreamingResponse from 1 MiB inline reads; its output must equal
  streamer's byte for byte, which the harness checks by hash.

uvicorn picks httptools and uvloop here as it does for streamer, so the server stack is
the same and only the application differs.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

CHUNK = 1 << 20
RAW_ASGI = "raw ASGI, 1 MiB reads on the loop"
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
    """The raw ASGI app behind ``/raw/<key>`` (a class, so that starlette routes to it as is)."""

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.root),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
